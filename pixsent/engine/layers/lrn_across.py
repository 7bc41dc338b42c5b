"""ACROSS_CHANNELS LRN in Caffe's own float order: the ``fast_lrn`` path (engine/fastpath.py).

What BVLC Caffe's CPU layer does (lrn_layer.cpp, CrossChannelForward_cpu / CrossChannelBackward_cpu), in
float, one image at a time:

- forward: scale starts at k; the first channel adds (alpha/size) * x^2 for the channels of its window;
  every later channel copies the previous channel's scale, adds (alpha/size) * x^2 of the channel that
  enters the window, then subtracts that of the one that leaves it. Each step is a BLAS axpy, which
  OpenBLAS computes with a fused multiply-add (one rounding). alpha/size is a float division. Then
  top = scale^-beta (caffe_powx, i.e. powf) times x.
- backward: bottom_diff = top_diff * scale^-beta; ratio = top_diff * top / scale; a running sum of ratios
  starts from the channels before the window's end, and for each channel adds the entering ratio,
  subtracts 2 alpha beta / size (computed in double, rounded to float) times x * sum from bottom_diff
  (an axpy), then subtracts the leaving ratio.

Doing the same steps (``Tensor.add_(t, alpha=a)`` is a fused multiply-add on the CPU) and computing the
power in float64 before rounding reproduces Caffe's norm1/norm2 golden blobs bit for bit in 99.93-99.97 %
of the elements (the rest differ by 1 ulp where glibc's powf is not correctly rounded); a direct window
sum with k added last matched 79 % (up to 3 ulp). The running sums walk the channels one at a time, so
channels-last tensors are transposed to a channels x pixels matrix first, where each channel is
contiguous.
"""

from __future__ import annotations

import numpy as np
import torch


def _f32(v: float) -> float:
    """v rounded to float32 (Caffe keeps alpha, beta, k and its derived constants as floats)."""
    return float(np.float32(v))


def _is_nhwc(x: torch.Tensor) -> bool:
    """True for a dense channels-last N x C x H x W tensor (NCHW-contiguous ones count as NCHW)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _rows(t: torch.Tensor, nhwc: bool) -> tuple[torch.Tensor, int]:
    """A dense copy/view where each channel is a contiguous run, and its channel axis: C x (N*H*W) for
    channels-last work, N x C x H x W otherwise."""
    if nhwc:
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]).t().contiguous(), 0
    return t.contiguous(), 1


def _restore(r: torch.Tensor, like: torch.Tensor, nhwc: bool) -> torch.Tensor:
    """Undo _rows: an N x C x H x W tensor in the memory layout of ``like``."""
    if not nhwc:
        return r
    out = torch.empty_like(like, memory_format=torch.channels_last)
    out.permute(0, 2, 3, 1).view(-1, like.shape[1]).copy_(r.t())
    return out


def _scale(sq: torch.Tensor, dim: int, size: int, a: float, k: float) -> torch.Tensor:
    """k + a * (window sum of sq), as Caffe's running sum: the first channel from its window, each later one
    as previous + a * entering - a * leaving, one fused multiply-add per step."""
    c_total, pre = sq.shape[dim], (size - 1) // 2
    scale = torch.empty_like(sq)
    first = scale.select(dim, 0).fill_(k)
    for c in range(min(pre, c_total - 1) + 1):
        first.add_(sq.select(dim, c), alpha=a)
    for c in range(1, c_total):
        prev, cur = scale.select(dim, c - 1), scale.select(dim, c)
        if c + pre < c_total:
            torch.add(prev, sq.select(dim, c + pre), alpha=a, out=cur)
        else:
            cur.copy_(prev)
        if c - 1 - pre >= 0:
            cur.sub_(sq.select(dim, c - 1 - pre), alpha=a)
    return scale


def _window_ratio(ratio: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Window sums of ``ratio`` in Caffe's backward order: the first channel's window added up from channel
    0, then for each later channel the previous sum minus the leaving ratio plus the entering one."""
    c_total, pre = ratio.shape[dim], (size - 1) // 2
    acc = torch.empty_like(ratio)
    first = acc.select(dim, 0).copy_(ratio.select(dim, 0))
    for c in range(1, min(pre, c_total - 1) + 1):
        first.add_(ratio.select(dim, c))
    for c in range(1, c_total):
        prev, cur = acc.select(dim, c - 1), acc.select(dim, c)
        if c - 1 - pre >= 0:
            torch.sub(prev, ratio.select(dim, c - 1 - pre), out=cur)
        else:
            cur.copy_(prev)
        if c + pre < c_total:
            cur.add_(ratio.select(dim, c + pre))
    return acc


def _power(scale: torch.Tensor, beta: float) -> torch.Tensor:
    """scale^-beta rounded once to the tensor's precision, as powf does (float32 goes through float64:
    torch's float32 pow differs from glibc's powf in ~2 % of the elements, exp(log) in float64 in 0.07 %)."""
    if beta == 0:
        return torch.ones_like(scale)
    if scale.dtype == torch.float32:
        return scale.double().log_().mul_(-beta).exp_().float()
    return scale.pow(-beta)


def _constants(dtype: torch.dtype, size: int, alpha: float, beta: float, k: float):
    """(alpha/size, beta, k, 2 alpha beta/size) with Caffe's float rounding when computing in float32."""
    if dtype != torch.float32:
        return alpha / size, beta, k, 2.0 * alpha * beta / size
    alpha, beta = _f32(alpha), _f32(beta)
    return float(np.float32(alpha) / np.float32(size)), beta, _f32(k), _f32(2.0 * alpha * beta / size)


class _LRNAcross(torch.autograd.Function):
    """LRN across channels with Caffe's forward and backward steps (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        nhwc = _is_nhwc(x)
        xr, dim = _rows(x, nhwc)
        a, beta, k, ratio_coeff = _constants(x.dtype, size, alpha, beta, k)
        scale = _scale(xr * xr, dim, size, a, k)
        p = _power(scale, beta)
        ctx.save_for_backward(x, scale, p)
        ctx.lrn = (nhwc, dim, size, ratio_coeff)
        return _restore(p * xr, x, nhwc)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, scale, p = ctx.saved_tensors
        nhwc, dim, size, ratio_coeff = ctx.lrn
        xr, _ = _rows(x, nhwc)
        dyr, _ = _rows(dy, nhwc)
        ratio = p * xr  # the forward's top, recomputed bitwise
        ratio.mul_(dyr).div_(scale)
        acc = _window_ratio(ratio, dim, size)
        acc.mul_(xr)
        dx = dyr * p
        dx.add_(acc, alpha=-ratio_coeff)
        return _restore(dx, x, nhwc), None, None, None, None


def lrn_across_channels(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """Caffe's ACROSS_CHANNELS LRN of an N x C x H x W tensor, any memory layout (kept in the output)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _LRNAcross.apply(x, size, alpha, beta, k)
    nhwc = _is_nhwc(x)
    xr, dim = _rows(x, nhwc)
    a, beta, k, _ = _constants(x.dtype, size, alpha, beta, k)
    p = _power(_scale(xr * xr, dim, size, a, k), beta)
    return _restore(p.mul_(xr), x, nhwc)
