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


def _init_model(args: argparse.Namespace) -> tuple[Path, Path]:
    """(deploy, weights) of the registry model --init (off-the-shelf probes: no fine-tuning), fetched from
    --mirror into --models when absent."""
    from pixsent.zoo import registry

    entry = registry.get(args.init)
    models = Path(args.models)
    weights = Path(args.run) if args.run else models / entry.file
    if not weights.is_file() and not args.run:
        registry.fetch(args.init, dest=models, mirror=args.mirror)
    deploy = Path(args.model) if args.model else registry.find_deploy(args.init, models, args.mirror)
    return deploy, weights


def _probe_mean(args: argparse.Namespace, models: dict[int, tuple[Path, Path]]):
    """--mean, else the registry model's (--init), else what the run's train_val subtracts, else the ILSVRC
    mean file; returns (array, spec text)."""
    from pixsent.workflow.runs import run_mean

    default = Path("data/ilsvrc_2012_mean.npy")
    spec = args.mean
    if spec is None and args.init:
        from pixsent.zoo import registry

        mean = registry.get(args.init).mean
        if mean.values:
            spec = ",".join(f"{v:g}" for v in mean.values)
        elif mean.npy and (Path(args.models) / mean.npy).is_file():
            spec = str(Path(args.models) / mean.npy)
    if spec is None:
        deploy = next(iter(models.values()))[0]
        train_val = deploy.parent / "train_val.prototxt"
        if train_val.is_file():
            spec = run_mean(train_val)
            if spec and "," not in spec and not Path(spec).is_file():
                spec = None  # a mean image named relative to where training ran: the ILSVRC default below
    if spec is None and default.is_file():
        spec = str(default)
    return (_mean(spec) if spec else None), spec


def _layers(args: argparse.Namespace) -> int:
    import numpy as np

    from pixsent.analysis import layersets, probes, provenance
    from pixsent.analysis.features import resolve_blobs
    from pixsent.analysis.phases import PhaseLog
    from pixsent.data.splits import fold_dirs
    from pixsent.errors import DataError
    from pixsent.formats.prototxt import read_net

    commit = provenance.commit()  # the code that runs: read before the long work, not after it
    splits = Path(args.splits)
    if (splits / SUBSET_DIRS[args.subset]).is_dir():
        splits = splits / SUBSET_DIRS[args.subset]
    folds = [f.k for f in fold_dirs(splits)]
    if args.folds:
        folds = [k for k in folds if k in {int(v) for v in args.folds.split(",")}]
    if not folds:
        raise DataError(f"{splits}: no test<k>/ fold folders (run `pixsent splits fetch`)")
    if args.init:
        deploy, weights = _init_model(args)
        models = {k: (deploy, weights) for k in folds}
    elif args.run:
        models = resolve_models(Path(args.run), Path(args.model) if args.model else None, folds)
    else:
        raise DataError("give --run (a fine-tuned run folder or caffemodel) or --init (a registry model)")
    mean, mean_spec = _probe_mean(args, models)
    if mean is None:
        raise DataError("no mean: give --mean (ilsvrc_2012_mean.npy, a .binaryproto or 'B,G,R')")
    deploy = next(iter(models.values()))[0]
    architecture = args.arch
    if architecture is None and args.init:
        from pixsent.zoo import registry

        architecture = registry.get(args.init).architecture
    net = read_net(deploy)
    layer_set, names = layersets.default_layers(net, architecture)
    layers = tuple(args.layers.split(",")) if args.layers else tuple(names)
    blobs = resolve_blobs(layers, list(dict.fromkeys(t for layer in net.layer for t in layer.top)), deploy)
    spec = probes.LayerAnalysis(
        splits=splits,
        images=Path(args.images),
        models=models,
        layers=layers,
        cache=Path(args.cache),
        mean=np.asarray(mean, dtype=np.float32),
        batch=args.batch,
        probe=probes.ProbeConfig(seed=args.seed),
        log=PhaseLog() if args.timings else None,
        keep_cache=not args.drop_cache,
    )
    table = probes.layer_analysis(spec)
    report = _table3_report(args, spec, table, layer_set.name, mean_spec, len(folds), commit)
    report.blobs = blobs
    print(report.markdown())
    _write_reports(args, spec, report)
    return 0


def _table3_report(args, spec, table, layer_set: str, mean_spec: str | None, n_folds: int, commit: str):
    from pixsent.analysis import provenance
    from pixsent.analysis.report import Table3Report
    from pixsent.recipes.paper import results

    if args.label:
        label = args.label
    elif args.init:
        label = args.init
    else:
        label = Path(args.run).resolve().name.removesuffix(".caffemodel")
    return Table3Report(
        label=label,
        subset=args.subset,
        folds=sorted(spec.models),
        layer_set=layer_set,
        init=args.init,
        fine_tuned=args.init is None,
        models={k: {"deploy": str(d), "weights": str(w)} for k, (d, w) in spec.models.items()},
        mean=mean_spec,
        layers=list(spec.layers),
        probe=spec.probe,
        command=provenance.command_line(getattr(args, "command_line", None)),
        commit=commit,
        table=table,
        n_folds=n_folds,
        paper=dict(results.TABLE3) if layer_set == "caffenet" else {},
    )


def _write_reports(args, spec, report) -> None:
    from pixsent.formats.atomic import atomic_write_text

    if args.json:
        atomic_write_text(args.json, json.dumps(report.to_json(), indent=1))
    if args.md:
        atomic_write_text(args.md, report.markdown(header=True) + "\n")
    if args.timings:
        atomic_write_text(args.timings, json.dumps(spec.log.events, indent=1))


def _surgery(args: argparse.Namespace) -> int:
    from pixsent.analysis.surgery import surgery

    res = surgery(args.model, args.weights, args.out, size=args.size)
    for c in res.conversions.values():
        print(f"{c.old_name} -> {c.new_name}: {c.num_output}x{c.channels}x{c.kernel[0]}x{c.kernel[1]}")
    if res.score_map is not None:
        head = res.score_map
        print(
            f"no InnerProduct to convert: the map is {head.blob} (written by {head.layer}) before the global "
            f"pooling {head.pool}; {head.border} padding cell(s) per side left out of drawn maps"
        )
        print(f"wrote {res.prototxt} (weights: {res.caffemodel} as they are)")
        return 0
    print(f"wrote {res.prototxt}")
    print(f"wrote {res.caffemodel}")
    return 0


def _map_inputs(args: argparse.Namespace) -> tuple[list[Path], Path, Path | None, str | None]:
    """(images, weights, deploy, mean spec): from the options, or from a fold run folder (--run): its newest
    snapshot, deploy.prototxt, the mean its train_val subtracts, and --test-images N of its test list."""
    from pixsent.analysis.maps import pick_test_images
    from pixsent.errors import DataError
    from pixsent.workflow.runs import run_mean

    images = [Path(p) for p in args.images]
    weights = Path(args.weights) if args.weights else None
    model = Path(args.model) if args.model else None
    mean = args.mean
    if args.run:
        fold = Path(args.run)
        weights = weights or _latest_snapshot(fold / "snapshots" if (fold / "snapshots").is_dir() else fold)
        model = model or fold / "deploy.prototxt"
        if weights is None or not model.is_file():
            raise DataError(f"{fold}: no deploy.prototxt and *_iter_N.caffemodel snapshot (not a fold run?)")
        if mean is None and (fold / "train_val.prototxt").is_file():
            mean = run_mean(fold / "train_val.prototxt")
        if args.test_images:
            images += pick_test_images(
                fold / "test.txt", Path(args.image_dir), args.test_images, args.exclude
            )
    if weights is None:
        raise DataError("give --weights (a caffemodel) or --run (a fold run folder)")
    if not images:
        raise DataError("no images: name image files, or give --run with --test-images N")
    return images, weights, model, mean


def _maps(args: argparse.Namespace) -> int:
    import numpy as np

    from pixsent.analysis.maps import MapConfig, run_maps, verdict

    images, weights, model, mean_spec = _map_inputs(args)
    mean = _mean(mean_spec)
    if mean is not None and np.ndim(mean) == 3:
        mean = mean.mean(1).mean(1)  # per-channel, as the authors' Transformer.set_mean does
    cfg = MapConfig(size=args.size, mean=mean, device=args.device)
    title = args.title
    if title is None and args.run:
        fold = Path(args.run).resolve()
        title = (
            f"{fold.parent.name}/{fold.name}, {weights.stem}: green = P(positive), red = P(negative); "
            "frame: the net's answer"
        )
    labels = None
    if args.run and (Path(args.run) / "test.txt").is_file():
        from pixsent.analysis.probes import read_split_list

        labels = dict(read_split_list(Path(args.run) / "test.txt"))
    items = run_maps(images, weights, model, args.out, cfg, grid=args.grid, title=title, labels=labels)
    print(f"weights {weights}")
    for item in items:
        print(f"{item.name}\tP(positive)={item.p_positive:.4f}\t{verdict(item.p_positive)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `layers`, `surgery` and `maps`."""
    p = subparsers.add_parser("layers", help="layer-wise linear probes of a net's layers (Table 3)")
    p.add_argument("--run", help="fine-tuned run folder (fold<k>/ with snapshots) or a caffemodel")
    p.add_argument(
        "--init", help="probe the registry model NAME as it is, without fine-tuning (e.g. squeezenet-dc)"
    )
    p.add_argument("--model", help="deploy prototxt (default: the run folder's, or the registry model's)")
    p.add_argument("--models", default="models", help="where registry models are (with --init)")
    p.add_argument("--mirror", help="folder holding the registry model's downloads (with --init)")
    p.add_argument("--arch", help="architecture whose default layers to probe (default: --init's, detected)")
    p.add_argument("--subset", choices=sorted(SUBSET_DIRS), default="five")
    p.add_argument("--images", default="data/twitter/images", help="folder holding the split images")
    p.add_argument("--splits", default="splits", help="split folder (with <subset>_agrees/test<k>/)")
    p.add_argument(
        "--layers",
        help="comma-separated blobs (default per architecture: CaffeNet conv1,...,fc8 as in Table 3; "
        "SqueezeNet conv1, pool1, fire*/concat, pool4, pool8, conv_final, pool_final; open_nsfw pool1, "
        "each stage's last Eltwise, pool, fc_nsfw)",
    )
    p.add_argument("--folds", help="comma-separated fold numbers (default: all)")
    p.add_argument("--cache", default="cache/features", help="where memory-mapped features are cached")
    p.add_argument(
        "--drop-cache",
        action="store_true",
        help="delete a model's feature cache once its last fold is probed (one fine-tuned model per fold)",
    )
    p.add_argument(
        "--mean",
        help="mean .npy/.binaryproto or 'B,G,R' (default: --init's, the run's train_val's, or "
        "data/ilsvrc_2012_mean.npy)",
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", help="what the table calls this net (default: the run folder or --init)")
    p.add_argument("--json", help="write the table, every per-fold result, the command and commit as JSON")
    p.add_argument("--md", help="write the table as markdown with the command and commit")
    p.add_argument("--timings", help="write each phase's wall time and memory (extract, probes) as JSON")
    p.set_defaults(func=_layers)

    p = subparsers.add_parser("surgery", help="fully connected layers into convolutions (for sentiment maps)")
    p.add_argument("--weights", required=True, help="trained caffemodel")
    p.add_argument("--model", required=True, help="its deploy prototxt")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, default=451, help="input size of the fully convolutional net")
    p.set_defaults(func=_surgery)

    p = subparsers.add_parser("maps", help="sentiment maps and overlays (Figure 7)")
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--weights", help="_conv.caffemodel, or a trained caffemodel (with --model)")
    p.add_argument(
        "--model", help="prototxt of the weights (fully convolutional or not); default: from weights"
    )
    p.add_argument(
        "--run",
        help="a fold run folder: its newest snapshot, deploy.prototxt and train_val's mean (unless given)",
    )
    p.add_argument(
        "--test-images",
        type=int,
        metavar="N",
        help="with --run: also map N images of the fold's test list (half positive, half negative)",
    )
    p.add_argument("--image-dir", default="data/twitter/images", help="where --test-images are")
    p.add_argument(
        "--exclude", nargs="+", default=[], metavar="NAME", help="image names --test-images passes over"
    )
    p.add_argument(
        "--size",
        type=int,
        help="input size (default 451 for nets with fc layers, as the paper; a net whose classifier is a "
        "convolution before global pooling: its own input size)",
    )
    p.add_argument("--out", default="maps", help="output folder")
    p.add_argument(
        "--mean",
        help="mean .npy/.binaryproto or 'B,G,R' (default: the run's train_val's, else ILSVRC channel means)",
    )
    p.add_argument("--grid", help="also write a grid figure PNG here")
    p.add_argument("--title", help="title of the grid figure")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_maps)
