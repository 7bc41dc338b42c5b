"""Spatial layers: Convolution, Deconvolution, Pooling, LRN (Caffe's vision layers) on NCHW tensors.

Values are always N x C x H x W; on the CPU a convolution's input is put in channels-last memory
(see engine/fastpath.py), so its output and the ReLU/pooling/LRN that follow stay in that layout.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.fastpath import FAST
from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.layers.conv_wgrad import ColumnWgradConv, wants_column_wgrad
from pixsent.engine.layers.lrn_across import lrn_across_channels
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError

PP = caffe_pb2.PoolingParameter


def _pair(name: str, layer: str, repeated, h: int | None, w: int | None, default: int) -> tuple[int, int]:
    """Caffe's 2-D spatial argument: explicit _h/_w fields, else one or two values of the repeated field."""
    if h is not None or w is not None:
        if h is None or w is None:
            raise NetError(f"layer {layer!r}: {name}_h and {name}_w must be given together")
        return int(h), int(w)
    vals = list(repeated)
    if not vals:
        return default, default
    if len(vals) == 1:
        return int(vals[0]), int(vals[0])
    if len(vals) == 2:
        return int(vals[0]), int(vals[1])
    raise NetError(f"layer {layer!r}: only 2-D spatial layers are supported ({name} has {len(vals)} values)")


def _opt(msg, field: str) -> int | None:
    return getattr(msg, field) if msg.HasField(field) else None


def _check_pooling_forms(p, layer: str) -> None:
    """Caffe's pooling_layer.cpp LayerSetUp refuses what it cannot read one way: each of kernel, pad and
    stride is the plain field or both its _h and _w fields (a lone pad_h is not pad_h with pad_w 0, as
    for Convolution), and global pooling takes no kernel size."""
    for name in ("kernel", "pad", "stride"):
        plain = p.HasField("kernel_size" if name == "kernel" else name)
        has_h, has_w = p.HasField(f"{name}_h"), p.HasField(f"{name}_w")
        if (has_h or has_w) and (plain or not (has_h and has_w)):
            what = "kernel_size" if name == "kernel" else name
            raise NetError(f"layer {layer!r}: give {what}, or both {name}_h and {name}_w (not both forms)")
    if p.global_pooling and (p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w")):
        raise NetError(
            f"layer {layer!r}: global pooling takes its kernel from the input; give no kernel size"
        )


class _ConvBase(Layer):
    """Shared set-up of Convolution and Deconvolution (kernel, pad, stride, dilation, group, bias)."""

    transposed = False

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.convolution_param
        name = self.name
        self.kernel = _pair("kernel", name, p.kernel_size, _opt(p, "kernel_h"), _opt(p, "kernel_w"), 0)
        if min(self.kernel) <= 0:
            raise NetError(f"layer {name!r}: kernel size must be given and positive")
        pad_h = p.pad_h if (p.HasField("pad_h") or p.HasField("pad_w")) else None
        pad_w = p.pad_w if pad_h is not None else None
        self.pad = _pair("pad", name, p.pad, pad_h, pad_w, 0)
        self.stride = _pair("stride", name, p.stride, _opt(p, "stride_h"), _opt(p, "stride_w"), 1)
        self.dilation = _pair("dilation", name, p.dilation, None, None, 1)
        if p.axis != 1:
            raise NetError(f"layer {name!r}: convolution axis {p.axis} is not supported (only 1)")
        shape = bottom_shapes[0]
        if len(shape) != 4:
            raise NetError(f"layer {name!r}: expects N x C x H x W input, got {shape}")
        channels = shape[1]
        self.group = int(p.group)
        num_output = int(p.num_output)
        if num_output <= 0:
            raise NetError(f"layer {name!r}: num_output must be positive")
        if channels % self.group or num_output % self.group:
            raise NetError(
                f"layer {name!r}: channels {channels} and num_output {num_output} "
                f"must divide by group {self.group}"
            )
        if self.transposed:
            wshape = (channels, num_output // self.group, *self.kernel)
        else:
            wshape = (num_output, channels // self.group, *self.kernel)
        self.num_output = num_output
        self.bias_term = bool(p.bias_term)
        if not self.blobs:
            self.blobs.append(self.make_param(wshape, p.weight_filler))
            if self.bias_term:
                self.blobs.append(self.make_param((num_output,), p.bias_filler))
        return [self.out_shape(s) for s in bottom_shapes]

    def out_shape(self, shape: Shape) -> Shape:
        dims = []
        for i, size in enumerate(shape[2:]):
            ext = self.dilation[i] * (self.kernel[i] - 1) + 1
            if self.transposed:
                dims.append(self.stride[i] * (size - 1) + ext - 2 * self.pad[i])
            else:
                dims.append((size + 2 * self.pad[i] - ext) // self.stride[i] + 1)
        if min(dims) <= 0:
            raise NetError(
                f"layer {self.name!r}: kernel {'x'.join(map(str, self.kernel))} (pad "
                f"{'x'.join(map(str, self.pad))}, stride {'x'.join(map(str, self.stride))}) does not fit its "
                f"{'x'.join(map(str, shape[2:]))} input (output would be {'x'.join(map(str, dims))})"
            )
        return (shape[0], self.num_output, *dims)


@register_layer("Convolution")
class Convolution(_ConvBase):
    """Cross-correlation with weights (out, in/group, kh, kw); output (H + 2p - (d(k-1)+1)) // s + 1."""

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        bias = self.blobs[1] if self.bias_term else None
        weight = self.blobs[0]
        tops = []
        for x in bottoms:
            x = _conv_layout(x)
            if FAST.column_wgrad and wants_column_wgrad(x, weight, self.dilation, self.group):
                tops.append(ColumnWgradConv.apply(x, weight, bias, self.stride, self.pad))
            else:
                tops.append(F.conv2d(x, weight, bias, self.stride, self.pad, self.dilation, self.group))
        return tops

    def forward_with(self, bottoms: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor):
        """The same convolution with other weights (a BatchNorm and Scale folded in: engine.bn_fold)."""
        return [
            F.conv2d(_conv_layout(x), weight, bias, self.stride, self.pad, self.dilation, self.group)
            for x in bottoms
        ]


def _conv_layout(x: torch.Tensor) -> torch.Tensor:
    """The input in the memory layout convolutions run fastest on (channels-last on the CPU)."""
    if FAST.use_channels_last(x):
        return x.contiguous(memory_format=torch.channels_last)
    return x


@register_layer("Deconvolution")
class Deconvolution(_ConvBase):
    """Transposed convolution; Caffe stores its weights (in, out/group, kh, kw), torch's layout too."""

    transposed = True

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        bias = self.blobs[1] if self.bias_term else None
        return [
            F.conv_transpose2d(x, self.blobs[0], bias, self.stride, self.pad, 0, self.group, self.dilation)
            for x in bottoms
        ]


def pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """Caffe's pooled extent: ceil (or floor) of (size + 2 pad - kernel) / stride, plus 1; with padding,
    a last window that would start at or beyond size + pad is dropped."""
    num = size + 2 * pad - kernel
    out = (-(-num // stride) if ceil else num // stride) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def ave_divisor(size: int, kernel: int, stride: int, pad: int, out: int) -> np.ndarray:
    """Per-output window sizes of Caffe's AVE pooling along one axis: the window clipped at size + pad
    (so padded cells count, cells beyond the padding do not), measured before clipping to the image."""
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, size + pad)
    return (end - start).astype(np.float32)


class _MaxPoolAfterReLU(torch.autograd.Function):
    """Max pooling of a ReLU's output that also does the ReLU's backward (fastpath fold_relu_pool).

    A cell gets gradient only from windows whose maximum it is, and each such window's output equals the
    cell's value, so masking the pooled gradient where the output is not positive and then scattering it
    gives, bit for bit, the scattered gradient masked where the cell is not positive (ReLU's backward, 0 at
    exactly 0 as in Caffe), over a tensor a quarter or less of the size and without a pass of its own.
    """

    @staticmethod
    def forward(ctx, x, kernel, stride, pad, ceil):
        y, idx = F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil, return_indices=True)
        ctx.save_for_backward(x, y, idx)
        ctx.args = (kernel, stride, pad, ceil)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y, idx = ctx.saved_tensors
        kernel, stride, pad, ceil = ctx.args
        g = torch.where(y > 0, g, 0.0)
        dx = torch.ops.aten.max_pool2d_with_indices_backward(g, x, kernel, stride, pad, (1, 1), ceil, idx)
        return dx, None, None, None, None


@register_layer("Pooling")
class Pooling(Layer):
    """MAX / AVE pooling with Caffe's output size (ceil by default) and AVE divisor; global pooling."""

    #: set by the Net when the in-place ReLU before it leaves it its gradient mask (fastpath fold_relu_pool)
    fold_relu = False

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.pooling_param
        shape = bottom_shapes[0]
        if len(shape) != 4:
            raise NetError(f"layer {self.name!r}: expects N x C x H x W input, got {shape}")
        _check_pooling_forms(p, self.name)
        self.global_pooling = bool(p.global_pooling)
        if p.pool not in (PP.MAX, PP.AVE):
            raise NetError(
                f"layer {self.name!r}: pooling method {PP.PoolMethod.Name(p.pool)} is not supported"
            )
        self.method = p.pool
        self.ceil = p.round_mode == PP.CEIL
        pad_h = p.pad_h if (p.HasField("pad_h") or p.HasField("pad_w")) else None
        pad_w = p.pad_w if pad_h is not None else None
        self.pad = _pair("pad", self.name, [p.pad] if p.HasField("pad") else [], pad_h, pad_w, 0)
        self.stride = _pair(
            "stride",
            self.name,
            [p.stride] if p.HasField("stride") else [],
            _opt(p, "stride_h"),
            _opt(p, "stride_w"),
            1,
        )
        if self.global_pooling:
            self.kernel = (shape[2], shape[3])
            if any(self.pad) or any(s != 1 for s in self.stride):
                raise NetError(f"layer {self.name!r}: global pooling needs pad 0 and stride 1")
        else:
            k = [p.kernel_size] if p.HasField("kernel_size") else []
            self.kernel = _pair("kernel", self.name, k, _opt(p, "kernel_h"), _opt(p, "kernel_w"), 0)
            if min(self.kernel) <= 0:
                raise NetError(f"layer {self.name!r}: kernel size must be given and positive")
        if any(pd >= k for pd, k in zip(self.pad, self.kernel)):
            raise NetError(f"layer {self.name!r}: pad {self.pad} must be smaller than kernel {self.kernel}")
        top = self.out_shape(shape)
        return [top] * len(self.param.top)

    def out_shape(self, shape: Shape) -> Shape:
        kernel = (shape[2], shape[3]) if self.global_pooling else self.kernel
        h = pooled_size(shape[2], kernel[0], self.stride[0], self.pad[0], self.ceil)
        w = pooled_size(shape[3], kernel[1], self.stride[1], self.pad[1], self.ceil)
        if h <= 0 or w <= 0:
            raise NetError(
                f"layer {self.name!r}: pooling kernel {kernel[0]}x{kernel[1]} does not fit its "
                f"{shape[2]}x{shape[3]} input (output would be {h}x{w})"
            )
        return (shape[0], shape[1], h, w)

    def _native_ok(self, shape: Shape, kernel: tuple[int, int]) -> bool:
        """torch's pooling has Caffe's rules when pad <= kernel / 2 (its own limit) and shapes agree."""
        if any(2 * p > k for p, k in zip(self.pad, kernel)):
            return False
        for i in (0, 1):
            n = shape[2 + i] + 2 * self.pad[i] - kernel[i]
            out = (-(-n // self.stride[i]) if self.ceil else n // self.stride[i]) + 1
            if self.ceil and (out - 1) * self.stride[i] >= shape[2 + i] + self.pad[i]:
                out -= 1
            if out != pooled_size(shape[2 + i], kernel[i], self.stride[i], self.pad[i], self.ceil):
                return False
        return True

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0]
        shape = tuple(x.shape)
        kernel = (shape[2], shape[3]) if self.global_pooling else self.kernel
        if self.method == PP.MAX:
            if (
                self.fold_relu
                and len(self.param.top) == 1
                and self._native_ok(shape, kernel)
                and x.requires_grad
            ):
                return [_MaxPoolAfterReLU.apply(x, kernel, self.stride, self.pad, self.ceil)]
            if len(self.param.top) > 1:
                out, idx = self._max(x, kernel, return_indices=True)
                return [out, idx.to(out.dtype)]
            return [self._max(x, kernel)]
        return [self._ave(x, kernel)]

    def _max(self, x: torch.Tensor, kernel: tuple[int, int], return_indices: bool = False):
        """Max over each window's cells inside the image (padding never wins, as in Caffe)."""
        if self._native_ok(tuple(x.shape), kernel):
            return F.max_pool2d(
                x, kernel, self.stride, self.pad, ceil_mode=self.ceil, return_indices=return_indices
            )
        if return_indices:
            raise NetError(f"layer {self.name!r}: the mask top needs pad <= kernel / 2")
        _, _, oh, ow = self.out_shape(tuple(x.shape))
        right = max(0, (oh - 1) * self.stride[0] + kernel[0] - x.shape[2] - self.pad[0])
        bottom = max(0, (ow - 1) * self.stride[1] + kernel[1] - x.shape[3] - self.pad[1])
        xp = F.pad(x, (self.pad[1], bottom, self.pad[0], right), value=-math.inf)
        return F.max_pool2d(xp, kernel, self.stride)[:, :, :oh, :ow]

    def _ave(self, x: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
        """Window sums divided by Caffe's window size clipped to the padded extent (see ave_divisor)."""
        if self._native_ok(tuple(x.shape), kernel):
            # torch's count_include_pad divisor clips windows at size + pad exactly like Caffe
            return F.avg_pool2d(x, kernel, self.stride, self.pad, ceil_mode=self.ceil, count_include_pad=True)
        return self._ave_explicit(x, kernel)

    def _ave_explicit(self, x: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
        """AVE pooling by zero padding, window sums and a precomputed divisor map (any pad)."""
        _, _, oh, ow = self.out_shape(tuple(x.shape))
        h, w = x.shape[2], x.shape[3]
        right = max(0, (oh - 1) * self.stride[0] + kernel[0] - h - self.pad[0])
        bottom = max(0, (ow - 1) * self.stride[1] + kernel[1] - w - self.pad[1])
        xp = F.pad(x, (self.pad[1], bottom, self.pad[0], right))
        sums = F.avg_pool2d(xp, kernel, self.stride, divisor_override=1)[:, :, :oh, :ow]
        dh = ave_divisor(h, kernel[0], self.stride[0], self.pad[0], oh)
        dw = ave_divisor(w, kernel[1], self.stride[1], self.pad[1], ow)
        div = torch.from_numpy(np.outer(dh, dw)).to(device=x.device, dtype=x.dtype)
        return sums / div


@register_layer("LRN")
class LRN(Layer):
    """Local response normalisation.

    ACROSS_CHANNELS: x * (k + alpha/n * sum of x^2 over n channels centred on c, zero-padded)^-beta.
    WITHIN_CHANNEL: Caffe composes it from AVE pooling (n x n, stride 1, pad (n-1)/2, so every window
    divides by n^2) and a Power layer with shift 1: x * (1 + alpha * mean of x^2)^-beta; k is unused.
    With ``fast_lrn`` ACROSS_CHANNELS runs in Caffe's own float order (layers/lrn_across.py).
    """

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.lrn_param
        self.size = int(p.local_size)
        if self.size % 2 != 1:
            raise NetError(f"layer {self.name!r}: LRN local_size must be odd, got {self.size}")
        self.alpha, self.beta, self.k = float(p.alpha), float(p.beta), float(p.k)
        self.within = p.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL
        if len(bottom_shapes[0]) != 4:
            raise NetError(f"layer {self.name!r}: expects N x C x H x W input, got {bottom_shapes[0]}")
        return [bottom_shapes[0]]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0]
        if not self.within and FAST.fast_lrn:
            return [lrn_across_channels(x, self.size, self.alpha, self.beta, self.k)]
        sq = x * x
        pad = (self.size - 1) // 2
        if self.within:
            avg = F.avg_pool2d(sq, self.size, 1, pad, count_include_pad=True)
            scale = 1.0 + self.alpha * avg
        else:
            n, c, h, w = x.shape
            padded = F.pad(sq.reshape(n, 1, c, h * w), (0, 0, pad, pad))
            sums = F.avg_pool2d(padded, (self.size, 1), 1, divisor_override=1).reshape(n, c, h, w)
            scale = self.k + (self.alpha / self.size) * sums
        return [x * scale.pow(-self.beta)]
