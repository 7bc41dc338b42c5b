"""Caffe's format tools: upgrade_net_proto_text/binary, upgrade_solver_proto_text, mean convert, inspect."""

from __future__ import annotations

import argparse
import math
from collections import Counter
from pathlib import Path


def run_upgrade_net_text(args: argparse.Namespace) -> int:
    from pixsent.formats.prototxt import read_net, write_prototxt

    write_prototxt(read_net(args.input), args.output)
    print(f"wrote {args.output}")
    return 0


def run_upgrade_net_binary(args: argparse.Namespace) -> int:
    from pixsent.formats.caffemodel import read_caffemodel, write_caffemodel

    write_caffemodel(read_caffemodel(args.input), args.output)
    print(f"wrote {args.output}")
    return 0


def run_upgrade_solver_text(args: argparse.Namespace) -> int:
    from pixsent.formats.prototxt import read_solver, write_prototxt

    write_prototxt(read_solver(args.input), args.output)
    print(f"wrote {args.output}")
    return 0


def run_mean_convert(args: argparse.Namespace) -> int:
    from pixsent.errors import FormatError
    from pixsent.formats.binaryproto import binaryproto_to_npy, npy_to_binaryproto

    src, dst = Path(args.input), Path(args.output)
    converters = {(".npy", ".binaryproto"): npy_to_binaryproto, (".binaryproto", ".npy"): binaryproto_to_npy}
    convert = converters.get((src.suffix.lower(), dst.suffix.lower()))
    if convert is None:
        raise FormatError(f"{src} -> {dst}: convert .npy to .binaryproto or .binaryproto to .npy")
    convert(src, dst)
    print(f"wrote {dst}")
    return 0


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def _inspect_net(net, with_blobs: bool) -> list[str]:
    from pixsent.formats.blob import blob_shape

    lines = [f"net {net.name!r}: {len(net.layer)} layers"]
    total = 0
    for layer in net.layer:
        shapes = [blob_shape(b) for b in layer.blobs]
        total += sum(math.prod(s) for s in shapes)
        blobs = f"  params {', '.join(_shape(s) for s in shapes)}" if shapes else ""
        flow = f"{','.join(layer.bottom) or '-'} -> {','.join(layer.top) or '-'}"
        lines.append(f"  {layer.name:<20} {layer.type:<16} {flow}{blobs}")
    if with_blobs:
        lines.append(f"{total} parameters")
    return lines


def _inspect_lmdb(path: Path) -> list[str]:
    from pixsent.formats.datum import datum_to_array
    from pixsent.formats.lmdb_io import LMDBReader

    with LMDBReader(path) as reader:
        lines = [f"LMDB {path}: {len(reader)} entries"]
        labels: Counter[int] = Counter()
        first = None
        for key, datum in reader.datums():
            labels[datum.label] += 1
            if first is None:
                first = (key, datum)
        if first is not None:
            key, datum = first
            pixels = datum_to_array(datum)
            form = "encoded" if datum.encoded else "raw"
            lines.append(
                f"  first key {key.decode(errors='replace')}: {form} {_shape(pixels.shape)} {pixels.dtype}"
            )
        lines.append("  labels " + ", ".join(f"{k}: {v}" for k, v in sorted(labels.items())))
    return lines


def _inspect_mean(path: Path) -> list[str]:
    from pixsent.formats.binaryproto import read_mean

    mean = read_mean(path)
    channels = ", ".join(f"{m:.4f}" for m in mean.mean(axis=(1, 2)))
    return [f"mean {path}: {_shape(mean.shape)} float32, per-channel means {channels}"]


def _inspect_solverstate(path: Path) -> list[str]:
    from pixsent.formats.solverstate import history_arrays, read_solverstate

    state = read_solverstate(path)
    hist = history_arrays(state)
    return [
        f"solverstate {path}: iter {state.iter}, current_step {state.current_step}, "
        f"learned_net {state.learned_net!r}",
        f"  {len(hist)} history blobs: " + ", ".join(_shape(h.shape) for h in hist),
    ]


def _inspect_model_or_text(path: Path) -> list[str]:
    from pixsent.errors import FormatError
    from pixsent.formats.caffemodel import read_net_binary_or_text
    from pixsent.formats.prototxt import read_solver, to_text

    try:
        net = read_net_binary_or_text(path)
    except FormatError as net_error:
        if path.suffix.lower() not in (".prototxt", ".pt", ".txt"):
            raise
        try:
            solver = read_solver(path)
        except FormatError as solver_error:
            # neither parses: report the reading that got further into the file (its line is the culprit)
            raise max(net_error, solver_error, key=lambda e: _error_position(str(e), path)) from None
        return [f"solver {path}:", *("  " + line for line in to_text(solver).splitlines())]
    return _inspect_net(net, with_blobs=any(len(la.blobs) for la in net.layer))


def _error_position(message: str, path: Path) -> tuple[int, int]:
    """(line, column) of a "PATH:LINE:COL: ..." parse error; (0, 0) when it has none."""
    head = message[len(str(path)) :] if message.startswith(str(path)) else ""
    parts = head.split(":")
    if len(parts) > 2 and parts[1].isdigit() and parts[2].isdigit():
        return int(parts[1]), int(parts[2])
    return 0, 0


def run_inspect(args: argparse.Namespace) -> int:
    from pixsent.errors import FormatError

    path = Path(args.file)
    if not path.exists():
        raise FormatError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if path.is_dir() or path.name == "data.mdb":
        lines = _inspect_lmdb(path if path.is_dir() else path.parent)
    elif suffix == ".binaryproto":
        lines = _inspect_mean(path)
    elif suffix == ".solverstate":
        lines = _inspect_solverstate(path)
    else:
        lines = _inspect_model_or_text(path)
    print("\n".join(lines))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, func, help_text in (
        (
            "upgrade_net_proto_text",
            run_upgrade_net_text,
            "upgrade a V0/V1 net prototxt to the current format",
        ),
        (
            "upgrade_net_proto_binary",
            run_upgrade_net_binary,
            "upgrade a V0/V1 caffemodel to the current format",
        ),
        (
            "upgrade_solver_proto_text",
            run_upgrade_solver_text,
            "upgrade a solver prototxt (solver_type -> type)",
        ),
    ):
        p = subparsers.add_parser(name, help=help_text)
        p.add_argument("input", metavar="IN")
        p.add_argument("output", metavar="OUT")
        p.set_defaults(func=func)

    mean = subparsers.add_parser("mean", help="mean image files")
    msub = mean.add_subparsers(dest="mean_command", metavar="ACTION", required=True)
    p = msub.add_parser("convert", help="mean .npy <-> .binaryproto (by extension)")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.set_defaults(func=run_mean_convert)

    p = subparsers.add_parser(
        "inspect", help="summarise a prototxt, caffemodel, binaryproto, solverstate or LMDB"
    )
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=run_inspect)
