"""Sentiment maps (the paper's Figure 7): the fully convolutional net's softmax over a grid of locations.

Input preparation follows the authors' own generate_sentiment_maps.py: ``caffe.io.load_image`` (RGB in
[0, 1]), then ``caffe.io.Transformer.preprocess`` to the net's size x size input, i.e. pixsent's
scikit-image-exact ``caffe.io.resize_image`` straight to 451x451 (no 256 step, no crop), HWC -> CHW, RGB ->
BGR, x255, minus the per-channel mean. A 451x451 input gives an 8x8 map for CaffeNet. The overlay resizes
the map to the image with nearest neighbour, puts P(positive)*255 in green and P(negative)*255 in red (blue 0)
and blends it 50/50 with the image. The global prediction of an image is the mean of its map's P(positive)
over all locations (positive when > 0.5): the fully convolutional net alone, no second forward pass.

A net that is fully convolutional already (SqueezeNet fine-tuned: conv_final_twitter -> ReLU -> global
average pool_final) is mapped at its own input size by default (227: the scale it was trained at), from
the score blob before the global pooling: softmax over the two channels at each location, the cells that
see only the classifier's zero padding left out (surgery.ScoreMap.border). Its global prediction is the
net's own: softmax of the globally pooled scores, i.e. exactly its ``prob`` output for that input.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixsent.analysis import surgery as surg
from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import DataError, NetError
from pixsent.formats.caffemodel import read_caffemodel, write_caffemodel
from pixsent.formats.prototxt import read_net, write_prototxt

#: Class indices of the paper's two-output heads (labels: 1 positive, 0 negative).
POSITIVE, NEGATIVE = 1, 0


@dataclass
class MapConfig:
    """The map net's input size, the BGR per-channel mean and the class indices of the two sentiments."""

    size: int | None = 451  # None: 451 for nets with fc layers (the paper's), the net's own for a score map
    mean: np.ndarray | None = None  # (3,) BGR; the ILSVRC mean's channel means when None
    positive: int = POSITIVE
    negative: int = NEGATIVE
    device: str = "cpu"
    work_dir: Path | None = field(default=None)


def default_mean() -> np.ndarray:
    """Per-channel BGR means of the ILSVRC 2012 mean image (≈ 104.0, 116.7, 122.7)."""
    return np.array([104.00698793, 116.66876762, 122.67891434], dtype=np.float64)


def net_from_caffemodel(weights: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """The net definition stored inside a caffemodel (pycaffe's ``net.save`` keeps every layer's params)."""
    from pixsent.formats.upgrade import upgrade_net

    net = caffe_pb2.NetParameter()
    net.CopyFrom(weights)
    for layer in net.layer:
        layer.ClearField("blobs")
        layer.ClearField("phase")
    for layer in net.layers:
        layer.ClearField("blobs")
    net = upgrade_net(net, "<caffemodel>")
    if not len(net.layer):
        raise NetError("the caffemodel holds no layers to rebuild its net from: give --model")
    return net


def _with_input(net: caffe_pb2.NetParameter, size: int) -> caffe_pb2.NetParameter:
    """A net whose Input is 1 x 3 x size x size (legacy `input` without dims gets one)."""
    if len(net.input) and not len(net.input_dim) and not len(net.input_shape):
        net = caffe_pb2.NetParameter.FromString(net.SerializeToString())
        net.input_shape.add().dim.extend([1, 3, size, size])
    return net


def _input_size(net: caffe_pb2.NetParameter) -> int | None:
    """The spatial size of a deploy net's Input (None when it has none)."""
    for layer in surg.deploy_layers(net):
        if layer.type == "Input" and len(layer.input_param.shape):
            return int(layer.input_param.shape[0].dim[-1])
    return None


@dataclass
class MapNet:
    """A fully convolutional net ready to map images: its prototxt, caffemodel and the opened net.

    ``head`` is set for a net that was fully convolutional already (its score map before global pooling).
    """

    prototxt: Path
    caffemodel: Path
    net: object
    cfg: MapConfig
    head: surg.ScoreMap | None = None
    border: int = 0  # cells per side left out of the drawn map (zero padding only), surgery nets

    @classmethod
    def open(cls, weights: str | Path, model: str | Path | None, cfg: MapConfig) -> MapNet:
        """Open a fully convolutional caffemodel, cut a convolutional classifier's net before its global
        pooling, or do the surgery on the fly for a model with fc layers."""
        import pixsent.caffe as caffe

        work = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="pixsent-maps-"))
        stored = read_caffemodel(weights)
        net = read_net(model) if model else net_from_caffemodel(stored)
        net = _with_input(net, cfg.size or 451)
        stem = Path(weights).stem
        head = surg.score_map(net)
        border = 0
        if head is not None:
            size = cfg.size or _input_size(net)
            proto = work / f"{stem}_scoremap_{size}.prototxt"
            write_prototxt(surg.score_map_net(net, head, size=size), proto)
            caffemodel = Path(weights)
        elif surg.is_fully_convolutional(net):
            full = surg.fully_convolutional(net, size=cfg.size or 451)  # only resizes the input
            proto = work / f"{stem}_{cfg.size or 451}.prototxt"
            write_prototxt(full.net, proto)
            caffemodel = Path(weights)
        else:
            full = surg.fully_convolutional(net, size=cfg.size or 451)
            border = full.border
            proto = work / f"{stem}_fullconv.prototxt"
            caffemodel = work / f"{stem}_conv.caffemodel"
            write_prototxt(full.net, proto)
            write_caffemodel(surg.convert_weights(full, stored, str(weights)), caffemodel)
        if cfg.device.startswith("cuda"):
            caffe.set_mode_gpu()
        else:
            caffe.set_mode_cpu()
        opened = caffe.Net(str(proto), caffe.TEST, weights=str(caffemodel))
        return cls(proto, caffemodel, opened, cfg, head, border)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """(3, size, size) net input of an RGB [0, 1] image, made as pycaffe's Transformer does."""
        from pixsent.caffe import io as caffe_io

        name = self.net.inputs[0]
        t = caffe_io.Transformer({name: self.net.blobs[name].data.shape})
        t.set_transpose(name, (2, 0, 1))
        t.set_channel_swap(name, (2, 1, 0))
        t.set_raw_scale(name, 255.0)
        t.set_mean(name, np.asarray(self.cfg.mean if self.cfg.mean is not None else default_mean()))
        return t.preprocess(name, image)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((classes, h, w) softmax map, (classes,) image-level probabilities) of one prepared input.

        The image-level answer is the net's own for a score-map net (softmax of the pooled scores), and the
        mean of the map over its locations for a net made fully convolutional by surgery.
        """
        name = self.net.inputs[0]
        extra = [self.head.blob] if self.head else []
        out = self.net.forward_all(blobs=extra, **{name: x[None]})
        prob = np.asarray(out[self.net.outputs[0]])[0]
        if prob.ndim != 3:
            raise NetError(f"{self.prototxt}: output has shape {prob.shape}, a (classes, h, w) map expected")
        if self.head is None:
            image_level = prob.reshape(prob.shape[0], -1).mean(1)
            b = self.border
            if b and min(prob.shape[1:]) > 2 * b:
                prob = prob[:, b:-b, b:-b]  # drawn without the padding ring; the answer keeps every cell
            return prob, image_level
        scores = np.asarray(out[self.head.blob], dtype=np.float64)[0]
        flat = scores.reshape(scores.shape[0], -1)
        pooled = flat.max(1) if self.head.pool_method == caffe_pb2.PoolingParameter.MAX else flat.mean(1)
        e = np.exp(pooled - pooled.max())
        b = self.head.border
        if b and min(prob.shape[1:]) > 2 * b:
            prob = prob[:, b:-b, b:-b]
        return prob, e / e.sum()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(classes, h, w) softmax map of one prepared (3, size, size) input."""
        return self.predict(x)[0]

    def map_image(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """(RGB image in [0, 1], probability map) of one image file."""
        image, prob, _ = self.map_image_global(path)
        return image, prob

    def map_image_global(self, path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(RGB image in [0, 1], probability map, image-level class probabilities) of one image file."""
        from pixsent.caffe import io as caffe_io

        if not Path(path).is_file():
            raise DataError(f"{path}: image not found")
        image = caffe_io.load_image(str(path))
        return (image, *self.predict(self.prepare(image)))


def overlay(
    image: np.ndarray, prob: np.ndarray, positive: int = POSITIVE, negative: int = NEGATIVE
) -> np.ndarray:
    """H x W x 3 uint8 RGB: the map (nearest neighbour to the image size) blended 50/50 with the image.

    Colour of the map: red = P(negative) * 255, green = P(positive) * 255, blue = 0.
    """
    import cv2

    img = np.asarray(image, dtype=np.float64)
    if img.max() <= 1.0:
        img = img * 255.0
    h, w = img.shape[:2]
    pos = cv2.resize(prob[positive].astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    neg = cv2.resize(prob[negative].astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    colour = np.stack([neg * 255.0, pos * 255.0, np.zeros_like(pos)], axis=-1)
    return np.clip(np.rint(0.5 * img + 0.5 * colour), 0, 255).astype(np.uint8)


def global_positive(prob: np.ndarray, positive: int = POSITIVE) -> float:
    """The image-level P(positive): the mean over the map's locations."""
    return float(np.mean(prob[positive]))


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG, atomically."""
    import cv2

    from pixsent.formats.atomic import atomic_write_bytes

    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise DataError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, data.tobytes())


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """np.save, atomically."""
    import io

    from pixsent.formats.atomic import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


@dataclass
class MapItem:
    """One mapped image for the grid figure."""

    name: str
    image: np.ndarray
    overlay: np.ndarray
    p_positive: float
    truth: int | None = None  # the image's label where known (1 positive, 0 negative)


def verdict(p_positive: float, tie: float = 5e-4) -> str:
    """'positive' above 0.5, 'negative' below, 'tie' within ``tie`` of it (a net whose scores are all equal,
    e.g. a ReLU'd classifier dead on the image, answers exactly 0.5)."""
    if abs(p_positive - 0.5) < tie:
        return "tie"
    return "positive" if p_positive > 0.5 else "negative"


def _short(name: str, width: int = 16) -> str:
    """A file stem short enough for a subplot title (its end, where Twitter names keep the media key)."""
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def pick_test_images(
    test_list: str | Path, images: str | Path, count: int, exclude: Sequence[str] = ()
) -> list[Path]:
    """``count`` images of an ``image label`` list in list order, half of each sentiment (label 1 positive)
    where the list has enough, so a figure shows both kinds; names in ``exclude`` are passed over."""
    from pixsent.analysis.probes import read_split_list

    items = [(name, label) for name, label in read_split_list(Path(test_list)) if name not in set(exclude)]
    positive = [name for name, label in items if label == POSITIVE]
    negative = [name for name, label in items if label != POSITIVE]
    n_pos = min(len(positive), max(count - len(negative), (count + 1) // 2))
    chosen = set(positive[:n_pos] + negative[: count - n_pos])
    return [Path(images) / name for name, _ in items if name in chosen]


def grid_figure(
    items: Sequence[MapItem], path: str | Path, columns: int = 2, title: str | None = None
) -> None:
    """A PNG with, per image, the image (and its label) and its overlay framed by the net's answer: green
    positive, red negative, grey a tie."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pixsent.formats.atomic import atomic_path

    if not items:
        raise DataError("no images to put in the grid figure")
    per_row = max(1, columns)
    rows = (len(items) + per_row - 1) // per_row
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(4.2 * per_row, 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, item in enumerate(items):
        r, c = divmod(k, per_row)
        a_img, a_map = axes[r][2 * c], axes[r][2 * c + 1]
        a_img.imshow(item.image)
        truth = "" if item.truth is None else f" (label {'positive' if item.truth else 'negative'})"
        a_img.set_title(_short(item.name) + truth, fontsize=8)
        a_map.imshow(item.overlay)
        answer = verdict(item.p_positive)
        colour = {"positive": "#00b000", "negative": "#d00000"}.get(answer, "#808080")
        a_map.set_title(f"{answer} P+={item.p_positive:.2f}", fontsize=8, color=colour)
        a_map.axis("on")
        a_map.set_xticks([])
        a_map.set_yticks([])
        for spine in a_map.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(4)
    fig.suptitle(title or "Sentiment maps: green = P(positive), red = P(negative)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run_maps(
    images: Sequence[str | Path],
    weights: str | Path,
    model: str | Path | None,
    out_dir: str | Path,
    cfg: MapConfig,
    grid: str | Path | None = None,
    progress: bool = True,
    title: str | None = None,
    labels: dict[str, int] | None = None,
) -> list[MapItem]:
    """Map every image: ``<stem>_map.npy`` and ``<stem>_overlay.png`` in out_dir, and the grid figure.

    Missing images are all named before the net is opened; an image that cannot be decoded is named too,
    after the others are mapped (DataError listing every one)."""
    from tqdm import tqdm

    images = list(images)
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise DataError(f"{len(missing)} image(s) not found: " + "; ".join(missing))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.work_dir is None:
        cfg.work_dir = out_dir
    net = MapNet.open(weights, model, cfg)
    items = []
    unreadable = []
    for path in tqdm(images, desc="maps", unit="img", disable=not progress):
        try:
            image, prob, overall = net.map_image_global(path)
        except DataError as exc:
            unreadable.append(str(exc))
            continue
        stem = Path(path).stem
        save_npy(out_dir / f"{stem}_map.npy", prob.astype(np.float32))
        over = overlay(image, prob, cfg.positive, cfg.negative)
        save_png(out_dir / f"{stem}_overlay.png", over)
        truth = (labels or {}).get(Path(path).name)
        items.append(MapItem(stem, (image * 255).astype(np.uint8), over, float(overall[cfg.positive]), truth))
    if grid and (items or not unreadable):
        grid_figure(items, grid, title=title)
    if unreadable:
        raise DataError(f"{len(unreadable)} image(s) unreadable: " + "; ".join(unreadable))
    return items
