"""`pixsent predict`: P(positive) and P(negative) of any image with a trained sentiment model.

For the released ``twitter_finetuned_test4_iter_180.caffemodel`` nothing but the weights is needed: its
deploy net
is the paper's fc8_twitter deploy and its mean the ILSVRC 2012 mean (per-channel, as pycaffe users pass it).
Output index 1 is positive, 0 negative (the split files' labels).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixsent.errors import DataError
from pixsent.paper import evaluate as ev

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


def released_deploy() -> Path:
    """The paper's fc8_twitter deploy prototxt (committed under prototxt/, or generated on the fly)."""
    committed = REPO / "prototxt" / "five_agrees" / "fc8_twitter" / "deploy.prototxt"
    if committed.exists():
        return committed
    raise DataError(f"{committed} not found; run `make prototxt` or pass --model deploy.prototxt")


def load_mean(spec: str | None) -> np.ndarray | None:
    """A per-channel BGR mean from "B,G,R", a .npy or a .binaryproto (mean images are averaged per
    channel); a malformed one is a DataError/FormatError naming it."""
    if spec is None:
        return None
    from pixsent.paper.mean_spec import channel_mean

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
    """Fill in deploy and mean for the released weights, which the registry knows."""
    if not Path(cfg.weights).is_file():
        raise DataError(
            f"{cfg.weights}: weights not found (the released model: `pixsent models fetch "
            "twitter_finetuned_test4_iter_180`)"
        )
    if Path(cfg.weights).name.startswith("twitter_finetuned"):
        model = cfg.model or released_deploy()
        mean = cfg.mean or ilsvrc_mean_path()
        return PredictConfig(Path(cfg.weights), model, mean, cfg.oversample, cfg.image_size, cfg.device)
    if cfg.model is None:
        raise DataError(f"{cfg.weights}: not a registered model; pass --model deploy.prototxt")
    return cfg


def predict(images: list[Path], cfg: PredictConfig) -> list[dict]:
    """One dict per image: image, p_positive, p_negative, label (positive/negative), mode."""
    cfg = resolve(cfg)
    ecfg = ev.EvalConfig(
        image_dims=(cfg.image_size, cfg.image_size), mean=load_mean(cfg.mean), device=cfg.device
    )
    net = ev.open_net(Path(cfg.model), Path(cfg.weights), cfg.device)
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
