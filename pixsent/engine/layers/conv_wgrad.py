"""A convolution whose weight gradient is built as Caffe builds it: columns of the input times the top diff.

oneDNN's backward-weights kernel runs a 3x3 convolution with few input channels (SqueezeNet's fire modules)
at a third to a half of this machine's GEMM rate, while its forward and backward-data kernels run near it.
Caffe computes the weight diff image by image as ``diff += top_diff[n] x col(bottom[n])^T`` (im2col, one
GEMM of beta 1). Here the columns of a few images at a time are gathered from the channels-last input by
kh strided copies into a small (images, Ho, Wo, kh, kw, C) buffer and multiplied in one GEMM of beta 1,
so the reduction runs at the GEMM's rate with a buffer of a few MB; the result is added into the weight's
diff, as Caffe accumulates it. Forward and the bottom's gradient are oneDNN's, unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixsent.engine.layers.base import accumulate_diff

#: bytes of columns gathered per GEMM (a few images' worth; stays in the last-level cache's neighbourhood)
COLUMN_BUDGET = 8 << 20


def wants_column_wgrad(x: torch.Tensor, weight: torch.Tensor, dilation: tuple[int, int], group: int) -> bool:
    """Where this path measured faster than oneDNN's: a learning CPU float32 convolution of a channels-last
    input, one group, no dilation, a kernel larger than 1x1 and at least 8 input channels (with 3, as in a
    first layer, oneDNN's own kernel is faster)."""
    return (
        torch.is_grad_enabled()
        and weight.requires_grad
        and group == 1
        and dilation == (1, 1)
        and weight.shape[2] * weight.shape[3] > 1
        and weight.shape[1] >= 8
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def column_weight_grad(
    x: torch.Tensor, dy: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int]
) -> torch.Tensor:
    """dW as (O, kh * kw * C) in (kh, kw, C) order: sum over images of dy^T x columns, a few images per GEMM.

    ``x`` and ``dy`` are N x C x H x W and N x O x Ho x Wo tensors in channels-last memory. In that memory
    the kw x C inputs of one output cell and one kernel row are contiguous, so the columns are gathered by
    kh strided copies (one per kernel row) of runs of kw * C values.
    """
    n, c, h, w = x.shape
    o, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    hp, wp = h + 2 * ph, w + 2 * pw
    x_nhwc = x.permute(0, 2, 3, 1)
    dy_rows = dy.permute(0, 2, 3, 1)
    per_image = ho * wo * kh * kw * c * x.element_size()
    chunk = max(1, min(n, COLUMN_BUDGET // max(per_image, 1)))
    cols = x.new_empty(chunk, ho, wo, kh, kw * c)
    padded = x.new_zeros(chunk, hp, wp, c) if (ph or pw) else None
    out = x.new_zeros(o, kh * kw * c)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        m = stop - start
        if padded is not None:
            padded[:m, ph : ph + h, pw : pw + w, :] = x_nhwc[start:stop]
            src = padded[:m]
        else:
            src = x_nhwc[start:stop]  # dense N x H x W x C memory: x is channels-last contiguous
        block = cols[:m]
        strides = (hp * wp * c, sh * wp * c, sw * c, 1)
        for i in range(kh):
            row = src.as_strided((m, ho, wo, kw * c), strides, src.storage_offset() + i * wp * c)
            block[:, :, :, i, :] = row
        out.addmm_(dy_rows[start:stop].reshape(-1, o).t(), block.reshape(-1, kh * kw * c))
    return out


class ColumnWgradConv(torch.autograd.Function):
    """F.conv2d forward; backward: oneDNN's bottom gradient, the weight diff from column_weight_grad added
    into ``weight.grad`` and the bias diff (sum of the top diff) into ``bias.grad``. The parameters get no
    autograd gradient of their own, as with InnerProduct's fast path."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, pad):
        ctx.save_for_backward(x, weight)
        ctx.bias = bias
        ctx.geometry = (stride, pad)
        return F.conv2d(x, weight, bias, stride, pad)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        stride, pad = ctx.geometry
        dy = dy.contiguous(memory_format=torch.channels_last)
        dx = None
        if ctx.needs_input_grad[0]:
            mask = [True, False, False]
            dx = torch.ops.aten.convolution_backward(
                dy, x, weight, None, list(stride), list(pad), [1, 1], False, [0, 0], 1, mask
            )[0]
        with torch.no_grad():
            o, c, kh, kw = weight.shape
            dw = column_weight_grad(x, dy, (kh, kw), stride, pad).view(o, kh, kw, c).permute(0, 3, 1, 2)
            accumulate_diff(weight, dw)
            if ctx.bias is not None and ctx.bias.requires_grad:
                accumulate_diff(ctx.bias, dy.sum((0, 2, 3)))
        return dx, None, None, None, None
