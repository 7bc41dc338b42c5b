"""Data layers: Input and DummyData here; Data (LMDB) and ImageData in data_sources.py."""

from __future__ import annotations

import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.fillers import fill
from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError


@register_layer("Input")
class Input(Layer):
    """Tops the user writes (net.blobs[...].data); one input_param shape for all tops or one per top."""

    owns_tops = True

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shapes = [tuple(int(d) for d in s.dim) for s in self.param.input_param.shape]
        ntop = len(self.param.top)
        if len(shapes) == 1:
            shapes *= ntop
        if len(shapes) != ntop:
            raise NetError(f"layer {self.name!r}: {len(shapes)} input shapes for {ntop} tops")
        return shapes

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return [b.shape for b in self.top_blobs]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        return [b.tensor for b in self.top_blobs]


@register_layer("DummyData")
class DummyData(Layer):
    """Tops filled by data_filler(s) (default constant 0); refilled every forward unless all are constant."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.dummy_data_param
        ntop = len(self.param.top)
        if p.shape:
            shapes = [tuple(int(d) for d in s.dim) for s in p.shape]
        else:
            n = len(p.num)
            shapes = [(p.num[i], p.channels[i], p.height[i], p.width[i]) for i in range(n)]
        if len(shapes) == 1:
            shapes *= ntop
        if len(shapes) != ntop:
            raise NetError(f"layer {self.name!r}: {len(shapes)} shapes for {ntop} tops")
        fillers = list(p.data_filler) or [caffe_pb2.FillerParameter(type="constant")]
        if len(fillers) == 1:
            fillers *= ntop
        if len(fillers) != ntop:
            raise NetError(f"layer {self.name!r}: {len(fillers)} data_fillers for {ntop} tops")
        self.shapes, self.fillers = shapes, fillers
        self.refill = any(f.type != "constant" for f in fillers)
        self._cache: list[torch.Tensor] | None = None
        return shapes

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return list(self.shapes)

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        if self._cache is None or self.refill:
            self._cache = [
                fill(s, f, self.ctx.generator).to(self.ctx.device) for s, f in zip(self.shapes, self.fillers)
            ]
        return list(self._cache)
