"""Weak labels from a text teacher: score, threshold, dedup, balance, and write lists plus a report.

Two ledgers make every input accountable. Posts: non-blank records = posts read + malformed + no_text +
no_image. Images: references of posts with text = kept + missing_image + low_confidence + duplicate_exact
+ duplicate_near + unbalanced. Confidence is max(p_neg, p_pos); a post is kept when it reaches
``threshold``, and all its images take its label (argmax) and, for soft training, its probabilities.
``balance`` keeps, in the larger class, the most confident images up to the smaller class's count (ties
broken by input order), so the kept set is as clean as the teacher allows.

Outputs in OUT: ``labels.txt`` (``path label``, Caffe's list format), ``scores.tsv`` (path, label, p_neg,
p_pos, weight = confidence, post id, line), ``splits/weak_agrees/test1/{train,test}.txt`` (a stratified,
seeded hold-out of ``holdout`` of the images for Caffe's test phase), ``problems.txt`` (file:line: reason),
``report.json``, ``report.md`` and ``teacher_hist.png``.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pixsent.distill import dedup as dd
from pixsent.distill.posts import MALFORMED, MISSING_IMAGE, NO_IMAGE, NO_TEXT, PostSet, Problem
from pixsent.distill.teachers import get_teacher
from pixsent.distill.text import normalise
from pixsent.formats.atomic import atomic_write_text

LOW_CONFIDENCE, UNBALANCED = "low_confidence", "unbalanced"
IMAGE_REASONS = (MISSING_IMAGE, LOW_CONFIDENCE, dd.EXACT, dd.NEAR, UNBALANCED)
SUBSET = "weak"


@dataclass
class LabelConfig:
    """The labelling step's knobs; defaults are the CLI's."""

    teacher: str = "vader"
    threshold: float = 0.75  # minimum max(p_neg, p_pos); 0.75 is |VADER compound| >= 0.5
    balance: bool = False
    dedup: bool = False
    near_distance: int = dd.DEFAULT_MAX_DISTANCE
    soft: bool = False
    holdout: float = 0.1
    seed: int = 0
    progress: bool = True


@dataclass
class Labelled:
    """One kept image with its weak label and the teacher's probabilities."""

    path: str
    label: int
    p_neg: float
    p_pos: float
    post_id: str
    line: int

    @property
    def weight(self) -> float:
        return max(self.p_neg, self.p_pos)


@dataclass
class LabelResult:
    """Kept images, every problem, the teacher's score per post, and the two ledgers."""

    kept: list[Labelled] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    post_scores: list[float] = field(default_factory=list)  # p_pos of every scored post
    posts: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)


def label_posts(posts: PostSet, cfg: LabelConfig) -> LabelResult:
    """Score each post's normalised text, keep confident ones, dedup and balance their images."""
    from tqdm import tqdm

    teacher = get_teacher(cfg.teacher)
    res = LabelResult(problems=list(posts.problems))
    candidates: list[Labelled] = []
    for post in tqdm(posts.posts, desc="teacher", unit="post", disable=not cfg.progress, file=sys.stderr):
        p_neg, p_pos = teacher(normalise(post.text))
        res.post_scores.append(p_pos)
        confident = max(p_neg, p_pos) >= cfg.threshold and p_neg != p_pos
        for ref in post.images:
            if not confident:
                detail = f"teacher confidence {max(p_neg, p_pos):.3f} < {cfg.threshold} ({ref})"
                res.problems.append(Problem(posts.source, post.line, LOW_CONFIDENCE, detail))
                continue
            candidates.append(Labelled(ref, int(p_pos > p_neg), p_neg, p_pos, post.id, post.line))
    if cfg.dedup:
        candidates = _dedup(candidates, posts, cfg, res)
    if cfg.balance:
        candidates = _balance(candidates, posts, res)
    res.kept = candidates
    res.posts = {
        "input": posts.lines,
        "read": len(posts.posts),
        "dropped": {r: posts.count(r) for r in (MALFORMED, NO_TEXT, NO_IMAGE)},
    }
    res.images = {
        "input": posts.images_listed,
        "kept": len(res.kept),
        "dropped": {r: sum(1 for p in res.problems if p.reason == r) for r in IMAGE_REASONS},
        "positive": sum(k.label for k in res.kept),
        "negative": sum(1 - k.label for k in res.kept),
    }
    return res


def _dedup(cands: list[Labelled], posts: PostSet, cfg: LabelConfig, res: LabelResult) -> list[Labelled]:
    from tqdm import tqdm

    d = dd.Deduplicator(near=True, max_distance=cfg.near_distance)
    kept = []
    for c in tqdm(cands, desc="dedup", unit="img", disable=not cfg.progress, file=sys.stderr):
        hit = d.check(posts.root / c.path, c.path)
        if hit is None:
            kept.append(c)
        else:
            res.problems.append(Problem(posts.source, c.line, hit[0], f"{c.path} duplicates {hit[1]}"))
    return kept


def _balance(cands: list[Labelled], posts: PostSet, res: LabelResult) -> list[Labelled]:
    by_class = {0: [c for c in cands if c.label == 0], 1: [c for c in cands if c.label == 1]}
    n = min(len(v) for v in by_class.values())
    drop: set[int] = set()
    for members in by_class.values():
        order = sorted(range(len(members)), key=lambda i: (-members[i].weight, i))
        drop |= {id(members[i]) for i in order[n:]}
    for c in cands:
        if id(c) in drop:
            res.problems.append(
                Problem(posts.source, c.line, UNBALANCED, f"{c.path} (class {c.label} over {n})")
            )
    return [c for c in cands if id(c) not in drop]


# ---------------------------------------------------------------- outputs


def holdout_split(kept: list[Labelled], fraction: float, seed: int) -> tuple[list[Labelled], list[Labelled]]:
    """Stratified, seeded (train, test) split; at least one test image per class when the class has two."""
    rng = np.random.RandomState(seed)
    train, test = [], []
    for label in (0, 1):
        members = [k for k in kept if k.label == label]
        idx = rng.permutation(len(members))
        n_test = min(len(members) - 1, max(1, round(fraction * len(members)))) if len(members) > 1 else 0
        test_idx = set(idx[:n_test].tolist())
        for i, m in enumerate(members):
            (test if i in test_idx else train).append(m)
    order = {id(k): i for i, k in enumerate(kept)}
    return sorted(train, key=lambda k: order[id(k)]), sorted(test, key=lambda k: order[id(k)])


def write_outputs(res: LabelResult, posts: PostSet, cfg: LabelConfig, out: Path) -> dict:
    """Lists, split layout, scores, problems, report (JSON and Markdown) and histogram; returns the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "labels.txt", "".join(f"{k.path} {k.label}\n" for k in res.kept))
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(["path", "label", "p_neg", "p_pos", "weight", "post_id", "line"])
    for k in res.kept:
        w.writerow(
            [k.path, k.label, f"{k.p_neg:.6f}", f"{k.p_pos:.6f}", f"{k.weight:.6f}", k.post_id, k.line]
        )
    atomic_write_text(out / "scores.tsv", buf.getvalue())
    train, test = holdout_split(res.kept, cfg.holdout, cfg.seed)
    fold = out / "splits" / f"{SUBSET}_agrees" / "test1"
    fold.mkdir(parents=True, exist_ok=True)
    atomic_write_text(fold / "train.txt", "".join(f"{k.path} {k.label}\n" for k in train))
    atomic_write_text(fold / "test.txt", "".join(f"{k.path} {k.label}\n" for k in test))
    atomic_write_text(out / "problems.txt", "".join(f"{p}\n" for p in res.problems))
    report = {
        "posts_file": str(posts.source),
        "image_root": str(posts.root.resolve()),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "posts": res.posts,
        "images": res.images,
        "split": {"train": len(train), "test": len(test)},
        "teacher_p_pos": _histogram(res.post_scores),
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", render_report(report))
    plot_histogram(res.post_scores, cfg.threshold, out / "teacher_hist.png")
    return report


def _histogram(scores: list[float], bins: int = 20) -> dict:
    counts, edges = np.histogram(np.asarray(scores, dtype=float), bins=bins, range=(0.0, 1.0))
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}


def render_report(report: dict) -> str:
    """Markdown summary: both ledgers with their sums, class balance and split sizes."""
    p, im = report["posts"], report["images"]
    rows = ["# Weak labelling report", "", f"posts file: `{report['posts_file']}`", ""]
    rows += [
        "| posts | count |",
        "| --- | --- |",
        f"| input records | {p['input']} |",
        f"| read | {p['read']} |",
    ]
    rows += [f"| dropped: {r} | {n} |" for r, n in p["dropped"].items()]
    rows += ["", "| images | count |", "| --- | --- |", f"| input (of posts with text) | {im['input']} |"]
    rows += [f"| kept | {im['kept']} |"] + [f"| dropped: {r} | {n} |" for r, n in im["dropped"].items()]
    total = im["kept"] + sum(im["dropped"].values())
    rows += ["", f"images accounted for: {total} of {im['input']}"]
    rows += [f"class balance: {im['negative']} negative, {im['positive']} positive"]
    rows += [f"split: {report['split']['train']} train, {report['split']['test']} held out", ""]
    return "\n".join(rows)


def plot_histogram(scores: list[float], threshold: float, path: Path) -> None:
    """Histogram of the teacher's p_pos over all scored posts, with the two confidence thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.hist(scores, bins=20, range=(0, 1), color="#4a7", edgecolor="black")
    for x in (1 - threshold, threshold):
        ax.axvline(x, color="red", linestyle="--")
    ax.set_xlabel("teacher p(positive)")
    ax.set_ylabel("posts")
    ax.set_title(f"teacher scores ({len(scores)} posts); kept outside the dashed lines")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def run_labelling(posts_file: Path, out: Path, cfg: LabelConfig, image_root: Path | None = None) -> dict:
    """read -> label -> write; prints the problems count and returns the report."""
    from pixsent.distill.posts import read_posts

    posts = read_posts(posts_file, image_root)
    res = label_posts(posts, cfg)
    return write_outputs(res, posts, cfg, out)
