"""`pixsent layers`, `pixsent surgery`, `pixsent maps`: the paper's analysis tools (Table 3, Figure 7)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

SUBSET_DIRS = {"five": "five_agrees", "four": "four_agrees", "three": "three_agrees"}
_ITER = re.compile(r"_iter_(\d+)\.caffemodel$")


def _mean(spec: str | None, default: Path | None = None):
    """--mean: a .npy (3,H,W) mean image or (3,) values, a .binaryproto, or 'B,G,R'; None -> default file."""
    from pixsent.zoo.mean_spec import parse_mean

    if spec is None:
        if default is not None and default.is_file():
            return parse_mean(str(default))
        return None
    return parse_mean(spec)


def _latest_snapshot(folder: Path) -> Path | None:
    snaps = sorted(folder.rglob("*_iter_*.caffemodel"), key=lambda p: int(_ITER.search(p.name).group(1)))
    return snaps[-1] if snaps else None


def resolve_models(run: Path, model: Path | None, folds: list[int]) -> dict[int, tuple[Path, Path]]:
    """--run: a caffemodel (with --model), a fold run folder, or a run folder with fold<k>/ sub-folders."""
    from pixsent.errors import DataError

    if run.is_file():
        if model is None:
            raise DataError(f"{run}: a caffemodel needs --model deploy.prototxt")
        return {k: (model, run) for k in folds}
    if not run.is_dir():
        raise DataError(f"{run}: no such run folder or weights file")
    out = {}
    for k in folds:
        fold_dir = run / f"fold{k}" if (run / f"fold{k}").is_dir() else run
        weights = _latest_snapshot(fold_dir)
        deploy = model or fold_dir / "deploy.prototxt"
        if weights is None or not deploy.is_file():
            raise DataError(f"{fold_dir}: no deploy.prototxt and *_iter_N.caffemodel snapshot for fold {k}")
        out[k] = (deploy, weights)
    return out


def _layers(args: argparse.Namespace) -> int:
    import numpy as np

    from pixsent.analysis import probes
    from pixsent.analysis.phases import PhaseLog
    from pixsent.data.splits import fold_dirs
    from pixsent.errors import DataError
    from pixsent.formats.atomic import atomic_write_text

    splits = Path(args.splits)
    if (splits / SUBSET_DIRS[args.subset]).is_dir():
        splits = splits / SUBSET_DIRS[args.subset]
    folds = [f.k for f in fold_dirs(splits)]
    if args.folds:
        folds = [k for k in folds if k in {int(v) for v in args.folds.split(",")}]
    if not folds:
        raise DataError(f"{splits}: no test<k>/ fold folders (run `pixsent splits fetch`)")
    mean = _mean(args.mean, Path("data/ilsvrc_2012_mean.npy"))
    if mean is None:
        raise DataError("no mean: give --mean (ilsvrc_2012_mean.npy, a .binaryproto or 'B,G,R')")
    spec = probes.LayerAnalysis(
        splits=splits,
        images=Path(args.images),
        models=resolve_models(Path(args.run), Path(args.model) if args.model else None, folds),
        layers=tuple(args.layers.split(",")) if args.layers else probes.TABLE3_LAYERS,
        cache=Path(args.cache),
        mean=np.asarray(mean, dtype=np.float32),
        batch=args.batch,
        probe=probes.ProbeConfig(seed=args.seed),
        log=PhaseLog() if args.timings else None,
    )
    table = probes.layer_analysis(spec)
    print(f"Table 3: layer-wise linear probes ({args.subset}-agree, {len(folds)} folds, mean ± std)")
    print(table.to_markdown())
    if args.json:
        atomic_write_text(args.json, json.dumps(table.to_json(), indent=1))
    if args.timings:
        atomic_write_text(args.timings, json.dumps(spec.log.events, indent=1))
    return 0


def _surgery(args: argparse.Namespace) -> int:
    from pixsent.analysis.surgery import surgery

    res = surgery(args.model, args.weights, args.out, size=args.size)
    for c in res.conversions.values():
        print(f"{c.old_name} -> {c.new_name}: {c.num_output}x{c.channels}x{c.kernel[0]}x{c.kernel[1]}")
    print(f"wrote {res.prototxt}")
    print(f"wrote {res.caffemodel}")
    return 0


def _maps(args: argparse.Namespace) -> int:
    import numpy as np

    from pixsent.analysis.maps import MapConfig, run_maps

    mean = _mean(args.mean)
    if mean is not None and np.ndim(mean) == 3:
        mean = mean.mean(1).mean(1)  # per-channel, as the authors' Transformer.set_mean does
    cfg = MapConfig(size=args.size, mean=mean, device=args.device)
    items = run_maps(args.images, args.weights, args.model, args.out, cfg, grid=args.grid)
    for item in items:
        label = "positive" if item.p_positive > 0.5 else "negative"
        print(f"{item.name}\tP(positive)={item.p_positive:.4f}\t{label}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `layers`, `surgery` and `maps`."""
    p = subparsers.add_parser("layers", help="layer-wise linear probes of a fine-tuned net (Table 3)")
    p.add_argument("--run", required=True, help="run folder (fold<k>/ with snapshots) or a caffemodel")
    p.add_argument("--model", help="deploy prototxt (default: the run folder's deploy.prototxt)")
    p.add_argument("--subset", choices=sorted(SUBSET_DIRS), default="five")
    p.add_argument("--images", default="data/twitter/images", help="folder holding the split images")
    p.add_argument("--splits", default="splits", help="split folder (with <subset>_agrees/test<k>/)")
    p.add_argument("--layers", help="comma-separated blobs (default: conv1,...,fc8 as in Table 3)")
    p.add_argument("--folds", help="comma-separated fold numbers (default: all)")
    p.add_argument("--cache", default="cache/features", help="where memory-mapped features are cached")
    p.add_argument("--mean", help="mean .npy/.binaryproto or 'B,G,R' (default data/ilsvrc_2012_mean.npy)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write every per-fold result as JSON")
    p.add_argument("--timings", help="write each phase's wall time and memory (extract, probes) as JSON")
    p.set_defaults(func=_layers)

    p = subparsers.add_parser("surgery", help="fully connected layers into convolutions (for sentiment maps)")
    p.add_argument("--weights", required=True, help="trained caffemodel")
    p.add_argument("--model", required=True, help="its deploy prototxt")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, default=451, help="input size of the fully convolutional net")
    p.set_defaults(func=_surgery)

    p = subparsers.add_parser("maps", help="sentiment maps and overlays (Figure 7)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument(
        "--weights", required=True, help="_conv.caffemodel, or a trained caffemodel (with --model)"
    )
    p.add_argument(
        "--model", help="prototxt of the weights (fully convolutional or not); default: from weights"
    )
    p.add_argument("--size", type=int, default=451)
    p.add_argument("--out", default="maps", help="output folder")
    p.add_argument("--mean", help="mean .npy/.binaryproto or 'B,G,R' (default: ILSVRC channel means)")
    p.add_argument("--grid", help="also write a grid figure PNG here")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_maps)
