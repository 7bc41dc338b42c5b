"""WindowData: R-CNN style batches of image windows warped to crop_size, sampled from a window file."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine import rng as caffe_rng
from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.layers.data import _Prefetcher
from pixsent.engine.layers.guards import count_bottoms, count_tops
from pixsent.engine.registry import register_layer
from pixsent.engine.transform import read_mean_file
from pixsent.errors import DataError, NetError

F32 = np.float32


@dataclass(frozen=True)
class Window:
    """One line of a window file: image index, class label, overlap and the inclusive box x1 y1 x2 y2."""

    image: int
    label: int
    overlap: float
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass
class WindowFile:
    """A parsed window file: images (path, channels, height, width) and the foreground/background windows."""

    images: list[tuple[str, int, int, int]]
    fg: list[Window]
    bg: list[Window]
    channels: int


def parse_window_file(path: str, root: str, fg_threshold: float, bg_threshold: float) -> WindowFile:
    """Read Caffe's window file: repeated blocks of ``# image_index``, image path, channels, height, width,
    the number of windows, then per window ``label overlap x1 y1 x2 y2`` (whitespace-separated tokens).

    A window with overlap >= fg_threshold is foreground (its label must be > 0); one with overlap <
    bg_threshold is background (label and overlap forced to 0); others are dropped (window_data_layer.cpp).
    """
    try:
        tokens = Path(path).read_text(encoding="utf-8").split()
    except OSError as exc:
        raise DataError(f"{path}: failed to open window file ({exc.strerror})") from None
    if len(tokens) < 2:
        raise DataError(f"{path}: window file is empty")
    images: list[tuple[str, int, int, int]] = []
    fg: list[Window] = []
    bg: list[Window] = []
    channels = 0
    pos = 0

    def take(n: int) -> list[str]:
        nonlocal pos
        if pos + n > len(tokens):
            raise DataError(f"{path}: window file ends in the middle of image block {len(images)}")
        out = tokens[pos : pos + n]
        pos += n
        return out

    try:
        while pos + 1 < len(tokens):
            tag, index = take(2)
            if tag != "#":
                raise DataError(f"{path}: expected '#' to start image block {len(images)}, got {tag!r}")
            image_path, c, h, w, count = take(5)
            channels = int(c)
            images.append((root + image_path, channels, int(h), int(w)))
            for _ in range(int(count)):
                label, overlap, x1, y1, x2, y2 = take(6)
                win = Window(int(index), int(label), float(F32(overlap)), int(x1), int(y1), int(x2), int(y2))
                if win.overlap >= fg_threshold:
                    if win.label <= 0:
                        raise DataError(
                            f"{path}: foreground window of image {index} has label {win.label} <= 0"
                        )
                    fg.append(win)
                elif win.overlap < bg_threshold:
                    bg.append(Window(win.image, 0, 0.0, win.x1, win.y1, win.x2, win.y2))
    except ValueError as exc:
        raise DataError(f"{path}: malformed window file near token {pos} ({exc})") from None
    return WindowFile(images, fg, bg, channels)


def c_round(x: np.float32) -> int:
    """C's round(): halves away from zero."""
    return int(math.copysign(math.floor(abs(float(x)) + 0.5), float(x)))


class _WindowLoader:
    """Samples and warps batches (runs on the prefetch thread); see WindowData for the draws."""

    def __init__(self, layer: WindowData, rng: caffe_rng.CaffeRng, lo: int, hi: int) -> None:
        self.layer = layer.name
        p = layer.param.window_data_param
        t = layer.param.transform_param
        self.db, self.rng, self.lo, self.hi = layer.windows, rng, lo, hi
        self.batch = int(p.batch_size)
        self.crop = int(t.crop_size)
        self.mirror = bool(t.mirror)
        self.scale = F32(p.scale)
        self.context_pad = int(p.context_pad)
        self.square = p.crop_mode == "square"
        self.fg_count = int(F32(self.batch) * F32(p.fg_fraction))
        self.mean, self.mean_values = layer.mean, layer.mean_values
        self.cache: dict[int, bytes] | None = layer.cache

    def _image(self, index: int) -> np.ndarray:
        import cv2

        if not 0 <= index < len(self.db.images):
            raise DataError(
                f"layer {self.layer!r}: window names image {index}, the file lists {len(self.db.images)}"
            )
        path = self.db.images[index][0]
        if self.cache is not None:
            img = cv2.imdecode(np.frombuffer(self.cache[index], np.uint8), cv2.IMREAD_COLOR)
        else:
            img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"layer {self.layer!r}: could not open or find file {path}")
        return img

    def _warp(self, img: np.ndarray, w: Window, mirror: bool) -> tuple[np.ndarray, int, int]:
        """The window cut out of ``img`` and resized, with its top/left padding inside the crop."""
        import cv2

        crop = self.crop
        x1, y1, x2, y2 = w.x1, w.y1, w.x2, w.y2
        size = (crop, crop)
        pad_w = pad_h = 0
        if self.context_pad > 0 or self.square:
            context_scale = F32(crop) / F32(crop - 2 * self.context_pad)
            half_h, half_w = F32((y2 - y1 + 1) / 2.0), F32((x2 - x1 + 1) / 2.0)
            cx, cy = F32(x1) + half_w, F32(y1) + half_h
            if self.square:
                half_h = half_w = max(half_h, half_w)
            x1, x2 = c_round(cx - half_w * context_scale), c_round(cx + half_w * context_scale)
            y1, y2 = c_round(cy - half_h * context_scale), c_round(cy + half_h * context_scale)
            unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
            px1, py1 = max(0, -x1), max(0, -y1)
            px2, py2 = max(0, x2 - img.shape[1] + 1), max(0, y2 - img.shape[0] + 1)
            x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
            sx, sy = F32(crop) / F32(unclipped_w), F32(crop) / F32(unclipped_h)
            width, height = c_round(F32(x2 - x1 + 1) * sx), c_round(F32(y2 - y1 + 1) * sy)
            px1, px2 = c_round(F32(px1) * sx), c_round(F32(px2) * sx)
            py1 = c_round(F32(py1) * sy)
            pad_h = py1
            pad_w = px2 if mirror else px1
            height = min(height, crop - pad_h)
            width = min(width, crop - pad_w)
            size = (width, height)
        if not (0 <= x1 <= x2 < img.shape[1] and 0 <= y1 <= y2 < img.shape[0]):
            raise DataError(
                f"layer {self.layer!r}: window ({w.x1}, {w.y1}, {w.x2}, {w.y2}) of image {w.image} "
                f"lies outside "
                f"its {img.shape[1]}x{img.shape[0]} pixels"
            )
        out = cv2.resize(img[y1 : y2 + 1, x1 : x2 + 1], size, interpolation=cv2.INTER_LINEAR)
        if mirror:
            out = out[:, ::-1]
        return out, pad_h, pad_w

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """One global batch: background windows first, then foreground; this rank's slice."""
        channels = self.db.channels
        data = np.zeros((self.hi - self.lo, channels, self.crop, self.crop), dtype=np.float32)
        labels = np.zeros((self.hi - self.lo,), dtype=np.float32)
        item = 0
        for pool, count in ((self.db.bg, self.batch - self.fg_count), (self.db.fg, self.fg_count)):
            for _ in range(count):
                w = pool[self.rng.rand() % len(pool)]
                mirror = self.mirror and bool(self.rng.rand() % 2)
                if self.lo <= item < self.hi:
                    self._fill(data[item - self.lo], w, mirror)
                    labels[item - self.lo] = w.label
                item += 1
        return data, labels

    def _fill(self, out: np.ndarray, w: Window, mirror: bool) -> None:
        img = self._image(w.image)
        if img.shape[2] != out.shape[0]:
            raise DataError(
                f"layer {self.layer!r}: image {w.image} has {img.shape[2]} channels, not {out.shape[0]}"
            )
        warped, pad_h, pad_w = self._warp(img, w, mirror)
        rows, cols = warped.shape[:2]
        pixels = warped.transpose(2, 0, 1).astype(np.float32)
        if self.mean is not None:
            off = math.trunc((self.mean.shape[2] - self.crop) / 2)
            h0, w0 = off + pad_h, off + pad_w
            if h0 < 0 or w0 < 0 or h0 + rows > self.mean.shape[1] or w0 + cols > self.mean.shape[2]:
                raise DataError(
                    f"layer {self.layer!r}: mean_file {self.mean.shape} is too small for crop_size "
                    f"{self.crop}"
                )
            pixels -= self.mean[:, h0 : h0 + rows, w0 : w0 + cols]
        elif self.mean_values is not None:
            pixels -= self.mean_values.reshape(-1, 1, 1)
        out[:, pad_h : pad_h + rows, pad_w : pad_w + cols] = pixels * self.scale


@register_layer("WindowData")
class WindowData(Layer):
    """Batches of windows warped to transform_param.crop_size (window_data_layer.cpp), labels (batch).

    Per batch: batch_size - int(batch_size * fg_fraction) background windows, then the foreground ones.
    Each window is cut (grown by context_pad pixels of the output on each side and made square with
    crop_mode "square", clipped to the image with the clipped part left zero), resized with OpenCV's
    INTER_LINEAR, mirrored when drawn, and stored as (pixel - mean) * window_data_param.scale; the mean is
    transform_param's mean_file (read at the crop's offset inside it) or mean_value.

    Random draws, in Caffe's order: at set-up Caffe takes from its global RNG the data transformer's seed
    (when mirror, or in TRAIN with a crop), the seed of the layer's own prefetch RNG, and the prefetch
    thread's seed; per window of a batch it then draws from the prefetch RNG one 32-bit number whose
    remainder picks the window from its list, and, only with ``mirror``, one more whose parity decides
    the flip. pixsent makes the same draws from the net's Caffe generator and a forked sampler
    (engine/rng.py), so windows and flips are Caffe's. Its position is not saved for an exact resume.
    """

    prefetch_count = 4

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        if getattr(self, "_prefetcher", None) is not None:
            return list(self._shapes)
        count_bottoms(self.param, len(bottom_shapes), 0)
        count_tops(self.param, 2)
        p = self.param.window_data_param
        t = self.param.transform_param
        batch = int(p.batch_size)
        if batch <= 0:
            raise NetError(f"layer {self.name!r}: window_data_param.batch_size must be positive")
        if t.crop_size <= 0:
            raise NetError(f"layer {self.name!r}: WindowData needs transform_param.crop_size > 0")
        self.windows = parse_window_file(
            p.source, p.root_folder, float(F32(p.fg_threshold)), float(F32(p.bg_threshold))
        )
        fg_count = int(F32(batch) * F32(p.fg_fraction))
        if fg_count and not self.windows.fg or batch - fg_count and not self.windows.bg:
            raise DataError(
                f"{p.source}: no {'foreground' if fg_count and not self.windows.fg else 'background'} "
                f"windows to "
                f"sample (layer {self.name!r})"
            )
        self.mean = self.mean_values = None
        channels = self.windows.channels
        if t.mean_file and t.mean_value:
            raise NetError(f"layer {self.name!r}: cannot specify mean_file and mean_value at the same time")
        if t.mean_file:
            self.mean = read_mean_file(t.mean_file, self.name)
        elif t.mean_value:
            values = np.asarray(t.mean_value, dtype=np.float32)
            if values.size not in (1, channels):
                raise NetError(
                    f"layer {self.name!r}: specify either 1 mean_value or as many as channels: {channels}"
                )
            self.mean_values = np.broadcast_to(values, (channels,)).copy()
        self.cache = None
        if p.cache_images:
            self.cache = {}
            for i, (path, *_) in enumerate(self.windows.images):
                try:
                    self.cache[i] = Path(path).read_bytes()
                except OSError:
                    raise DataError(f"layer {self.name!r}: could not open or find file {path}") from None
        world, rank = self.ctx.world_size, self.ctx.rank
        if batch % world:
            raise NetError(f"layer {self.name!r}: batch_size {batch} does not divide among {world} ranks")
        lo, hi = rank * batch // world, (rank + 1) * batch // world
        # draws from the net's Caffe generator in Caffe's order: the base data layer's transformer seed
        # (twice, when mirror or a TRAIN crop make it random; WindowData never uses it), the window
        # sampler's own seed (DataLayerSetUp), then the prefetch thread's
        main = self.ctx.rng
        random_transform = bool(t.mirror) or (self.phase == caffe_pb2.TRAIN and bool(t.crop_size))
        if random_transform:
            main.rand()
        sampler = caffe_rng.fork(main)
        if random_transform:
            main.rand()
        main.rand()
        loader = _WindowLoader(self, sampler, lo, hi)
        self._shapes = [(hi - lo, channels, int(t.crop_size), int(t.crop_size)), (hi - lo,)]
        self._prefetcher = _Prefetcher(loader, self.prefetch_count, self.name)
        return list(self._shapes)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return list(self._shapes)

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        data, labels = self._prefetcher.get()
        return [torch.from_numpy(data).to(self.ctx.device), torch.from_numpy(labels).to(self.ctx.device)]

    def close(self) -> None:
        """Stop the prefetch thread."""
        pf = getattr(self, "_prefetcher", None)
        if pf is not None:
            pf.stop()
            pf.thread.join(timeout=5)

    def __del__(self) -> None:
        pf = getattr(self, "_prefetcher", None)
        if pf is not None:
            pf.stop()
