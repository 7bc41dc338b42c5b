"""`pixsent models list|fetch|deploy`: the pre-trained model registry (models/registry.json)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list, fetch or describe pre-trained models")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="show the registry")
    ls.set_defaults(func=run_list)
    f = sub.add_parser("fetch", help="download (resumable, checksum-verified) or copy from a mirror folder")
    f.add_argument("name")
    f.add_argument("--mirror", type=Path, default=None, help="folder holding the files (tried first)")
    f.add_argument("--dest", type=Path, default=Path("models"))
    f.set_defaults(func=run_fetch)
    d = sub.add_parser("deploy", help="write the deploy prototxt matching a registry model")
    d.add_argument("name")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--num-outputs", type=int, default=None, help="width of fc8 where the registry has none")
    d.set_defaults(func=run_deploy)


def run_list(args: argparse.Namespace) -> int:
    from pixsent.zoo import registry as model_zoo

    rows = [("name", "outputs", "mean", "checksum", "url", "file")]
    for e in model_zoo.registry().values():
        check = "sha1" if e.sha1 else ("sha256" if e.sha256 else "-")
        rows.append(
            (e.name, str(e.num_outputs or "?"), e.mean.name, check, "yes" if e.urls else "no", e.file)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from pixsent.zoo import registry as model_zoo

    path = model_zoo.fetch(args.name, dest=args.dest, mirror=args.mirror)
    print(path)
    return 0


def run_deploy(args: argparse.Namespace) -> int:
    from pixsent.formats.prototxt import write_prototxt
    from pixsent.zoo import registry as model_zoo

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_prototxt(model_zoo.deploy_net(args.name, num_outputs=args.num_outputs), args.out)
    print(args.out)
    return 0
