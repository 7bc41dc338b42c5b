"""The paper's commands: `pixsent fold|cv|paper|table|plot|predict|demo` (heavy imports inside handlers)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _fold_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="fc8_twitter", help="fc8_twitter | fc7-2 | fc6-2 | fc9_twitter")
    p.add_argument("--subset", default="five", help="five | four | three")
    p.add_argument(
        "--init", default="caffenet", help="registry name of the initial model (pixsent models list)"
    )
    p.add_argument("--weights", type=Path, help="initialise from this caffemodel instead of the registry's")
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--data", type=Path, help="image folder (or a generated demo set: runs the demo recipe)")
    p.add_argument("--splits", type=Path, help="folder with <subset>_agrees/test<k>/{train,test}.txt")
    p.add_argument("--lmdb", type=Path, default=Path("data/lmdb"))
    p.add_argument("--mirror", type=Path, help="folder holding downloads (splits, images, weights)")
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--gpu", help="0 | all | 0,1 | cpu:2 (data parallel on CPU)")
    p.add_argument("--engine", default="pixsent", choices=["pixsent", "caffe"])
    p.add_argument("--quiet", action="store_true", help="do not echo the training log")
    p.add_argument(
        "--batch",
        type=_positive,
        metavar="N",
        help="TRAIN images per forward/backward pass (make BATCH=); default 256 as the paper (demo: 32)",
    )
    p.add_argument(
        "--iter-size",
        type=_positive,
        default=1,
        metavar="K",
        help="passes accumulated per update, Caffe's iter_size (make ITER_SIZE=); epochs, stepsize and "
        "max_iter count batch x K images, so --batch 64 --iter-size 4 trains with the solver of 256 in less "
        "memory; default 1",
    )
    p.add_argument(
        "--snapshot",
        type=_positive,
        metavar="N",
        help="snapshot every N iterations (make SNAPSHOT=), so an interrupted long run loses less; "
        "default one snapshot half way (the paper recipe)",
    )
    p.add_argument(
        "--max-iter",
        type=_positive,
        metavar="N",
        help="cap training at N iterations for a smoke run (make MAX_ITER=); recorded as capped in the "
        "solver, stamps and metrics.json; a later call without it resumes and trains to the full max_iter",
    )


def _positive(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _recipe_for(data: Path | None):
    """The recipe that claims the --data folder: a recipe module of pixsent.recipes other than the default
    ``paper`` whose ``claims_data`` says yes (the demo recognises its generated sets), else ``paper``."""
    import pkgutil

    from pixsent import recipes
    from pixsent.workflow.pipeline import get_recipe

    names = sorted(m.name for m in pkgutil.iter_modules(recipes.__path__) if m.name != "paper")
    for name in names:
        recipe = get_recipe(name)
        if getattr(recipe, "claims_data", None) and recipe.claims_data(data):
            return recipe
    return get_recipe("paper")


def _fold_config(args: argparse.Namespace, fold: int = 1):
    gpu = None if args.gpu in (None, "", "cpu", "-1") else args.gpu
    return _recipe_for(args.data).config_from_args(args, fold, gpu)


def _cmd_fold(args: argparse.Namespace) -> int:
    from pixsent.workflow.pipeline import run_fold

    run_fold(_fold_config(args, args.fold))
    return 0


def _cmd_cv(args: argparse.Namespace) -> int:
    from pixsent.workflow.pipeline import run_cv

    run_cv(_fold_config(args), range(1, args.folds + 1))
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from pixsent.workflow.selection import Candidate, select

    candidates = [Candidate(name.strip()) for name in args.candidates.split(",") if name.strip()]
    folds = [int(k) for k in args.folds.split(",")]
    root = args.out or args.runs / "selection" / f"{args.subset}-{args.init}"
    result = select(_fold_config(args), candidates, folds, root, val_fraction=args.val_fraction)
    print(result["chosen"])
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pixsent.recipes.paper import results
    from pixsent.workflow.report import Reference, ReportConfig, collect

    refs = []
    for row in results.PUBLISHED:
        if (
            row.subset == args.subset
            and row.center
            and (row.table, row.init) in (("2", "caffenet"), ("5", "mvso-en"))
        ):
            refs.append(
                Reference(f"paper: {row.label} ({row.init}, Table {row.table})", row.center, row.oversample)
            )
    if args.subset in results.MAJORITY:
        n, total = results.MAJORITY[args.subset]
        refs.append(Reference(f"majority class ({n}/{total})", (n / total, None), (n / total, None)))
    cfg = ReportConfig(
        title=args.title,
        label=args.label,
        images_per_iteration=args.images_per_iteration,
        references=refs,
        commands=args.command or [],
        time_dir=args.time_dir,
        note=args.note or "",
        commit=args.commit,
    )
    summary = collect(args.cv_dir, args.out, cfg)
    print((args.out / "table.md").read_text(), end="")
    return 0 if summary["folds"] else 1


def _cmd_paper(args: argparse.Namespace) -> int:
    from pixsent.recipes.paper import tables
    from pixsent.recipes.paper.recipe import run_paper

    run_paper(_fold_config(args), range(1, args.folds + 1))
    print(tables.render(["2", "4", "5", "6"], args.runs, "md"))
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from pixsent.recipes.paper import tables

    chosen = args.tables.split(",") if args.tables else ["2", "3", "4", "5", "6"]
    text = tables.render(chosen, args.runs, args.format, args.probes)
    if args.out:
        args.out.write_text(text)
    print(text, end="")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from pixsent.workflow.plots import plot_logs

    labels = args.labels[0].split(",") if args.labels and len(args.labels) == 1 else args.labels
    out = plot_logs(args.logs, args.out, labels, args.title or "")
    print(out)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from pixsent.workflow.predict import PredictConfig, format_results, predict

    device = f"cuda:{args.gpu}" if args.gpu not in (None, "", "cpu") else "cpu"
    cfg = PredictConfig(args.weights, args.model, args.mean, args.oversample, args.image_size, device)
    print(format_results(predict(args.images, cfg), args.json))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pixsent.recipes.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        out=args.out,
        n_images=args.images,
        run_folds=args.folds,
        epochs=args.epochs,
        variant=args.variant,
        echo=args.verbose,
    )
    run_demo(cfg)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fold", help="train and evaluate one fold (cached, resumable)")
    p.add_argument("fold", type=int, choices=range(1, 6))
    _fold_args(p)
    p.set_defaults(func=_cmd_fold)

    p = sub.add_parser("cv", help="all five folds of one configuration, then mean ± std")
    p.add_argument("--folds", type=int, default=5)
    _fold_args(p)
    p.set_defaults(func=_cmd_cv)

    p = sub.add_parser(
        "select",
        help="choose among variants on inner validation splits of the training folds (test folds unread)",
    )
    p.add_argument(
        "--candidates", required=True, help="comma list of variants, e.g. fc8_twitter,fc8_twitter-norelu"
    )
    p.add_argument("--folds", default="1", help="outer folds whose training lists are split (default 1)")
    p.add_argument(
        "--val-fraction", type=float, default=0.2, help="share of each label held out (default 0.2)"
    )
    p.add_argument("--out", type=Path, help="selection folder (default RUNS/selection/<subset>-<init>)")
    _fold_args(p)
    p.set_defaults(func=_cmd_select)

    p = sub.add_parser("report", help="a results folder from a cross-validation's run folders")
    p.add_argument("cv_dir", type=Path, help="RUNS/<subset>/<variant>-<init> (holds fold<N>/)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--title", required=True)
    p.add_argument("--label", required=True, help="what our row is called")
    p.add_argument("--subset", default="five")
    p.add_argument("--images-per-iteration", type=int, default=256, help="batch x iter_size (default 256)")
    p.add_argument("--time-dir", type=Path, help="folder of GNU time -v outputs fold<N>.time")
    p.add_argument("--command", action="append", help="a command that produced the runs (repeatable)")
    p.add_argument("--commit", help="the commit that trained the folds (default: HEAD)")
    p.add_argument("--note")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("paper", help="every configuration of Tables 2, 4, 5 and 6, then the tables")
    p.add_argument("--folds", type=int, default=5)
    _fold_args(p)
    p.set_defaults(func=_cmd_paper)

    p = sub.add_parser("table", help="the paper's tables with our numbers from run folders")
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--format", choices=["md", "csv"], default="md")
    p.add_argument("--tables", help="comma list of 2,3,4,5,6 (default all)")
    p.add_argument(
        "--probes",
        type=Path,
        nargs="+",
        help="Table 3: `pixsent layers --json` files or folders of them (default results/table3, and "
        "table3.json in run folders)",
    )
    p.add_argument("--out", type=Path)
    p.set_defaults(func=_cmd_table)

    p = sub.add_parser("plot", help="Figure 6: loss and test accuracy from Caffe-format training logs")
    p.add_argument("logs", nargs="+", type=Path, metavar="LOG")
    p.add_argument("--labels", nargs="+")
    p.add_argument("--out", type=Path, default=Path("fig6.png"))
    p.add_argument("--title")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("predict", help="P(positive)/P(negative) of images with a trained model")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--model", type=Path, help="deploy prototxt (known for the released weights)")
    p.add_argument("--mean", help=".npy, .binaryproto or B,G,R (known for the released weights)")
    p.add_argument("--oversample", action="store_true", help="average 10 crops")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--gpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "demo", help="the pipeline on a generated two-class set with a small net (no downloads)"
    )
    p.add_argument("--out", type=Path, default=Path("demo"), help="holds data/, runs/, table.md, curves.png")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--variant", default="fc8_twitter")
    p.add_argument("--verbose", action="store_true", help="echo the training logs")
    p.set_defaults(func=_cmd_demo)
