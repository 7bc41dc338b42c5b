"""`pixsent splits ...`, `pixsent data ...`, and Caffe's tools `convert_imageset` / `compute_image_mean`."""

from __future__ import annotations

import argparse
import sys

CAFFE_BOOL_FLAGS = ("gray", "shuffle", "encoded", "check_size", "strict", "overwrite")


def caffe_style_argv(argv: list[str], bool_flags: tuple[str, ...] = CAFFE_BOOL_FLAGS) -> list[str]:
    """gflags spellings -> argparse: `-flag=v` -> `--flag=v`; `--b=true|false`, `--nob` for booleans."""
    out = []
    for token in argv:
        if token.startswith("-") and not token.startswith("--") and len(token) > 2 and token[1].isalpha():
            token = "-" + token
        if token.startswith("--"):
            name, eq, value = token[2:].partition("=")
            if name in bool_flags and eq:
                if value.lower() in ("true", "1", "yes", "t", "y"):
                    token = f"--{name}"
                elif value.lower() in ("false", "0", "no", "f", "n"):
                    continue
            elif name.startswith("no") and name[2:] in bool_flags and not eq:
                continue
        out.append(token)
    return out


def _convert_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pixsent convert_imageset",
        description="Convert a set of images to an LMDB of Caffe Datums, as Caffe's convert_imageset "
        "(also accepts -flag=value spellings).",
    )
    p.add_argument("root", metavar="ROOTFOLDER/")
    p.add_argument("listfile", metavar="LISTFILE")
    p.add_argument("db", metavar="DB_NAME")
    p.add_argument("--resize_height", type=int, default=0)
    p.add_argument("--resize_width", type=int, default=0)
    p.add_argument("--shuffle", action="store_true", help="shuffle the list (seeded; see --seed)")
    p.add_argument("--seed", type=int, default=None, help="shuffle seed (default 0)")
    p.add_argument("--gray", action="store_true")
    p.add_argument("--encoded", action="store_true")
    p.add_argument("--encode_type", default="", help="png, jpg, ... (default: each file's extension)")
    p.add_argument("--backend", default="lmdb", choices=["lmdb"])
    p.add_argument("--check_size", action="store_true")
    p.add_argument("--strict", action="store_true", help="abort on the first unreadable image")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DB_NAME")
    p.add_argument("--workers", type=int, default=None, help="decode threads (default: min(2, cores))")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _mean_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pixsent compute_image_mean",
        description="Mean image of an LMDB of Datums, as Caffe's compute_image_mean.",
    )
    p.add_argument("db", metavar="INPUT_DB")
    p.add_argument("out", metavar="OUTPUT_FILE", nargs="?", help="mean .binaryproto")
    p.add_argument("--npy", help="also write the mean as float32 .npy")
    p.add_argument("--backend", default="lmdb", choices=["lmdb"])
    p.add_argument("--quiet", action="store_true")
    return p


def run_convert_imageset(args: argparse.Namespace) -> int:
    from pixsent.data.imageset import convert_imageset

    opts = _convert_parser().parse_args(caffe_style_argv(args.argv))
    report = convert_imageset(
        opts.root,
        opts.listfile,
        opts.db,
        resize=(opts.resize_height, opts.resize_width),
        shuffle=opts.shuffle,
        gray=opts.gray,
        encoded=opts.encoded,
        encode_type=opts.encode_type,
        check_size=opts.check_size,
        strict=opts.strict,
        workers=opts.workers,
        seed=opts.seed,
        overwrite=opts.overwrite,
        progress=not opts.quiet,
    )
    print(
        f"Processed {report.written} files into {report.db_path} "
        f"({report.images_per_second:.0f} img/s, {len(report.skipped)} skipped)",
        file=sys.stderr,
    )
    return 0


def run_compute_image_mean(args: argparse.Namespace) -> int:
    from pixsent.data.image_mean import channel_means, compute_image_mean, save_mean

    opts = _mean_parser().parse_args(caffe_style_argv(args.argv, ()))
    mean = compute_image_mean(opts.db, progress=not opts.quiet)
    save_mean(mean, opts.out, opts.npy)
    for c, value in enumerate(channel_means(mean)):
        print(f"mean_value channel [{c}]: {value:.6g}", file=sys.stderr)
    return 0


def run_splits_fetch(args: argparse.Namespace) -> int:
    from pixsent.recipes.paper.dataset import SUBSETS, fetch_splits

    subsets = SUBSETS if args.subset == "all" else (args.subset,)
    paths = fetch_splits(subsets, args.dest, mirror=args.mirror)
    print(f"{len(paths)} split files verified under {args.dest}")
    return 0


def run_splits_make(args: argparse.Namespace) -> int:
    from pixsent.data.splits import make_splits

    folds = make_splits(args.labels, args.out, folds=args.folds, seed=args.seed, overwrite=args.overwrite)
    print(f"{len(folds)} stratified folds written to {args.out}")
    return 0


def run_splits_check(args: argparse.Namespace) -> int:
    from pixsent.data.splits import check_splits, summarize

    problems = check_splits(args.dir)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {args.dir}", file=sys.stderr)
        return 1
    for name, counts in summarize(args.dir).items():
        details = ", ".join(f"{k} {v}" for k, v in counts.items())
        print(f"{name}: OK ({details})")
    return 0


def run_data_fetch(args: argparse.Namespace) -> int:
    """The Twitter images and ground truth, each file verified; exit status 1 when any is missing or wrong."""
    from pathlib import Path

    from pixsent.recipes.paper.dataset import missing_images
    from pixsent.recipes.paper.twitter import GITHUB_BASE, TWITTER_ARCHIVE_URLS, fetch_twitter

    report = fetch_twitter(
        args.dest,
        source=args.source,
        mirror=args.mirror,
        offline=args.offline,
        archive_urls=tuple(args.url) if args.url else TWITTER_ARCHIVE_URLS,
        github_base=args.github or GITHUB_BASE,
        jobs=args.jobs,
        progress=not args.quiet,
    )
    for line in report.sources:
        print(f"source failed: {line}", file=sys.stderr)
    for line in report.problem_lines():
        print(line)
    split_missing = []
    if Path(args.splits).is_dir():
        split_missing = missing_images(Path(args.dest) / "images", args.splits)
        for line in split_missing:
            print(f"split image missing: {line}")
    print(report.summary(), file=sys.stderr)
    return 0 if report.ok and not split_missing else 1


def run_data_manifest(args: argparse.Namespace) -> int:
    from pixsent.recipes.paper.twitter import write_manifest

    n = write_manifest(args.folder, args.out)
    print(f"{n} files listed in {args.out}")
    return 0


def run_data_lmdb(args: argparse.Namespace) -> int:
    from pixsent.recipes.paper.dataset import FOLDS, ensure_fold_lmdbs

    folds = FOLDS if args.fold == "all" else (int(args.fold),)
    for fold in folds:
        data = ensure_fold_lmdbs(
            args.subset,
            fold,
            images=args.images,
            splits=args.splits,
            out=args.out,
            size=args.size,
            workers=args.workers,
            strict=args.strict,
        )
        state = "built" if data.built else "up to date, nothing to do"
        print(f"{args.subset}_agrees fold {fold}: {data.train_lmdb.parent} {state}")
    return 0


def run_data_mean(args: argparse.Namespace) -> int:
    from pixsent.recipes.paper.dataset import fetch_ilsvrc_mean

    print(f"wrote {fetch_ilsvrc_mean(args.dest, mirror=args.mirror)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, func, help_text in (
        ("convert_imageset", run_convert_imageset, "Caffe's convert_imageset: images + list -> LMDB"),
        ("compute_image_mean", run_compute_image_mean, "Caffe's compute_image_mean: LMDB -> mean"),
    ):
        # '+' prefix: every '-flag' token reaches our own gflags-tolerant parser untouched
        p = subparsers.add_parser(name, help=help_text, add_help=False, prefix_chars="+")
        p.add_argument("argv", nargs="*")
        p.set_defaults(func=func)

    splits = subparsers.add_parser("splits", help="fetch, make or check k-fold split files")
    ssub = splits.add_subparsers(dest="splits_command", metavar="ACTION", required=True)
    p = ssub.add_parser("fetch", help="the paper's split files (sha256-verified)")
    p.add_argument("--subset", choices=["five", "four", "three", "all"], default="all")
    p.add_argument("--mirror", help="folder with the same layout (or with splits/ inside)")
    p.add_argument("--dest", default="splits")
    p.set_defaults(func=run_splits_fetch)
    p = ssub.add_parser("make", help="stratified k-fold splits of LABELS.txt (`id label` lines)")
    p.add_argument("labels", metavar="LABELS.txt")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_splits_make)
    p = ssub.add_parser("check", help="validate a split folder; problems as FILE:LINE: message")
    p.add_argument("dir", nargs="?", default="splits")
    p.set_defaults(func=run_splits_check)

    data = subparsers.add_parser("data", help="the Twitter dataset: images, per-fold LMDBs, ILSVRC mean")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = dsub.add_parser(
        "fetch",
        help="the 1269 Twitter images and the ground-truth lists, each file sha256-checked against the "
        "committed manifest (resumable; names every file missing or wrong)",
    )
    p.add_argument("--dest", default="data/twitter", help="gets images/ and ground_truth/")
    p.add_argument(
        "--source",
        choices=["auto", "original", "github"],
        default="auto",
        help="original: the dataset page's zip archive; github: the public GitHub copy file by file; "
        "auto: the archive, then GitHub for whatever it lacked",
    )
    p.add_argument(
        "--mirror",
        help="local copy tried first: a folder holding images/ (and ground_truth/), or the files directly, "
        "or twitter/images/, or twitter.zip",
    )
    p.add_argument("--offline", action="store_true", help="never use the network (DEST and --mirror only)")
    p.add_argument("--url", action="append", help="archive URL to try (repeatable; overrides defaults)")
    p.add_argument("--github", metavar="BASE", help="base URL of the GitHub copy (images/, ground_truth/)")
    p.add_argument("--jobs", type=int, default=8, help="GitHub downloads at a time")
    p.add_argument("--splits", default="splits", help="also list split-file images missing (FILE:LINE: id)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_data_fetch)
    p = dsub.add_parser(
        "manifest", help="write `sha256  name` for every file of FOLDER (how twitter_images.sha256 was made)"
    )
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--out", required=True, help="the manifest file to write")
    p.set_defaults(func=run_data_manifest)
    p = dsub.add_parser("lmdb", help="train/test LMDBs and mean of one fold (cached)")
    p.add_argument("--subset", choices=["five", "four", "three"], default="five")
    p.add_argument("--fold", default="all", help="1..5 or all")
    p.add_argument("--images", default="data/twitter/images")
    p.add_argument("--splits", default="splits")
    p.add_argument("--out", default="data/lmdb")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--strict", action="store_true")
    p.set_defaults(func=run_data_lmdb)
    p = dsub.add_parser("mean", help="ilsvrc_2012_mean.npy -> data/ilsvrc_2012_mean.binaryproto")
    p.add_argument("--dest", default="data")
    p.add_argument("--mirror", help="folder holding ilsvrc_2012_mean.npy")
    p.set_defaults(func=run_data_mean)


__all__ = ["register", "caffe_style_argv"]
