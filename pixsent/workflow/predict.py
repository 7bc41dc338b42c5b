"""`pixsent predict`: P(positive) and P(negative) of any image with a trained sentiment model.

For the released ``twitter_finetuned_test4_iter_180.caffemodel`` nothing but the weights is needed: its
deploy net
is the paper's fc8_twitter deploy and its mean the ILSVRC 2012 mean (per-channel, as pycaffe users pass it).
Output index 1 is positive, 0 negative (the split files' labels).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixsent.errors import DataError
from pixsent.workflow import evaluate as ev
from pixsent.workflow.runs import run_folder_of, run_mean

REPO = Path(__file__).resolve().parents[2]
RELEASED = "twitter_finetuned_test4_iter_180.caffemodel"


@dataclass
class PredictConfig:
    weights: Path
    model: Path | None = None
    mean: str | None = None  # .npy / .binaryproto file, or "B,G,R"
    oversample: bool = False
    image_size: int = 256
    device: str = "cpu"


def registered(weights: Path):
    """The registry entry whose caffemodel file name is ``weights``'s, or None."""
    from pixsent.zoo import registry as model_zoo

    return next((e for e in model_zoo.registry().values() if e.file == Path(weights).name), None)


def registry_deploy(entry) -> Path:
    """Deploy prototxt of a registered sentiment model: the committed one of its variant, else generated."""
    kind = entry.deploy.get("generator")
    if kind == "fullconv":
        raise DataError(
            f"{entry.file}: the fully convolutional model gives sentiment maps, not one score per image; "
            f"use `pixsent maps IMAGE... --weights {entry.file}` (or predict with {RELEASED})"
        )
    if kind == "variant":
        committed = REPO / "prototxt" / "five_agrees" / entry.deploy["variant"] / "deploy.prototxt"
        if committed.exists():
            return committed
    from pixsent.formats.prototxt import write_prototxt
    from pixsent.zoo import registry as model_zoo

    out = (
        Path(os.environ.get("PIXSENT_CACHE", Path.home() / ".cache" / "pixsent"))
        / f"{entry.name}.deploy.prototxt"
    )
    write_prototxt(model_zoo.deploy_net(entry.name), out)
    return out


def load_mean(spec: str | None) -> np.ndarray | None:
    """A per-channel BGR mean from "B,G,R", a .npy or a .binaryproto (mean images are averaged per
    channel); a malformed one is a DataError/FormatError naming it."""
    if spec is None:
        return None
    from pixsent.zoo.mean_spec import channel_mean

    return channel_mean(spec)


def ilsvrc_mean_path() -> str:
    shared = Path(os.environ.get("PIXSENT_SHARED", REPO.parent / "shared"))
    for cand in (
        Path("data/ilsvrc_2012_mean.npy"),
        Path("data/ilsvrc_2012_mean.binaryproto"),
        shared / "data/ilsvrc_2012_mean.npy",
    ):
        if cand.exists():
            return str(cand)
    raise DataError("ILSVRC 2012 mean not found; run `pixsent data mean` or pass --mean")


def resolve(cfg: PredictConfig) -> PredictConfig:
    """Fill in deploy and mean for a registered model (the released weights need nothing else)."""
    if not Path(cfg.weights).is_file():
        raise DataError(
            f"{cfg.weights}: weights not found (the released model: `pixsent models fetch "
            "twitter_finetuned_test4_iter_180`)"
        )
    entry = registered(Path(cfg.weights))
    if entry is not None and cfg.model is None:
        if entry.num_outputs != 2:
            raise DataError(
                f"{cfg.weights}: registry model {entry.name!r} is not a two-class sentiment model"
            )
        model = registry_deploy(entry)
    elif cfg.model is None:
        raise DataError(f"{cfg.weights}: not a registered model; pass --model deploy.prototxt")
    else:
        model = cfg.model
    mean = cfg.mean
    run = run_folder_of(Path(cfg.weights))
    if mean is None and run is not None:
        mean = run_mean(run / "train_val.prototxt")  # what the fold's snapshot saw at test time
    elif mean is None and entry is not None:
        mean = ilsvrc_mean_path() if entry.mean.name == "ilsvrc_2012" else entry.mean.file
    if mean is None:
        print(
            f"[pixsent] {cfg.weights}: no mean known (not a registry model or a fold snapshot); "
            "nothing is subtracted: pass --mean if the net was trained with one",
            file=sys.stderr,
        )
    return PredictConfig(Path(cfg.weights), Path(model), mean, cfg.oversample, cfg.image_size, cfg.device)


def predict(images: list[Path], cfg: PredictConfig) -> list[dict]:
    """One dict per image: image, p_positive, p_negative, label (positive/negative), mode."""
    cfg = resolve(cfg)
    ecfg = ev.EvalConfig(
        image_dims=(cfg.image_size, cfg.image_size), mean=load_mean(cfg.mean), device=cfg.device
    )
    net = ev.open_net(Path(cfg.model), Path(cfg.weights), cfg.device)
    classes = net.blobs[net.outputs[0]].data.shape[1]
    if classes != 2:
        raise DataError(
            f"{cfg.model}: output {net.outputs[0]!r} has {classes} classes; "
            "predict needs a two-class sentiment net (index 0 negative, 1 positive)"
        )
    arrays = [ev.load_resized(Path(p), ecfg.image_dims) for p in images]
    crops = ev.predict_arrays(net, arrays, ecfg)
    probs = crops.mean(1) if cfg.oversample else crops[:, ev.CENTRE_CROP]
    out = []
    for path, p in zip(images, probs):
        pos, neg = float(p[1]), float(p[0])
        out.append(
            {
                "image": str(path),
                "p_positive": pos,
                "p_negative": neg,
                "label": "positive" if pos >= neg else "negative",
                "mode": "oversample" if cfg.oversample else "center",
            }
        )
    return out


def format_results(rows: list[dict], as_json: bool) -> str:
    if as_json:
        return json.dumps(rows, indent=2)
    return "\n".join(
        f"{r['image']}\tP(positive)={r['p_positive']:.4f}\tP(negative)={r['p_negative']:.4f}\t{r['label']}"
        for r in rows
    )
