"""Element-wise layers BVLC master added after the 1.0 release: Clip and Swish."""

from __future__ import annotations

import torch

from pixsent.engine.layers.base import Layer
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError


class _ClipFunction(torch.autograd.Function):
    """max(lo, min(x, hi)) with clip_layer.cpp's backward: dy where lo <= x <= hi (both ends included)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bounds = (lo, hi)
        return torch.clamp(torch.clamp(x, max=hi), min=lo)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        inside = (x >= lo) & (x <= hi)
        return dy * inside.to(dy.dtype), None, None


@register_layer("Clip")
class Clip(Layer):
    """clip_param min/max (both required): y = max(min, min(x, max)), so min > max gives min everywhere."""

    def setup(self, bottom_shapes):
        p = self.param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            raise NetError(f"layer {self.name!r}: Clip needs clip_param {{ min: ... max: ... }}")
        self.lo, self.hi = float(p.min), float(p.max)
        return [bottom_shapes[0]]

    def forward(self, bottoms):
        return [_ClipFunction.apply(bottoms[0], self.lo, self.hi)]


@register_layer("Swish")
class Swish(Layer):
    """x * sigmoid(beta x) (swish_param.beta, default 1); Caffe's backward is the exact derivative
    beta y + sigmoid(beta x) (1 - beta y), so autograd's matches it."""

    def forward(self, bottoms):
        x = bottoms[0]
        beta = float(self.param.swish_param.beta)
        return [x * torch.sigmoid(x * beta if beta != 1 else x)]
