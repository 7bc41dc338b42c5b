"""Test-time evaluation as the paper did it: resize to 256x256, centre crop or 10-crop oversampling, accuracy.

The preprocessing is pycaffe's ``Classifier``: ``caffe.io.load_image`` (RGB in [0, 1]),
``caffe.io.resize_image``
to ``image_dims``, crops, HWC->CHW, channel swap to BGR, ``raw_scale`` 255, mean subtraction. The 10 crops are
the 4 corners and the centre and their horizontal mirrors (pycaffe's ``io.oversample`` order); the prediction
is the mean of the 10 softmax outputs. The centre-crop prediction is crop 4 of the same forward pass
(pycaffe's
``oversample=False`` takes the same centre offset, ``int(dim/2 - crop/2)``), so one pass yields both.
Cross-validation reports mean and *population* standard deviation (``ddof=0``) over the folds: the paper does
not say which it used, and numpy's default is the likelier choice; the sample std is also stored.
"""

from __future__ import annotations

import csv
import io as _io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixsent.errors import DataError
from pixsent.workflow.runs import write_json

N_CROPS = 10
CENTRE_CROP = 4


@dataclass
class EvalConfig:
    """How test images become network input; defaults are the paper's (and pycaffe Classifier's usual)
    values."""

    image_dims: tuple[int, int] = (256, 256)
    mean: np.ndarray | None = (
        None  # (C,) per-channel BGR mean, or (C, H, W) mean image cropped like the crops
    )
    raw_scale: float = 255.0
    channel_swap: tuple[int, ...] | None = (2, 1, 0)
    images_per_batch: int = 4
    device: str = "cpu"
    progress: bool = True


@dataclass
class Predictions:
    """Per-image softmax outputs: centre crop, 10-crop mean, and every crop."""

    names: list[str]
    labels: np.ndarray
    center: np.ndarray
    oversample: np.ndarray
    crops: np.ndarray = field(repr=False)

    def accuracy(self, mode: str) -> float:
        probs = self.center if mode == "center" else self.oversample
        return float(np.mean(probs.argmax(1) == self.labels)) if len(self.labels) else float("nan")


def crop_offsets(image_dims: Sequence[int], crop_dims: Sequence[int]) -> list[tuple[int, int]]:
    """Top-left corners of pycaffe's 5 crops: top-left, top-right, bottom-left, bottom-right, centre."""
    h, w = image_dims
    ch, cw = crop_dims
    corners = [(i, j) for i in (0, h - ch) for j in (0, w - cw)]
    return corners + [(int(h / 2.0 - ch / 2.0), int(w / 2.0 - cw / 2.0))]


def ten_crops(image: np.ndarray, crop_dims: Sequence[int]) -> np.ndarray:
    """(10, ch, cw, C) crops of one HxWxC image, in pycaffe's oversample order (5 crops, then their
    mirrors)."""
    ch, cw = crop_dims
    five = [image[i : i + ch, j : j + cw] for i, j in crop_offsets(image.shape[:2], crop_dims)]
    return np.stack(five + [c[:, ::-1] for c in five])


def preprocess(crops: np.ndarray, cfg: EvalConfig) -> np.ndarray:
    """(N, h, w, C) RGB crops in [0, 1] -> (N, C, h, w) float32 net input, as pycaffe's
    Transformer.preprocess."""
    x = crops.astype(np.float32).transpose(0, 3, 1, 2)
    if cfg.channel_swap is not None:
        x = x[:, list(cfg.channel_swap)]
    x = x * np.float32(cfg.raw_scale)
    if cfg.mean is not None:
        mean = np.asarray(cfg.mean, dtype=np.float32)
        if mean.ndim == 1:
            x = x - mean[None, :, None, None]
        else:  # a mean image: subtract the pixels under each crop, as Caffe's DataTransformer does
            offs = crop_offsets(cfg.image_dims, x.shape[2:])
            offs = offs + offs
            h, w = x.shape[2:]
            if mean.shape[1:] != tuple(cfg.image_dims):
                raise DataError(f"mean image shape {mean.shape} does not match image_dims {cfg.image_dims}")
            for k in range(len(x)):
                i, j = offs[k % N_CROPS]
                m = mean[:, i : i + h, j : j + w]
                x[k] -= m if k % N_CROPS < 5 else m[:, :, ::-1]
    return np.ascontiguousarray(x)


def load_resized(path: Path, image_dims: Sequence[int]) -> np.ndarray:
    """An image as pycaffe's Classifier sees it: load_image then resize_image to ``image_dims``."""
    from pixsent.caffe import io as caffe_io

    if not Path(path).is_file():
        raise DataError(f"{path}: test image not found")
    return caffe_io.resize_image(caffe_io.load_image(str(path)), tuple(image_dims))


def open_net(deploy: Path, weights: Path, device: str = "cpu"):
    """The deploy net with trained weights in TEST phase (through the pycaffe facade, as Classifier does)."""
    import pixsent.caffe as caffe

    if device.startswith("cuda"):
        caffe.set_mode_gpu()
        caffe.set_device(int(device.split(":")[1]) if ":" in device else 0)
    else:
        caffe.set_mode_cpu()
    return caffe.Net(str(deploy), caffe.TEST, weights=str(weights))


def predict_arrays(net, images: Sequence[np.ndarray], cfg: EvalConfig) -> np.ndarray:
    """(N, 10, classes) softmax outputs for already resized HxWx3 RGB images."""
    in_name = net.inputs[0]
    out_name = net.outputs[0]
    crop_dims = net.blobs[in_name].data.shape[2:]
    out = []
    for start in range(0, len(images), cfg.images_per_batch):
        chunk = images[start : start + cfg.images_per_batch]
        crops = np.concatenate([ten_crops(im, crop_dims) for im in chunk])
        probs = net.forward_all(**{in_name: preprocess(crops, cfg)})[out_name]
        out.append(np.asarray(probs).reshape(len(chunk), N_CROPS, -1))
    return np.concatenate(out) if out else np.zeros((0, N_CROPS, 0), np.float32)


def read_list(list_file: Path) -> list[tuple[str, int]]:
    """``path label`` lines of a split file (DataError naming file and line on a malformed line)."""
    return [(path, label) for _, path, label in read_list_lines(list_file)]


def read_list_lines(list_file: Path) -> list[tuple[int, str, int]]:
    """(line number, path, label) of every entry of a split file, as ``read_list`` checks them."""
    items = []
    for n, line in enumerate(Path(list_file).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{list_file}:{n}: expected 'path label', got {line!r}")
        items.append((n, parts[0], int(parts[1])))
    return items


def unreadable_images(image_root: Path, list_file: Path, entries: list[tuple[int, str, int]]) -> list[str]:
    """``LIST:LINE: ...`` for every listed image that is missing or that the evaluation's decoder (pycaffe's
    load_image) cannot read; a full decode, a few ms per image."""
    from pixsent.caffe import io as caffe_io

    bad = []
    for n, p, _ in entries:
        path = Path(image_root) / p
        if not path.is_file():
            bad.append(f"{list_file}:{n}: {p}: not found under {image_root}")
            continue
        try:
            caffe_io.load_image(str(path))
        except DataError as exc:
            bad.append(f"{list_file}:{n}: {exc}")
    return bad


def evaluate_list(
    deploy: Path, weights: Path, image_root: Path, list_file: Path, cfg: EvalConfig
) -> Predictions:
    """Centre-crop and oversampled predictions for every image of a split file.

    No image is left out: every one that is missing or cannot be decoded is named (list file, line, path)
    in one DataError before the net is opened.
    """
    from tqdm import tqdm

    entries = read_list_lines(list_file)
    bad = unreadable_images(image_root, list_file, entries)
    if bad:
        raise DataError(
            f"{list_file}: {len(bad)} test image(s) missing or unreadable: {'; '.join(bad)}; "
            "run `pixsent data fetch` (or pass MIRROR=dir) to get verified copies"
        )
    net = open_net(deploy, weights, cfg.device)
    crops = []
    bar = tqdm(total=len(entries), desc="evaluate", unit="img", disable=not cfg.progress, file=None)
    for start in range(0, len(entries), cfg.images_per_batch):
        chunk = entries[start : start + cfg.images_per_batch]
        imgs = [load_resized(Path(image_root) / p, cfg.image_dims) for _, p, _ in chunk]
        crops.append(predict_arrays(net, imgs, cfg))
        bar.update(len(chunk))
    bar.close()
    allc = np.concatenate(crops)
    return Predictions(
        names=[p for _, p, _ in entries],
        labels=np.array([lab for _, _, lab in entries], dtype=np.int64),
        center=allc[:, CENTRE_CROP],
        oversample=allc.mean(1),
        crops=allc,
    )


def save_predictions(pred: Predictions, csv_path: Path, npz_path: Path) -> None:
    """Per-image predictions as CSV (readable) and NPZ (every crop), both written atomically."""
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "label", "p_neg_center", "p_pos_center", "p_neg_oversample", "p_pos_oversample"])
    for k, name in enumerate(pred.names):
        c, o = pred.center[k], pred.oversample[k]
        w.writerow([name, int(pred.labels[k]), f"{c[0]:.6g}", f"{c[-1]:.6g}", f"{o[0]:.6g}", f"{o[-1]:.6g}"])
    tmp = csv_path.with_name(f".{csv_path.name}.tmp")
    tmp.write_text(buf.getvalue())
    tmp.replace(csv_path)
    tmp_npz = npz_path.with_name(f".{npz_path.stem}.tmp.npz")
    np.savez(
        tmp_npz,
        names=np.array(pred.names),
        labels=pred.labels,
        center=pred.center,
        oversample=pred.oversample,
        crops=pred.crops,
    )
    tmp_npz.replace(npz_path)


def load_predictions(npz_path: Path) -> Predictions:
    with np.load(npz_path) as z:
        return Predictions(list(z["names"]), z["labels"], z["center"], z["oversample"], z["crops"])


def fold_metrics(pred: Predictions) -> dict:
    """Accuracy (centre, oversampled), counts and confusion matrices of one fold."""

    def confusion(probs: np.ndarray) -> list[list[int]]:
        k = max(2, probs.shape[1])
        m = np.zeros((k, k), dtype=int)
        for t, p in zip(pred.labels, probs.argmax(1)):
            m[t, p] += 1
        return m.tolist()

    return {
        "n_images": len(pred.names),
        "n_positive": int((pred.labels == 1).sum()),
        "accuracy_center": pred.accuracy("center"),
        "accuracy_oversample": pred.accuracy("oversample"),
        "confusion_center": confusion(pred.center),
        "confusion_oversample": confusion(pred.oversample),
    }


def cv_summary(fold_results: dict[int, dict]) -> dict:
    """Mean and std (population, ddof=0; sample ddof=1 also given) of per-fold accuracies."""
    out: dict = {"folds": sorted(fold_results), "std": "population (ddof=0)"}
    for mode in ("center", "oversample"):
        accs = np.array([fold_results[k][f"accuracy_{mode}"] for k in sorted(fold_results)], dtype=float)
        out[mode] = {
            "per_fold": accs.tolist(),
            "mean": float(accs.mean()) if len(accs) else None,
            "std": float(accs.std(ddof=0)) if len(accs) else None,
            "std_sample": float(accs.std(ddof=1)) if len(accs) > 1 else None,
        }
    return out


def write_metrics(path: Path, metrics: dict) -> None:
    write_json(path, metrics)
