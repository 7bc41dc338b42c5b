"""Spatial layers built on convolution/pooling conventions: SPP (pyramid pooling) and Im2col."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.layers.vision import Pooling, _opt, _pair
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError

SPP_TO_POOL = {
    caffe_pb2.SPPParameter.MAX: caffe_pb2.PoolingParameter.MAX,
    caffe_pb2.SPPParameter.AVE: caffe_pb2.PoolingParameter.AVE,
    caffe_pb2.SPPParameter.STOCHASTIC: caffe_pb2.PoolingParameter.STOCHASTIC,
}


def spp_level_param(name: str, level: int, h: int, w: int, pool: int) -> caffe_pb2.LayerParameter:
    """The Pooling layer of pyramid level ``level`` (spp_layer.cpp GetPoolingParam): 2^level bins per
    side, kernel = ceil(size / bins), stride = kernel, pad = (kernel * bins - size + 1) // 2."""
    bins = 2**level
    lp = caffe_pb2.LayerParameter(name=name, type="Pooling", top=[name])
    pp = lp.pooling_param
    kh, kw = math.ceil(h / bins), math.ceil(w / bins)
    pp.kernel_h, pp.kernel_w = kh, kw
    pp.stride_h, pp.stride_w = kh, kw
    pp.pad_h, pp.pad_w = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
    pp.pool = SPP_TO_POOL[pool]
    return lp


@register_layer("SPP")
class SPP(Layer):
    """Spatial pyramid pooling: levels 0..pyramid_height-1 pool the N x C x H x W input into 2^l x 2^l
    bins each (Caffe's own Pooling layers, so its ceil rounding and its check pad < kernel apply), each
    flattened to N x C*4^l and concatenated along axis 1. With pyramid_height 1 the top is the single
    pooling's N x C x 1 x 1 output, unflattened, as in spp_layer.cpp."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.spp_param
        shape = bottom_shapes[0]
        if len(shape) != 4:
            raise NetError(f"layer {self.name!r}: SPP expects N x C x H x W input, got {shape}")
        if shape[2] <= 0 or shape[3] <= 0:
            raise NetError(f"layer {self.name!r}: SPP input dimensions cannot be zero: {shape}")
        self.height = int(p.pyramid_height)
        if self.height < 1:
            raise NetError(f"layer {self.name!r}: spp_param.pyramid_height must be at least 1")
        self.pools: list[Pooling] = []
        tops: list[Shape] = []
        for level in range(self.height):
            lp = spp_level_param(self.name, level, shape[2], shape[3], p.pool)
            layer = Pooling(lp, self.ctx)
            try:
                tops.append(layer.setup([shape])[0])
            except NetError as exc:
                raise NetError(
                    f"{exc} (SPP pyramid level {level} on a {shape[2]}x{shape[3]} input)"
                ) from None
            self.pools.append(layer)
        if self.height == 1:
            return tops
        return [(shape[0], sum(math.prod(t[1:]) for t in tops))]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0]
        outs = [pool.forward([x])[0] for pool in self.pools]
        if self.height == 1:
            return outs
        return [torch.cat([o.reshape(o.shape[0], -1) for o in outs], dim=1)]


@register_layer("Im2col")
class Im2col(Layer):
    """Caffe's im2col as a layer: N x C x H x W -> N x (C * kh * kw) x OH x OW, rows ordered channel,
    kernel row, kernel column (im2col_layer.cpp), with convolution_param kernel, pad, stride and
    dilation; the backward is col2im (overlapping windows sum). 2-D spatial axes only."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.convolution_param
        name = self.name
        shape = bottom_shapes[0]
        if p.axis != 1 or len(shape) != 4:
            raise NetError(f"layer {name!r}: Im2col supports N x C x H x W input with axis 1, got {shape}")
        self.kernel = _pair("kernel", name, p.kernel_size, _opt(p, "kernel_h"), _opt(p, "kernel_w"), 0)
        if min(self.kernel) <= 0:
            raise NetError(f"layer {name!r}: filter dimensions must be nonzero")
        pad_h = p.pad_h if (p.HasField("pad_h") or p.HasField("pad_w")) else None
        pad_w = p.pad_w if pad_h is not None else None
        self.pad = _pair("pad", name, p.pad, pad_h, pad_w, 0)
        self.stride = _pair("stride", name, p.stride, _opt(p, "stride_h"), _opt(p, "stride_w"), 1)
        if min(self.stride) <= 0:
            raise NetError(f"layer {name!r}: stride dimensions must be nonzero")
        self.dilation = _pair("dilation", name, p.dilation, None, None, 1)
        dims = []
        for i, size in enumerate(shape[2:]):
            ext = self.dilation[i] * (self.kernel[i] - 1) + 1
            dims.append((size + 2 * self.pad[i] - ext) // self.stride[i] + 1)
        if min(dims) <= 0:
            raise NetError(f"layer {name!r}: kernel {self.kernel} does not fit the {shape[2:]} input")
        self.out_hw = tuple(dims)
        return [(shape[0], shape[1] * self.kernel[0] * self.kernel[1], *dims)]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0]
        cols = F.unfold(x, self.kernel, self.dilation, self.pad, self.stride)
        return [cols.reshape(x.shape[0], cols.shape[1], *self.out_hw)]
