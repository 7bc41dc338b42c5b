"""Distillation demo on generated posts: clear-polarity texts, images from pixsent.recipes.demo's generator.

Each post's text is positive or negative (templates with strong lexicon words, plus mentions, links and
emoji as in tweets), or neutral (then the teacher should not be confident). Its image is drawn from the
class of the text's polarity, except for a ``noise`` share of posts whose image comes from the other class,
so the weak labels are as imperfect as real ones. A few exact and re-encoded, upscaled copies and three bad
lines (malformed JSON, no text, missing image) exercise dedup and reporting. The benchmark is a separate
generated two-class set in the paper's split layout (pixsent.recipes.demo), never seen by the student.
Its numbers say nothing about the paper: it shows that the pieces connect and learn.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pixsent.distill.labelling import LabelConfig, run_labelling
from pixsent.recipes import demo as paper_demo

BANNER = "DEMONSTRATION of cross-modal distillation on generated posts and images (no tweets, no weights)"

POSITIVE = [
    "love",
    "amazing",
    "wonderful",
    "happy",
    "great",
    "beautiful",
    "awesome",
    "fantastic",
    "excellent",
]
NEGATIVE = ["hate", "terrible", "awful", "horrible", "sad", "worst", "disgusting", "miserable", "ugly"]
SUBJECTS = [
    "this view",
    "the morning",
    "our trip",
    "the park",
    "this street",
    "the game",
    "dinner",
    "my city",
]
EMOJI = {1: ["😍", ":)", "❤️", "🎉"], 0: ["😡", ":(", "💔", "😢"]}
NEUTRAL = ["Photo of {s} taken at {h} pm", "{s}, {h} o'clock", "Posted a picture of {s}", "{s} #photo"]


@dataclass
class DistillDemoConfig:
    """Sizes of the demo; the defaults run end to end in a few minutes on 2 CPU cores."""

    out: Path = Path("runs/distill-demo")
    n_posts: int = 300
    neutral: float = 0.1
    noise: float = 0.08
    bench_images: int = 100
    folds: int = 5
    run_folds: int = 5
    finetune: bool = True
    soft: bool = False
    net: paper_demo.DemoConfig = field(
        default_factory=lambda: paper_demo.DemoConfig(epochs=12, n_images=100, progress=False)
    )
    seed: int = 2023
    progress: bool = True


def make_text(rng: np.random.RandomState, polarity: int | None) -> str:
    """A tweet-like text: positive (1), negative (0) or neutral (None)."""
    subject = SUBJECTS[rng.randint(len(SUBJECTS))]
    if polarity is None:
        return NEUTRAL[rng.randint(len(NEUTRAL))].format(s=subject.capitalize(), h=rng.randint(1, 12))
    words = POSITIVE if polarity == 1 else NEGATIVE
    a, b = rng.choice(len(words), 2, replace=False)
    text = f"{subject.capitalize()} is so {words[a]}, really {words[b]} {EMOJI[polarity][rng.randint(4)]}"
    if rng.rand() < 0.5:
        text = f"@friend{rng.randint(100)} {text}"
    if rng.rand() < 0.5:
        text += f" https://t.co/x{rng.randint(10**6)}"
    return text


def generate_posts(root: Path, cfg: DistillDemoConfig) -> tuple[Path, dict]:
    """images/ and posts.jsonl under ROOT; returns the posts file and the ground truth per post id."""
    import cv2

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(cfg.seed)
    lines, truth = [], {}
    for i in range(cfg.n_posts):
        polarity = None if rng.rand() < cfg.neutral else int(i % 2)
        image_class = int(rng.randint(2)) if polarity is None else polarity
        if polarity is not None and rng.rand() < cfg.noise:
            image_class = 1 - polarity
        name = f"post{i:04d}.jpg"
        cv2.imwrite(
            str(images / name), paper_demo.draw_image(rng, image_class), [cv2.IMWRITE_JPEG_QUALITY, 90]
        )
        pid = f"p{i:04d}"
        lines.append(json.dumps({"id": pid, "text": make_text(rng, polarity), "images": [f"images/{name}"]}))
        truth[pid] = {"polarity": polarity, "image_class": image_class}
    for j, src in enumerate(("post0000.jpg", "post0001.jpg")):  # exact copies
        shutil.copyfile(images / src, images / f"copy{j}.jpg")
        lines.append(
            json.dumps({"id": f"copy{j}", "text": make_text(rng, j % 2), "images": [f"images/copy{j}.jpg"]})
        )
    for j, src in enumerate(("post0002.jpg", "post0003.jpg")):  # re-encoded, 2x upscaled copies
        img = cv2.imread(str(images / src))
        big = cv2.resize(img, (img.shape[1] * 2, img.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(images / f"resized{j}.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 85])
        text = make_text(rng, j % 2)
        lines.append(json.dumps({"id": f"resized{j}", "text": text, "images": [f"images/resized{j}.jpg"]}))
    lines += [
        '{"id": "broken", "text": "unterminated',
        json.dumps({"id": "silent", "images": ["images/post0004.jpg"]}),
    ]
    lines.append(json.dumps({"id": "lost", "text": "I love it", "images": ["images/does_not_exist.jpg"]}))
    posts = root / "posts.jsonl"
    posts.write_text("\n".join(lines) + "\n")
    (root / "truth.json").write_text(json.dumps(truth, indent=1))
    return posts, truth


def teacher_agreement(label_dir: Path, truth: dict) -> dict:
    """Share of kept images whose weak label equals the text's known polarity (and the image's class)."""
    import csv

    with open(label_dir / "scores.tsv", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["post_id"] in truth]
    polar = [r for r in rows if truth[r["post_id"]]["polarity"] is not None]
    text_ok = sum(int(r["label"]) == truth[r["post_id"]]["polarity"] for r in polar)
    image_ok = sum(int(r["label"]) == truth[r["post_id"]]["image_class"] for r in rows)
    n_polar = sum(1 for t in truth.values() if t["polarity"] is not None)
    return {
        "kept": len(rows),
        "agreement_with_text": text_ok / len(polar) if polar else float("nan"),
        "agreement_with_image": image_ok / len(rows) if rows else float("nan"),
        "coverage_of_polar_posts": len(polar) / n_polar if n_polar else float("nan"),
        "neutral_kept": len(rows) - len(polar),
    }


def run_demo(cfg: DistillDemoConfig) -> dict:
    """posts -> labels -> student -> benchmark (5 folds, with and without fine-tuning) -> table.md."""
    from pixsent.distill.evaluation import (
        BenchmarkConfig,
        evaluate_student,
        render_table,
        student_from_fold,
    )
    from pixsent.distill.student import StudentConfig, fold_config, train_student, with_extra
    from pixsent.workflow.runs import write_json

    print(f"pixsent distill demo: {BANNER}", file=sys.stderr)
    out = Path(cfg.out).resolve()
    posts, truth = generate_posts(out / "posts", cfg)
    labels = out / "labels"
    report = run_labelling(
        posts,
        labels,
        LabelConfig(balance=True, dedup=True, soft=cfg.soft, seed=cfg.seed, progress=cfg.progress),
    )
    agreement = teacher_agreement(labels, truth)
    net = replace(cfg.net, out=out, seed=cfg.seed, progress=cfg.progress)
    scfg = StudentConfig(
        labels=labels,
        images=out / "posts",
        runs=out / "runs",
        lmdb_root=out / "lmdb",
        base="demo",
        variant=net.variant,
        init="scratch",
        soft=cfg.soft,
        progress=cfg.progress,
        echo=False,
    )
    fcfg = with_extra(fold_config(scfg), demo=net)
    student = train_student(scfg, fcfg)
    bench = paper_demo.generate_dataset(
        replace(net, out=out / "bench", n_images=cfg.bench_images, folds=cfg.folds, seed=cfg.seed + 1)
    )
    bcfg = BenchmarkConfig(
        images=bench / "images",
        splits=bench / "splits",
        subsets=("demo",),
        folds=cfg.run_folds,
        runs=out / "runs",
        lmdb_root=out / "lmdb",
        finetune=cfg.finetune,
        progress=cfg.progress,
    )
    results = evaluate_student(student_from_fold(fcfg), bcfg)
    table = f"**{BANNER}**\n\n" + render_table(results)
    table += (
        f"\nteacher (vader): {agreement['kept']} images kept, agreement with the texts' known polarity "
        f"{agreement['agreement_with_text']:.3f}, with the images' classes "
        f"{agreement['agreement_with_image']:.3f}; "
        f"student on its weak hold-out: {student['accuracy_center']:.3f}\n"
    )
    (out / "table.md").write_text(table)
    summary = {"report": report, "agreement": agreement, "student": student, "benchmark": results}
    write_json(out / "summary.json", summary)
    print(table)
    return summary
