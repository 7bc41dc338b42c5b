"""Batched extraction of layer outputs into memory-mapped float32 ``.npy`` caches (for the layer probes).

Each image is read with OpenCV (BGR, as Caffe's convert_imageset does), resized to 256x256 (bilinear),
centre-cropped to the net's input size and the mean subtracted (a mean image cropped at the same offset,
as Caffe's TEST-phase Data layer does, or per-channel values): the input the fine-tuned net saw at test time.
Every requested blob is appended batch by batch to ``<cache>/<layer>.npy`` (plain writes, nothing kept
mapped) and read back memory-mapped, so conv1 for 880 images (~1 GB) is never held in memory; the files are
built under a temporary name and renamed when complete, and a finished cache with the same key is reused.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixsent.errors import DataError

#: batch (N, C, H, W) float32 -> {blob name: (N, ...) array}
ForwardFn = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class CropConfig:
    """How an image becomes the net input: resize to `resize`, centre crop `crop`, subtract `mean` (BGR)."""

    resize: int = 256
    crop: int = 227
    mean: np.ndarray | None = None  # (3,) per channel or (3, resize, resize) mean image


def centre_offset(size: int, crop: int) -> int:
    """Caffe's TEST-phase crop offset: (size - crop) / 2 rounded down."""
    return (size - crop) // 2


def load_crop(path: str | Path, cfg: CropConfig) -> np.ndarray:
    """(3, crop, crop) float32 BGR input of one image file (mean subtracted)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: cannot read image")
    img = cv2.resize(img, (cfg.resize, cfg.resize), interpolation=cv2.INTER_LINEAR)
    off = centre_offset(cfg.resize, cfg.crop)
    x = img[off : off + cfg.crop, off : off + cfg.crop].transpose(2, 0, 1).astype(np.float32)
    if cfg.mean is not None:
        mean = np.asarray(cfg.mean, dtype=np.float32)
        if mean.ndim == 1:
            x -= mean[:, None, None]
        else:
            if mean.shape[1:] != (cfg.resize, cfg.resize):
                raise DataError(
                    f"mean image of shape {mean.shape} does not fit {cfg.resize}x{cfg.resize} images"
                )
            x -= mean[:, off : off + cfg.crop, off : off + cfg.crop]
    return x


def cache_key(model: str | Path, weights: str | Path, images: Sequence[str | Path], cfg: CropConfig) -> str:
    """A digest of what determines the features: net, weights (size and mtime), image list and crop."""
    h = hashlib.sha256()
    for p in (model, weights):
        st = Path(p).stat()
        h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    for p in images:
        h.update(f"{p}\n".encode())
    h.update(f"{cfg.resize}|{cfg.crop}\n".encode())
    if cfg.mean is not None:
        h.update(np.ascontiguousarray(cfg.mean, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


@dataclass
class FeatureCache:
    """Memory-mapped (n_images, n_features) float32 arrays, one per layer, and each layer's blob shape."""

    folder: Path
    layers: list[str]
    shapes: dict[str, tuple[int, ...]]

    def __getitem__(self, layer: str) -> np.ndarray:
        return np.load(self.folder / npy_name(layer), mmap_mode="r")


class NpyRowWriter:
    """A float32 (n, d) ``.npy`` file written block of rows after block with plain writes, in order.

    Unlike filling an ``open_memmap``, no page of the file stays mapped into the process, so writing
    conv1's ~1 GB for 880 images adds nothing to the resident set (the OS page cache holds it).
    """

    def __init__(self, path: Path, n: int, d: int) -> None:
        self.path, self.n, self.d, self.rows = path, n, d, 0
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        header = {"descr": np.dtype("<f4").str, "fortran_order": False, "shape": (n, d)}
        np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, block: np.ndarray) -> None:
        """Append rows (k, d) (cast to little-endian float32)."""
        block = np.ascontiguousarray(block, dtype="<f4").reshape(len(block), self.d)
        if self.rows + len(block) > self.n:
            raise DataError(f"{self.path}: more than {self.n} rows written")
        try:
            self.file.write(memoryview(block).cast("B"))
        except OSError as exc:  # a full disk says nothing of which file: name it
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        self.rows += len(block)

    def close(self) -> None:
        """Close the file; it must hold exactly n rows."""
        self.file.close()
        if self.rows != self.n:
            raise DataError(f"{self.path}: {self.rows} rows written, {self.n} expected")


def check_space(folder: Path, need: int) -> None:
    """Refuse to start a cache that the disk cannot hold, before minutes of extraction are spent on it."""
    import shutil

    free = shutil.disk_usage(folder).free
    if need > free:
        raise DataError(
            f"{folder}: the features need {need / 2**30:.1f} GiB and the disk has {free / 2**30:.1f} GiB "
            "free (give --cache on a larger disk, or fewer --layers)"
        )


def npy_name(layer: str) -> str:
    """The cache file of a blob: its name %-quoted, so that SqueezeNet's ``fire2/concat`` stays one file."""
    from urllib.parse import quote

    return f"{quote(layer, safe='')}.npy"


def _meta_path(folder: Path) -> Path:
    return folder / "features.json"


def load_cache(folder: str | Path, layers: Sequence[str], n: int) -> FeatureCache | None:
    """The cache in ``folder`` if it is complete for these layers and ``n`` images, else None."""
    folder = Path(folder)
    try:
        meta = json.loads(_meta_path(folder).read_text())
    except (OSError, ValueError):
        return None
    if meta.get("n") != n or not set(layers) <= set(meta.get("layers", [])):
        return None
    if not all((folder / npy_name(layer)).is_file() for layer in layers):
        return None
    shapes = {k: tuple(v) for k, v in meta["shapes"].items()}
    return FeatureCache(folder, list(layers), shapes)


def extract(
    forward: ForwardFn,
    images: Sequence[str | Path],
    layers: Sequence[str],
    folder: str | Path,
    cfg: CropConfig,
    batch: int = 16,
    progress: bool = True,
) -> FeatureCache:
    """Run ``forward`` on every image in batches and store each layer's flattened outputs in ``folder``."""
    from tqdm import tqdm

    folder = Path(folder)
    cached = load_cache(folder, layers, len(images))
    if cached is not None:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    writers: dict[str, NpyRowWriter] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    tmp = {layer: folder / f".{npy_name(layer)}.tmp" for layer in layers}
    try:
        with tqdm(total=len(images), desc=f"features {folder.name}", unit="img", disable=not progress) as bar:
            for start in range(0, len(images), batch):
                paths = images[start : start + batch]
                x = np.stack([load_crop(p, cfg) for p in paths])
                outs = forward(x)
                for layer in layers:
                    if layer not in outs:
                        raise DataError(f"blob {layer!r} is not produced by the net")
                if not writers:  # the first batch gives every layer's width: the whole cache's size
                    shapes = {layer: tuple(int(d) for d in np.shape(outs[layer])[1:]) for layer in layers}
                    check_space(folder, 4 * len(images) * sum(math.prod(shape) for shape in shapes.values()))
                    for layer in layers:
                        writers[layer] = NpyRowWriter(tmp[layer], len(images), math.prod(shapes[layer]))
                for layer in layers:
                    writers[layer].write(np.asarray(outs[layer], dtype=np.float32).reshape(len(paths), -1))
                bar.update(len(paths))
        for layer in layers:
            writers.pop(layer).close()
            tmp[layer].replace(folder / npy_name(layer))
    except BaseException:
        for w in writers.values():
            w.file.close()
        for p in tmp.values():
            p.unlink(missing_ok=True)
        raise
    meta = {"n": len(images), "layers": list(layers), "shapes": shapes, "images": [str(p) for p in images]}
    from pixsent.formats.atomic import atomic_write_text

    atomic_write_text(_meta_path(folder), json.dumps(meta, indent=1))
    return FeatureCache(folder, list(layers), shapes)


def resolve_blobs(layers: Sequence[str], blobs: Sequence[str], model: str | Path) -> dict[str, str]:
    """Requested name -> the net's blob: the same name, else the one blob named ``<name>_...``.

    Table 3 names the last layer fc8, while a fine-tuned deploy net calls it e.g. ``fc8_twitter``.
    """
    out: dict[str, str] = {}
    for layer in layers:
        if layer in blobs:
            out[layer] = layer
            continue
        near = [b for b in blobs if b.startswith(f"{layer}_")]
        if len(near) != 1:
            raise DataError(
                f"{model}: no blob named {layer}"
                + (f" (several named {layer}_*: {', '.join(near)})" if near else "")
                + f" (blobs: {', '.join(blobs)})"
            )
        out[layer] = near[0]
    return out


def net_forward(
    model: str | Path, weights: str | Path, layers: Sequence[str], device: str = "cpu"
) -> ForwardFn:
    """A ForwardFn over the deploy net with trained weights (TEST phase), through the pycaffe facade."""
    import pixsent.caffe as caffe

    if device.startswith("cuda"):
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    net = caffe.Net(str(model), caffe.TEST, weights=str(weights))
    in_name = net.inputs[0]
    names = resolve_blobs(layers, list(net.blobs), model)

    def forward(x: np.ndarray) -> dict[str, np.ndarray]:
        # the net takes the batch as it comes (no zero-padding to the prototxt's batch of 10)
        if net.blobs[in_name].data.shape != x.shape:
            net.blobs[in_name].reshape(*x.shape)
            net.reshape()
        out = net.forward(blobs=list(names.values()), **{in_name: x})
        return {layer: np.array(out[blob], copy=True) for layer, blob in names.items()}

    return forward


def net_input_size(model: str | Path) -> int:
    """The spatial input size of a deploy net (its first Input layer or legacy input_dim)."""
    from pixsent.analysis.surgery import deploy_layers, read_net

    for layer in deploy_layers(read_net(model)):
        if layer.type == "Input":
            return int(layer.input_param.shape[0].dim[-1])
    raise DataError(f"{model}: no Input layer or input_dim")
