"""`pixsent prototxt`: (re)generate the paper's prototxts under prototxt/, or check that they are current."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prototxt", help="write the paper's train_val/deploy/solver prototxts")
    p.add_argument("--subset", choices=["five", "four", "three", "all"], default="five")
    p.add_argument("--out", type=Path, default=Path("prototxt"), help="output folder (default prototxt)")
    p.add_argument(
        "--splits", type=Path, default=None, help="split folder with <subset>_agrees/test<k>/*.txt"
    )
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 listing stale files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixsent.recipes.paper import prototxt_gen

    subsets = prototxt_gen.SUBSETS if args.subset == "all" else (args.subset,)
    skipped: list[str] = []
    configs = prototxt_gen.default_configs(skipped)
    files = prototxt_gen.expected_files(
        subsets, layout=prototxt_gen.Layout(out=args.out), splits=args.splits, configs=configs
    )
    for name in skipped:
        print(
            f"skipped {name}: its deploy prototxt is not at hand (`pixsent models fetch {name}`)",
            file=sys.stderr,
        )
    root = Path.cwd()
    if args.check:
        bad = prototxt_gen.stale(files, root)
        for path in bad:
            print(f"stale: {path}", file=sys.stderr)
        if bad:
            print(
                f"{len(bad)} of {len(files)} prototxt files are stale: run `make prototxt`", file=sys.stderr
            )
            return 1
        print(f"{len(files)} prototxt files are up to date")
        return 0
    written = prototxt_gen.generate(files, root)
    print(f"wrote {len(written)} files under {args.out}")
    return 0
