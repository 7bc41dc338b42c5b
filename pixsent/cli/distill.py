"""`pixsent distill label|train|eval|demo`: weak labels from tweet text, an image student, its benchmark."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _student_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", type=Path, required=True, help="output folder of `pixsent distill label`")
    p.add_argument("--images", type=Path, help="image root of the posts (default: from labels/report.json)")
    p.add_argument("--variant", default="fc8_twitter", help="fc8_twitter | fc7-2 | fc6-2 | fc9_twitter")
    p.add_argument("--init", default="caffenet", help="registry name of the initial model")
    p.add_argument("--weights", type=Path, help="initialise from this caffemodel instead")
    p.add_argument("--soft", action="store_true", help="train on the teacher's probabilities")
    p.add_argument("--runs", type=Path, default=Path("runs/distill"))
    p.add_argument("--lmdb", type=Path, default=Path("data/lmdb/distill"))
    p.add_argument("--gpu")
    p.add_argument("--engine", default="pixsent", choices=["pixsent", "caffe"])
    p.add_argument("--quiet", action="store_true")


def register(subparsers) -> None:
    parser = subparsers.add_parser("distill", help="cross-modal distillation: text teacher -> image student")
    sub = parser.add_subparsers(dest="distill_command", metavar="ACTION", required=True)

    p = sub.add_parser("label", help="score posts with a text teacher and write weak-label lists + report")
    p.add_argument("posts", type=Path, help="JSON Lines or CSV posts (id, text, image(s))")
    p.add_argument("--teacher", default="vader", help="vader | module:function | hf:MODEL")
    p.add_argument("--threshold", type=float, default=0.75, help="minimum max(p_neg, p_pos) (default 0.75)")
    p.add_argument("--balance", action="store_true", help="equal positive and negative counts")
    p.add_argument("--dedup", action="store_true", help="drop exact and near-duplicate images")
    p.add_argument("--near-distance", type=int, default=8, help="phash Hamming distance of near copies")
    p.add_argument("--soft", action="store_true", help="record soft labels for `distill train --soft`")
    p.add_argument("--holdout", type=float, default=0.1, help="share held out as the student's test set")
    p.add_argument("--images", type=Path, help="image root (default: the posts file's folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_cmd_label)

    p = sub.add_parser("train", help="train the image student on the weak labels (same pipeline)")
    _student_args(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a student on five/four/three-agree, 5 folds, +/- fine-tuning")
    _student_args(p)
    p.add_argument("--data", type=Path, help="Twitter benchmark image folder")
    p.add_argument("--splits", type=Path, help="folder with <subset>_agrees/test<k>/")
    p.add_argument("--mirror", type=Path)
    p.add_argument("--subsets", default="five,four,three")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--no-finetune", action="store_true")
    p.add_argument("--bench-lmdb", type=Path, default=Path("data/lmdb"))
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("demo", help="the whole chain on generated posts and images (a few CPU minutes)")
    p.add_argument("--out", type=Path, default=Path("runs/distill-demo"))
    p.add_argument("--posts", type=int, default=300)
    p.add_argument("--folds", type=int, default=5, help="benchmark folds to run")
    p.add_argument("--no-finetune", action="store_true")
    p.add_argument("--soft", action="store_true")
    p.set_defaults(func=_cmd_demo)


def _cmd_label(args: argparse.Namespace) -> int:
    from pixsent.distill.labelling import LabelConfig, run_labelling

    cfg = LabelConfig(
        teacher=args.teacher,
        threshold=args.threshold,
        balance=args.balance,
        dedup=args.dedup,
        near_distance=args.near_distance,
        soft=args.soft,
        holdout=args.holdout,
        seed=args.seed,
    )
    report = run_labelling(args.posts, args.out, cfg, args.images)
    print((args.out / "report.md").read_text())
    problems = sum(report["posts"]["dropped"].values()) + sum(report["images"]["dropped"].values())
    print(f"pixsent distill: {problems} skipped (see {args.out / 'problems.txt'})", file=sys.stderr)
    return 0


def _student_config(args: argparse.Namespace):
    from pixsent.distill.student import StudentConfig

    images = args.images
    if images is None:
        report = args.labels / "report.json"
        if not report.is_file():
            from pixsent.errors import DataError

            raise DataError(f"{report}: not found; run `pixsent distill label` first or pass --images")
        images = Path(json.loads(report.read_text())["image_root"])
    return StudentConfig(
        labels=args.labels,
        images=images,
        runs=args.runs,
        lmdb_root=args.lmdb,
        variant=args.variant,
        init=args.init,
        weights=args.weights,
        soft=args.soft,
        gpu=args.gpu,
        engine=args.engine,
        echo=not args.quiet,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from pixsent.distill.student import train_student

    m = train_student(_student_config(args))
    print(f"student {m['weights']}: weak hold-out accuracy {m['accuracy_center']:.4f} (centre)")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from pixsent.distill.evaluation import (
        BenchmarkConfig,
        evaluate_student,
        render_table,
        student_from_fold,
    )
    from pixsent.distill.student import fold_config

    scfg = _student_config(args)
    st = student_from_fold(fold_config(scfg))
    if not st.weights.is_file():
        from pixsent.errors import DataError

        raise DataError(f"{st.weights}: student not trained; run `pixsent distill train` first")
    bcfg = BenchmarkConfig(
        images=args.data,
        splits=args.splits,
        mirror=args.mirror,
        subsets=tuple(s for s in args.subsets.split(",") if s),
        folds=args.folds,
        runs=args.runs,
        lmdb_root=args.bench_lmdb,
        finetune=not args.no_finetune,
        gpu=args.gpu,
        engine=args.engine,
        echo=not args.quiet,
    )
    print(render_table(evaluate_student(st, bcfg)))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pixsent.distill.demo import DistillDemoConfig, run_demo

    run_demo(
        DistillDemoConfig(
            out=args.out,
            n_posts=args.posts,
            run_folds=args.folds,
            finetune=not args.no_finetune,
            soft=args.soft,
        )
    )
    return 0
