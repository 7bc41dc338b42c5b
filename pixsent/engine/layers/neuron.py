"""Element-wise (neuron) layers: ReLU, PReLU, Sigmoid, TanH, Dropout, Power, AbsVal, Exp, Log, BNLL, ELU,
Threshold. They keep the bottom's shape and may run in place (top named like bottom)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.fastpath import FAST
from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError


class _Elementwise(Layer):
    """A layer applying ``fn`` to its single bottom."""

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.fn(bottoms[0])]


@register_layer("ReLU")
class ReLU(_Elementwise):
    """max(x, 0) + negative_slope * min(x, 0); the gradient at exactly 0 is the negative side's, as Caffe.

    ``inplace`` is set by the Net when the layer is in place (top named like bottom) and overwriting the
    bottom tensor is safe: a fresh tensor nothing else has read or saved, and no blob diffs are kept.
    """

    inplace = False
    #: set by the Net when the MAX pooling reading this in-place top applies the gradient mask (fastpath
    #: fold_relu_pool): the values are clamped outside autograd
    fold = False

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        slope = float(self.param.relu_param.negative_slope)
        if self.fold and self.inplace and FAST.inplace_relu and slope == 0:
            with torch.no_grad():
                x.relu_()
            return x
        if self.inplace and FAST.inplace_relu:
            return F.relu_(x) if slope == 0 else F.leaky_relu_(x, slope)
        return F.relu(x) if slope == 0 else F.leaky_relu(x, slope)


@register_layer("PReLU")
class PReLU(Layer):
    """ReLU with a learned negative slope per channel (one when channel_shared; filler default 0.25)."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.prelu_param
        shape = bottom_shapes[0]
        if len(shape) < 2:
            raise NetError(f"layer {self.name!r}: PReLU needs at least 2 axes, got {shape}")
        self.shared = bool(p.channel_shared)
        if not self.blobs:
            filler = caffe_pb2.FillerParameter(type="constant", value=0.25)
            if p.HasField("filler"):
                filler = p.filler
            self.blobs.append(self.make_param(() if self.shared else (shape[1],), filler))
        return [shape]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0]
        a = self.blobs[0]
        if not self.shared:
            a = a.reshape((1, -1) + (1,) * (x.dim() - 2))
        return [torch.clamp(x, min=0) + a * torch.clamp(x, max=0)]


@register_layer("Sigmoid")
class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x))."""

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


@register_layer("TanH")
class TanH(_Elementwise):
    """tanh(x)."""

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


@register_layer("AbsVal")
class AbsVal(_Elementwise):
    """|x| (gradient sign(x), 0 at 0)."""

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)


@register_layer("BNLL")
class BNLL(_Elementwise):
    """log(1 + exp(x)), computed stably."""

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x)


@register_layer("ELU")
class ELU(_Elementwise):
    """x for x > 0, alpha (exp(x) - 1) otherwise."""

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x, float(self.param.elu_param.alpha))


@register_layer("Threshold")
class Threshold(_Elementwise):
    """1 where x > threshold, else 0 (no gradient)."""

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return (x > float(self.param.threshold_param.threshold)).to(x.dtype)


@register_layer("Dropout")
class Dropout(_Elementwise):
    """TRAIN: keep each unit with probability 1 - p and scale kept units by 1 / (1 - p); TEST: identity.

    As dropout_layer.cpp: one boost bernoulli draw per element in blob order, from the net's Caffe
    generator, with probability ``1. - threshold_`` (a double: Caffe's bernoulli over double), and
    top = bottom * mask * scale with scale = float(1. / (1. - threshold_)). rng_mode torch draws the mask
    on the device instead.
    """

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        if not self.ctx.train:
            return x
        ratio = float(self.param.dropout_param.dropout_ratio)
        if not 0.0 <= ratio < 1.0:
            raise NetError(f"layer {self.name!r}: dropout_ratio must be in [0, 1), got {ratio}")
        scale = float(np.float32(1.0 / (1.0 - ratio)))
        if self.ctx.torch_rng:
            keep = torch.rand(x.shape, generator=self.ctx.device_generator, device=x.device) >= ratio
        else:
            mask = self.ctx.rng.bernoulli(x.numel(), 1.0 - ratio)
            keep = torch.from_numpy(mask).reshape(x.shape).to(x.device, non_blocking=True)
        # x * (mask * scale) is x * mask * scale bit for bit (mask * scale is 0 or scale exactly; x * 0 keeps
        # x's sign and NaN as x * 0 * scale does) in one pass over x forward and one backward
        return x * keep.to(x.dtype).mul_(scale)


@register_layer("Power")
class Power(_Elementwise):
    """(shift + scale * x) ^ power; power 0 gives ones (zero gradient), as Caffe special-cases it."""

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        p = self.param.power_param
        power, scale, shift = float(p.power), float(p.scale), float(p.shift)
        if power == 0:
            return torch.ones_like(x)
        y = x * scale + shift if (scale != 1 or shift != 0) else x
        return y if power == 1 else y.pow(power)


def _base_log(base: float) -> float:
    """ln(base) for Exp/Log layers; base -1 means e."""
    if base == -1:
        return 1.0
    if base <= 0:
        raise NetError(f"Exp/Log base must be positive or -1 (e), got {base}")
    return math.log(base)


@register_layer("Exp")
class Exp(_Elementwise):
    """base ^ (shift + scale * x), base e by default."""

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        p = self.param.exp_param
        return torch.exp(_base_log(float(p.base)) * (float(p.shift) + float(p.scale) * x))


@register_layer("Log")
class Log(_Elementwise):
    """log_base(shift + scale * x), natural log by default."""

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        p = self.param.log_param
        return torch.log(float(p.shift) + float(p.scale) * x) / _base_log(float(p.base))
