"""Statistics over trailing axes: Reduction (sum, |sum|, sum of squares, mean) and MVN (normalisation)."""

from __future__ import annotations

import math

import numpy as np
import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.layers.common import canonical_axis
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError

RP = caffe_pb2.ReductionParameter


@register_layer("Reduction")
class Reduction(Layer):
    """coeff * op(bottom[i, ...]) over every axis from ``axis`` on (default 0: one scalar), top shape
    bottom.shape[:axis] (reduction_layer.cpp). SUM, ASUM (sum of |x|, gradient sign(x), 0 at 0), SUMSQ
    (gradient 2x), MEAN (Caffe multiplies the sum by coeff / count in float32)."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.reduction_param
        shape = bottom_shapes[0]
        if p.operation not in (RP.SUM, RP.ASUM, RP.SUMSQ, RP.MEAN):
            raise NetError(f"layer {self.name!r}: unknown reduction operation {p.operation}")
        self.op = p.operation
        self.axis = canonical_axis(self.name, p.axis, len(shape))
        dim = math.prod(shape[self.axis :])
        coeff = np.float32(p.coeff)
        if self.op == RP.MEAN:
            coeff = coeff / np.float32(dim) if dim else coeff
        self.coeff = float(coeff)
        return [tuple(shape[: self.axis])]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0]
        flat = x.reshape(*x.shape[: self.axis], -1)
        if self.op == RP.ASUM:
            flat = flat.abs()
        elif self.op == RP.SUMSQ:
            flat = flat * flat
        out = flat.sum(dim=-1)
        return [out * self.coeff if self.coeff != 1 else out]


class _MVNFunction(torch.autograd.Function):
    """Caffe's MVN with normalize_variance on rows of a (num, dim) view: y = (x - mean) / (std + eps),
    std the biased standard deviation. mvn_layer.cpp's backward is
    dx = (dy - mean(dy) - y * mean(y * dy)) / (std + eps), which is the exact gradient only at eps = 0
    (the exact one divides the last term by std instead)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        std = (centred * centred).mean(dim=1, keepdim=True).sqrt() + eps
        y = centred / std
        ctx.save_for_backward(y, std)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        y, std = ctx.saved_tensors
        inner = dy.mean(dim=1, keepdim=True) + y * (y * dy).mean(dim=1, keepdim=True)
        return (dy - inner) / std, None


@register_layer("MVN")
class MVN(Layer):
    """Mean-variance normalisation per (item, channel), or per item with ``across_channels``: x - mean,
    divided by (std + eps) when ``normalize_variance`` (default true; eps default 1e-9 is added to the
    standard deviation, not the variance). Blobs of at most 4 axes, read as N x C x H x W."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = bottom_shapes[0]
        if len(shape) > 4:
            raise NetError(f"layer {self.name!r}: MVN reads N x C x H x W blobs, got {len(shape)} axes")
        return [shape]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        p = self.param.mvn_param
        x = bottoms[0]
        shape = tuple(x.shape) + (1,) * (4 - x.dim())
        num = shape[0] if p.across_channels else shape[0] * shape[1]
        rows = x.reshape(num, -1)
        if p.normalize_variance:
            y = _MVNFunction.apply(rows, float(np.float32(p.eps)))
        else:
            y = rows - rows.mean(dim=1, keepdim=True)
        return [y.reshape(x.shape)]
