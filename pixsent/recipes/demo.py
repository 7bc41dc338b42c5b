"""The embedded default: the paper's pipeline on a generated two-class image set, small CaffeNet-shaped net.

Needs no dataset and no pre-trained weights. Images come from a fixed seed: class 1 ("positive") is greener
and brighter with strong stripes, class 0 ("negative") redder and darker with faint stripes, both with an
illumination gradient, colour jitter and pixel noise, so the task is learnable but not trivial. The net has
CaffeNet's layer sequence and names (conv1 k11 s4 ... fc8) with small widths, 64x64 crops of 72x72 images and
xavier fillers (CaffeNet's gaussian 0.01 trains too slowly from scratch on a few hundred images); everything
else (splits, LMDBs, prototxts, Caffe-format log, snapshots, 10-crop evaluation, table, Figure-6 PNG) is the
real pipeline. It is a demonstration on generated data: its numbers say nothing about the paper.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError
from pixsent.workflow.pipeline import FoldConfig, register_recipe, run_cv
from pixsent.workflow.runs import RunPaths, cv_dir

BANNER = "DEMONSTRATION on a generated two-class image set (no Twitter images, no pre-trained weights)"
MARKER = "pixsent-demo.json"


@dataclass
class DemoConfig:
    """Size knobs of the demo; the defaults finish in a few minutes on 2 CPU cores."""

    out: Path = Path("demo")
    n_images: int = 200
    folds: int = 5
    run_folds: int = 5
    image_size: int = 72
    crop: int = 64
    epochs: int = 10
    batch: int = 32
    base_lr: float = 0.001  # 0.01 diverges from xavier init on unscaled pixels (loss NaN by iteration 13)
    widths: tuple[int, ...] = (16, 32, 48, 48, 32, 64, 64)  # conv1..conv5, fc6, fc7
    variant: str = "fc8_twitter"
    seed: int = 2017
    progress: bool = True
    echo: bool = False
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- images


def draw_image(rng: np.random.RandomState, label: int) -> np.ndarray:
    """One BGR uint8 image of the given class, random size 56..120 on each side."""
    h, w = rng.randint(56, 121, size=2)
    base = np.array([85, 150, 105] if label == 1 else [65, 80, 145], dtype=np.float64)
    base = base + rng.normal(0, 18, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 14)
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period
    stripes = (22.0 if label == 1 else 5.0) * np.sin(phase)
    light = rng.uniform(-25, 25) * (xx / w - 0.5) + rng.uniform(-25, 25) * (yy / h - 0.5)
    img = base[None, None, :] + (stripes + light)[:, :, None] + rng.normal(0, 10, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def generate_images(root: Path, n: int, seed: int) -> Path:
    """Write n JPEGs (labels alternate, two noisy labels per 100) and labels.txt; returns the labels file."""
    import cv2

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    lines = []
    for i in range(n):
        label = i % 2
        drawn = 1 - label if i % 50 == 7 else label  # deliberate label noise: accuracy cannot reach 1
        name = f"img{i:04d}_c{label}.jpg"
        cv2.imwrite(str(images / name), draw_image(rng, drawn), [cv2.IMWRITE_JPEG_QUALITY, 90])
        lines.append(f"{name} {label}\n")
    labels = root / "labels.txt"
    labels.write_text("".join(lines))
    return labels


def generate_dataset(cfg: DemoConfig) -> Path:
    """The generated set in the paper's layout: images/, splits/demo_agrees/test<k>/; cached by a marker
    file."""
    from pixsent.data.splits import make_splits

    root = Path(cfg.out) / "data"
    marker = root / MARKER
    want = {"n_images": cfg.n_images, "folds": cfg.folds, "seed": cfg.seed}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return root
    labels = generate_images(root, cfg.n_images, cfg.seed)
    make_splits(labels, root / "splits" / "demo_agrees", folds=cfg.folds, seed=cfg.seed, overwrite=True)
    marker.write_text(json.dumps(want))
    return root


def is_demo_data(path: Path | None) -> bool:
    """True when DATA points at a generated demo set (its root or its images/ folder)."""
    return path is not None and ((Path(path) / MARKER).exists() or (Path(path).parent / MARKER).exists())


# ---------------------------------------------------------------- the small CaffeNet-shaped net


def _param(msg, lr_w: float, lr_b: float) -> None:
    for lr, decay in ((lr_w, 1.0), (lr_b, 0.0)):
        p = msg.param.add()
        p.lr_mult, p.decay_mult = lr, decay


def _layer(net, name: str, type_: str, bottom: str | None, top: str | None = None):
    layer = net.layer.add()
    layer.name, layer.type = name, type_
    if bottom:
        layer.bottom.append(bottom)
    layer.top.append(top or name)
    return layer


def _conv(net, name, bottom, n, k, stride=1, pad=0, group=1):
    layer = _layer(net, name, "Convolution", bottom)
    _param(layer, 1, 2)
    c = layer.convolution_param
    c.num_output, c.group = n, group
    c.kernel_size.append(k)
    if stride != 1:
        c.stride.append(stride)
    if pad:
        c.pad.append(pad)
    c.weight_filler.type = "xavier"
    c.bias_filler.type, c.bias_filler.value = "constant", 0.1
    _layer(net, name.replace("conv", "relu"), "ReLU", name, name)


def _pool_norm(net, idx: int, bottom: str, norm: bool) -> str:
    pool = _layer(net, f"pool{idx}", "Pooling", bottom)
    pool.pooling_param.pool = caffe_pb2.PoolingParameter.MAX
    pool.pooling_param.kernel_size, pool.pooling_param.stride = 3, 2
    if not norm:
        return pool.name
    lrn = _layer(net, f"norm{idx}", "LRN", pool.name)
    lrn.lrn_param.local_size, lrn.lrn_param.alpha, lrn.lrn_param.beta = 5, 1e-4, 0.75
    return lrn.name


def _fc(net, name, bottom, n, new: bool, relu_drop: int | None):
    layer = _layer(net, name, "InnerProduct", bottom)
    _param(layer, 10 if new else 1, 20 if new else 2)
    ip = layer.inner_product_param
    ip.num_output = n
    if new:  # the paper's new layers: gaussian 0.01, bias 0, 10x/20x learning rate
        ip.weight_filler.type, ip.weight_filler.std = "gaussian", 0.01
        ip.bias_filler.type, ip.bias_filler.value = "constant", 0.0
    else:
        ip.weight_filler.type = "xavier"
        ip.bias_filler.type, ip.bias_filler.value = "constant", 0.1
    if relu_drop is not None:
        _layer(net, f"relu{relu_drop}", "ReLU", name, name)
        drop = _layer(net, f"drop{relu_drop}", "Dropout", name, name)
        drop.dropout_param.dropout_ratio = 0.5
    return name


HEADS = {  # variant -> list of (layer name, is new, relu/dropout index or None); last one has 2 outputs
    "fc8_twitter": [("fc6", False, 6), ("fc7", False, 7), ("fc8_twitter", True, None)],
    "fc7-2": [("fc6", False, 6), ("fc7_twitter", True, None)],
    "fc6-2": [("fc6_twitter", True, None)],
    "fc9_twitter": [("fc6", False, 6), ("fc7", False, 7), ("fc8", False, 8), ("fc9_twitter", True, None)],
}


def body(net, cfg: DemoConfig, variant: str) -> str:
    """conv1..pool5 and the variant's head, CaffeNet's names; returns the top of the last layer."""
    w = cfg.widths
    _conv(net, "conv1", "data", w[0], 11, stride=4)
    top = _pool_norm(net, 1, "conv1", True)
    _conv(net, "conv2", top, w[1], 5, pad=2, group=2)
    top = _pool_norm(net, 2, "conv2", True)
    _conv(net, "conv3", top, w[2], 3, pad=1)
    _conv(net, "conv4", "conv3", w[3], 3, pad=1, group=2)
    _conv(net, "conv5", "conv4", w[4], 3, pad=1, group=2)
    top = _pool_norm(net, 5, "conv5", False)
    if variant not in HEADS:
        raise NetError(f"demo: unknown variant {variant!r} (known: {', '.join(HEADS)})")
    sizes = {"fc6": w[5], "fc7": w[6], "fc8": 10}
    for name, new, rd in HEADS[variant]:
        top = _fc(net, name, top, 2 if new else sizes[name], new, rd)
    return top


def train_val_net(
    cfg: DemoConfig, variant: str, train_source: Path, test_source: Path, mean_file: Path, test_batch: int
) -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter(name=f"DemoCaffeNet_{variant}")
    for phase, source, batch in (
        (caffe_pb2.TRAIN, train_source, cfg.batch),
        (caffe_pb2.TEST, test_source, test_batch),
    ):
        data = net.layer.add(name="data", type="Data")
        data.top.extend(["data", "label"])
        data.include.add(phase=phase)
        data.transform_param.crop_size = cfg.crop
        data.transform_param.mirror = phase == caffe_pb2.TRAIN
        data.transform_param.mean_file = str(mean_file)
        data.data_param.source, data.data_param.batch_size = str(source), batch
        data.data_param.backend = caffe_pb2.DataParameter.LMDB
    top = body(net, cfg, variant)
    acc = net.layer.add(name="accuracy", type="Accuracy", bottom=[top, "label"], top=["accuracy"])
    acc.include.add(phase=caffe_pb2.TEST)
    net.layer.add(name="loss", type="SoftmaxWithLoss", bottom=[top, "label"], top=["loss"])
    return net


def deploy_net(cfg: DemoConfig, variant: str) -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter(name=f"DemoCaffeNet_{variant}")
    inp = net.layer.add(name="data", type="Input", top=["data"])
    inp.input_param.shape.add(dim=[10, 3, cfg.crop, cfg.crop])
    top = body(net, cfg, variant)
    net.layer.add(name="prob", type="Softmax", bottom=[top], top=["prob"])
    return net


def solver(
    cfg: DemoConfig, train_size: int, test_size: int, test_batch: int, prefix: str
) -> caffe_pb2.SolverParameter:
    """The paper's solver shape (SGD, momentum 0.9, step policy gamma 0.1) scaled to the demo's epochs."""
    per_epoch = train_size / cfg.batch
    max_iter = max(1, math.ceil(cfg.epochs * per_epoch))
    return caffe_pb2.SolverParameter(
        net="train_val.prototxt",
        test_iter=[math.ceil(test_size / test_batch)],
        test_interval=max(1, max_iter // 4),
        base_lr=cfg.base_lr,
        lr_policy="step",
        gamma=0.1,
        stepsize=max(1, math.ceil(0.75 * max_iter)),
        momentum=0.9,
        weight_decay=0.0005,
        display=1,
        max_iter=max_iter,
        snapshot=max(1, max_iter // 4),
        snapshot_prefix=prefix,
        solver_mode=caffe_pb2.SolverParameter.CPU,
        random_seed=cfg.seed,
        type="SGD",
    )


# ---------------------------------------------------------------- recipe for the pipeline


class DemoRecipe:
    """Pipeline recipe for the generated set: mean from the fold's train LMDB, training from scratch."""

    def claims_data(self, data: Path | None) -> bool:
        """A folder made by generate_dataset (or its images/ folder) is trained with this recipe."""
        return is_demo_data(data)

    def config_from_args(self, args, fold: int, gpu: str | None) -> FoldConfig:
        """The fold command's options on a generated set: the demo's own net and solver."""
        root = args.data if (args.data / MARKER).exists() else args.data.parent
        if args.iter_size != 1:
            raise NetError(f"--iter-size {args.iter_size}: the demo recipe's solver has no iter_size")
        if getattr(args, "snapshot", None):
            raise NetError(
                f"--snapshot {args.snapshot}: the demo recipe's solver has its own snapshot schedule"
            )
        dcfg = DemoConfig(out=root.parent, variant=args.variant, echo=not args.quiet)
        if args.batch is not None:
            dcfg.batch = args.batch
        cfg = fold_config(
            dcfg, root, fold=fold, runs=args.runs, gpu=gpu, engine=args.engine, max_iter_cap=args.max_iter
        )
        print(f"pixsent: {args.data} is a generated demo set: {BANNER}", file=sys.stderr)
        return cfg

    def _cfg(self, cfg: FoldConfig) -> DemoConfig:
        return cfg.extra.get("demo") or DemoConfig()

    def image_size(self, cfg: FoldConfig) -> int:
        return self._cfg(cfg).image_size

    def train_mean(self, cfg: FoldConfig, lmdb_dir: Path) -> Path:
        """compute_image_mean of the fold's train LMDB, recomputed when the LMDB is newer than it."""
        from pixsent.data.image_mean import compute_image_mean, save_mean

        out = Path(lmdb_dir).resolve() / "mean.binaryproto"
        db = Path(lmdb_dir) / "train_lmdb" / "data.mdb"
        if not out.exists() or (db.exists() and db.stat().st_mtime_ns > out.stat().st_mtime_ns):
            save_mean(compute_image_mean(Path(lmdb_dir) / "train_lmdb", progress=False), out)
        return out

    def eval_mean(self, cfg: FoldConfig, lmdb_dir: Path) -> np.ndarray:
        from pixsent.formats.binaryproto import read_mean

        return read_mean(self.train_mean(cfg, lmdb_dir)).mean(axis=(1, 2))

    def init_weights(self, cfg: FoldConfig) -> Path | None:
        return Path(cfg.weights).resolve() if cfg.weights else None

    def write_files(
        self,
        cfg: FoldConfig,
        run: RunPaths,
        *,
        train_source: Path,
        test_source: Path,
        mean_file: Path,
        train_size: int,
        test_size: int,
    ) -> dict[str, Path]:
        from pixsent.formats.prototxt import write_prototxt

        d = self._cfg(cfg)
        test_batch = min(50, test_size)
        files = {"train_val": run.train_val, "deploy": run.deploy, "solver": run.solver}
        write_prototxt(
            train_val_net(d, cfg.variant, train_source, test_source, mean_file, test_batch), run.train_val
        )
        write_prototxt(deploy_net(d, cfg.variant), run.deploy)
        write_prototxt(solver(d, train_size, test_size, test_batch, run.snapshot_prefix), run.solver)
        return files


register_recipe("demo", DemoRecipe())


def fold_config(cfg: DemoConfig, data_root: Path, **over) -> FoldConfig:
    """A pipeline FoldConfig for the generated set at ``data_root``."""
    base = FoldConfig(
        variant=cfg.variant,
        subset="demo",
        init="scratch",
        runs=Path(cfg.out) / "runs",
        images=data_root / "images",
        splits=data_root / "splits",
        lmdb_root=data_root / "lmdb",
        recipe="demo",
        workers=1,
        progress=cfg.progress,
        echo=cfg.echo,
        extra={"demo": cfg},
    )
    return replace(base, **over)


def demo_table(summary: dict, cfg: DemoConfig) -> str:
    """Markdown table of the demo's cross-validation, labelled as generated data."""
    rows = [f"**{BANNER}**", "", "| fold | accuracy (centre) | accuracy (10-crop) |", "| --- | --- | --- |"]
    for k, c, o in zip(summary["folds"], summary["center"]["per_fold"], summary["oversample"]["per_fold"]):
        rows.append(f"| {k} | {c:.3f} | {o:.3f} |")
    c, o = summary["center"], summary["oversample"]
    rows.append(
        f"| mean ± std (population) | {c['mean']:.3f} ± {c['std']:.3f} | {o['mean']:.3f} ± {o['std']:.3f} |"
    )
    rows += [
        "",
        f"{cfg.n_images} generated images, {cfg.image_size}x{cfg.image_size}, crops {cfg.crop}, "
        f"variant {cfg.variant}, trained from scratch for {cfg.epochs} epochs.",
    ]
    return "\n".join(rows) + "\n"


def run_demo(cfg: DemoConfig) -> dict:
    """Generate, train and evaluate the folds, then write table.md, curves.png and sentiment maps if
    available."""
    from pixsent.workflow.plots import plot_logs

    print(f"pixsent demo: {BANNER}", file=sys.stderr)
    data_root = generate_dataset(cfg)
    fcfg = fold_config(cfg, data_root)
    summary = run_cv(fcfg, range(1, cfg.run_folds + 1))
    out = Path(cfg.out)
    table = demo_table(summary, cfg)
    (out / "table.md").write_text(table)
    logs = [RunPaths(fcfg.runs, "demo", cfg.variant, "scratch", k).log for k in range(1, cfg.run_folds + 1)]
    plot_logs(
        logs,
        out / "curves.png",
        [f"fold {k}" for k in range(1, cfg.run_folds + 1)],
        title="DEMO on generated data: training loss and test accuracy",
    )
    maps = _maybe_maps(cfg, fcfg, data_root)
    print(table, file=sys.stdout)
    print(
        f"pixsent demo: run folders under {cv_dir(fcfg.runs, 'demo', cfg.variant, 'scratch')}, "
        f"table {out / 'table.md'}, curves {out / 'curves.png'}" + (f", maps {maps}" if maps else ""),
        file=sys.stderr,
    )
    return summary | {"table": str(out / "table.md"), "plot": str(out / "curves.png"), "maps": maps}


def _maybe_maps(cfg: DemoConfig, fcfg: FoldConfig, data_root: Path) -> str | None:
    """Figure-7-style sentiment maps of four test images of fold 1 (fully convolutional surgery at twice the
    crop), with the grid figure; a failure here is reported and does not undo the demo's results."""
    from pixsent.analysis.maps import MapConfig, run_maps
    from pixsent.formats.prototxt import read_solver
    from pixsent.workflow.pipeline import lmdb_dir

    run = RunPaths(fcfg.runs, "demo", cfg.variant, "scratch", 1)
    weights = run.snapshot_model(int(read_solver(run.solver).max_iter))
    lines = (run.dir / "test.txt").read_text().splitlines()[:4]
    images = [data_root / "images" / line.split()[0] for line in lines]
    out = Path(cfg.out) / "maps"
    mean = DemoRecipe().eval_mean(fcfg, lmdb_dir(replace(fcfg, fold=1)))
    try:
        run_maps(
            images,
            weights,
            run.deploy,
            out,
            MapConfig(size=2 * cfg.crop, mean=mean),
            grid=out / "grid.png",
            progress=False,
        )
    except Exception as exc:  # maps decorate the demo: report and keep the table and curves
        print(f"pixsent demo: sentiment maps skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None
    return str(out)
