"""MemoryData: batches served from arrays the user hands over (pycaffe's Net.set_input_arrays)."""

from __future__ import annotations

import numpy as np
import torch

from pixsent.engine import glog
from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.layers.guards import count_bottoms, count_tops
from pixsent.engine.registry import register_layer
from pixsent.errors import DataError, NetError


@register_layer("MemoryData")
class MemoryData(Layer):
    """Tops data (batch_size x channels x height x width) and label (batch_size) cut from the arrays
    given to ``reset``; each forward takes the next batch_size items and wraps around after the last
    (memory_data_layer.cpp). The tops are views of the arrays, not copies, as Caffe's set_cpu_data."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        count_bottoms(self.param, len(bottom_shapes), 0)
        count_tops(self.param, 2)
        p = self.param.memory_data_param
        self.batch = int(p.batch_size)
        self.item = (int(p.channels), int(p.height), int(p.width))
        if self.batch * int(np.prod(self.item)) <= 0:
            raise NetError(
                f"layer {self.name!r}: batch_size, channels, height, and width must be "
                f"specified and positive in memory_data_param"
            )
        if not hasattr(self, "_data"):
            self._data: np.ndarray | None = None
            self._labels: np.ndarray | None = None
            self.pos = 0
        return self._shapes()

    def _shapes(self) -> list[Shape]:
        return [(self.batch, *self.item), (self.batch,)]

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return self._shapes()

    def reset(self, data: np.ndarray, labels: np.ndarray) -> None:
        """Serve ``data`` (n x channels x height x width) and ``labels`` (n values) from the next forward
        on, starting at item 0 (Caffe's Reset). n must be a multiple of batch_size. float32 C-contiguous
        arrays are used in place; others are converted once."""
        data = np.ascontiguousarray(data, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.float32)
        per_item = int(np.prod(self.item))
        n = data.shape[0] if data.ndim else 0
        if n == 0 or data.size != n * per_item:
            raise DataError(
                f"layer {self.name!r}: data of shape {data.shape} does not hold n items of {self.item}"
            )
        if labels.size != n:
            raise DataError(f"layer {self.name!r}: {labels.size} labels for {n} data items")
        if n % self.batch:
            raise DataError(f"layer {self.name!r}: n = {n} must be a multiple of batch size {self.batch}")
        if self.param.HasField("transform_param"):
            glog.warning(f"{self.type} does not transform array data on Reset()", "memory_data_layer.cpp:0")
        self._data = data.reshape(n, *self.item)
        self._labels = labels.reshape(n)
        self.pos = 0

    def set_batch_size(self, batch: int) -> None:
        """Change the batch size (Caffe's set_batch_size); the next reset must hold a multiple of it."""
        if batch <= 0:
            raise NetError(f"layer {self.name!r}: batch size must be positive, got {batch}")
        self.batch = int(batch)
        if self._data is not None and self._data.shape[0] % self.batch:
            self._data = self._labels = None

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        if self._data is None or self._labels is None:
            raise NetError(
                f"layer {self.name!r}: MemoryData needs to be initialized by calling reset "
                f"(pycaffe: net.set_input_arrays)"
            )
        lo, hi = self.pos, self.pos + self.batch
        tops = [torch.from_numpy(self._data[lo:hi]), torch.from_numpy(self._labels[lo:hi])]
        self.pos = hi % self._data.shape[0]
        if self.ctx.device.type != "cpu":
            tops = [t.to(self.ctx.device) for t in tops]
        return tops
