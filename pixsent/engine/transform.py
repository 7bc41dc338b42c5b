"""Caffe's DataTransformer: crop, mirror, mean subtraction and scale of one C x H x W image, in float32.

Per image (data_transformer.cpp): the mirror coin is drawn first (only when ``mirror: true``), then in
TRAIN the crop offsets h then w; TEST crops the centre ((H - crop) // 2). Each draw is Caffe's ``Rand(n)``:
one raw 32-bit output of the transformer's own mt19937 modulo n. That generator exists only when something
is random (``mirror``, or a TRAIN crop); Caffe seeds it from the layer's generator (see layers/data.py).
Each output value is (pixel - mean) * scale in float32, the mean being the mean image's pixel at the
same (uncropped, unmirrored) position, or the per-channel mean_value (one value applies to every channel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.rng import CaffeRng
from pixsent.errors import DataError, PixsentError


def read_mean_file(mean_file: str, layer: str) -> np.ndarray:
    """A transform_param.mean_file as a contiguous float32 mean image; errors name the layer."""
    from pixsent.formats.binaryproto import read_mean

    try:
        return np.ascontiguousarray(read_mean(mean_file), dtype=np.float32)
    except PixsentError as exc:
        raise DataError(f"layer {layer!r}: transform_param.mean_file: {exc}") from None


@dataclass(frozen=True)
class TransformDraw:
    """The random choices for one image: crop offsets and whether to mirror."""

    h_off: int
    w_off: int
    mirror: bool


class DataTransformer:
    """Applies a TransformationParameter to uint8 (or float) C x H x W arrays."""

    def __init__(
        self, param: caffe_pb2.TransformationParameter, phase: int, rng: CaffeRng | None, layer: str = ""
    ) -> None:
        self.param = param
        self.train = phase == caffe_pb2.TRAIN
        self.rng = rng
        self.layer = layer
        self.scale = np.float32(param.scale)
        self.crop = int(param.crop_size)
        self.mean: np.ndarray | None = None
        self.mean_file = ""
        self.mean_values: np.ndarray | None = None
        if param.mean_file and param.mean_value:
            raise DataError(f"layer {layer!r}: specify mean_file or mean_value, not both")
        if param.mean_file:
            self.mean = read_mean_file(param.mean_file, layer)
            self.mean_file = str(param.mean_file)
        elif param.mean_value:
            self.mean_values = np.asarray(param.mean_value, dtype=np.float32)

    @staticmethod
    def needs_rand(param: caffe_pb2.TransformationParameter, phase: int) -> bool:
        """Caffe's InitRand test: a generator is made only for ``mirror`` or a TRAIN-phase crop."""
        return bool(param.mirror) or (phase == caffe_pb2.TRAIN and bool(param.crop_size))

    def out_shape(self, c: int, h: int, w: int) -> tuple[int, int, int]:
        """Shape of a transformed C x H x W image."""
        return (c, self.crop, self.crop) if self.crop else (c, h, w)

    def draw(self, h: int, w: int) -> TransformDraw:
        """Random (TRAIN) or centred (TEST) crop offsets and the mirror coin, in Caffe's draw order."""
        if self.crop and (h < self.crop or w < self.crop):
            raise DataError(f"layer {self.layer!r}: crop_size {self.crop} larger than the image {h}x{w}")
        rng = self.rng
        mirror = bool(self.param.mirror) and bool(rng.rand() % 2)
        if not self.crop:
            return TransformDraw(0, 0, mirror)
        if self.train:
            h_off = rng.rand() % (h - self.crop + 1)
            return TransformDraw(h_off, rng.rand() % (w - self.crop + 1), mirror)
        return TransformDraw((h - self.crop) // 2, (w - self.crop) // 2, mirror)

    def apply(self, image: np.ndarray, d: TransformDraw, out: np.ndarray | None = None) -> np.ndarray:
        """(image - mean) * scale over the crop, mirrored when drawn; float32 C x H' x W'."""
        c, h, w = image.shape
        ch, cw = (self.crop, self.crop) if self.crop else (h, w)
        window = (slice(None), slice(d.h_off, d.h_off + ch), slice(d.w_off, d.w_off + cw))
        x = image[window].astype(np.float32)
        if self.mean is not None:
            if self.mean.shape != image.shape:
                raise DataError(
                    f"layer {self.layer!r}: mean_file {self.mean_file!r} shape {self.mean.shape} "
                    f"differs from the data {image.shape}"
                )
            x -= self.mean[window]
        elif self.mean_values is not None:
            mv = self.mean_values
            if mv.size not in (1, c):
                raise DataError(f"layer {self.layer!r}: {mv.size} mean_values for {c} channels")
            x -= mv.reshape(-1, 1, 1) if mv.size == c else mv[0]
        if self.scale != 1:
            x *= self.scale
        if d.mirror:
            x = x[:, :, ::-1]
        if out is not None:
            out[...] = x
            return out
        return np.ascontiguousarray(x)
