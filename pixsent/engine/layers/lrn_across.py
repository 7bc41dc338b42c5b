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
channels-last tensors are transposed to a channels x pixels matrix for them, where each channel is
contiguous. Caffe's running sum cancels large squares: with alpha ~1 and inputs of ~20 its outputs are
up to ~3e-5 (relative) off the exact window sum; this path keeps those numbers, the plain path
(``PIXSENT_FAST_LRN=0``) sums each window afresh.
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
    pre = (size - 1) // 2
    scale = torch.empty_like(sq)
    q, s = sq.unbind(dim), scale.unbind(dim)
    s[0].fill_(k)
    for c in range(min(pre, len(q) - 1) + 1):
        s[0].add_(q[c], alpha=a)
    for c in range(1, len(q)):
        if c + pre < len(q):
            torch.add(s[c - 1], q[c + pre], alpha=a, out=s[c])
        else:
            s[c].copy_(s[c - 1])
        if c - 1 - pre >= 0:
            s[c].sub_(q[c - 1 - pre], alpha=a)
    return scale


def _window_ratio(ratio: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Window sums of ``ratio`` in Caffe's backward order: the first channel's window added up from channel
    0, then for each later channel the previous sum minus the leaving ratio plus the entering one."""
    pre = (size - 1) // 2
    acc = torch.empty_like(ratio)
    r, s = ratio.unbind(dim), acc.unbind(dim)
    s[0].copy_(r[0])
    for c in range(1, min(pre, len(r) - 1) + 1):
        s[0].add_(r[c])
    for c in range(1, len(r)):
        if c - 1 - pre >= 0:
            torch.sub(s[c - 1], r[c - 1 - pre], out=s[c])
        else:
            s[c].copy_(s[c - 1])
        if c + pre < len(r):
            s[c].add_(r[c + pre])
    return acc


def _dense_flat(t: torch.Tensor) -> torch.Tensor:
    """A 1-D view of a dense NCHW or channels-last tensor, in memory order."""
    return t.permute(0, 2, 3, 1).reshape(-1) if _is_nhwc(t) else t.view(-1)


_POWER_CHUNK = 1 << 16  # elements per float64 slab: 512 KiB, cache-sized, and no full-size float64 copy


def _power(scale: torch.Tensor, beta: float) -> torch.Tensor:
    """scale^-beta rounded once to the tensor's precision, as powf does (float32 goes through float64:
    torch's float32 pow differs from glibc's powf in ~2 % of the elements, float64 in 0.07 %)."""
    if beta == 0:
        return torch.ones_like(scale)
    if scale.dtype != torch.float32:
        return scale.pow(-beta)
    p = torch.empty_like(scale)
    for s, out in zip(_dense_flat(scale).split(_POWER_CHUNK), _dense_flat(p).split(_POWER_CHUNK)):
        if beta == 0.75:  # every LRN of the Caffe model zoo: rsqrt(s)^(3/2), cheaper than exp(log)
            r = s.double().rsqrt_()
            out.copy_(r.sqrt().mul_(r))
        else:
            out.copy_(s.double().log_().mul_(-beta).exp_())
    return p


def _constants(
    dtype: torch.dtype, size: int, alpha: float, beta: float, k: float
) -> tuple[float, float, float, float]:
    """(alpha/size, beta, k, 2 alpha beta/size) with Caffe's float rounding when computing in float32."""
    if dtype != torch.float32:
        return alpha / size, beta, k, 2.0 * alpha * beta / size
    alpha, beta = _f32(alpha), _f32(beta)
    return float(np.float32(alpha) / np.float32(size)), beta, _f32(k), _f32(2.0 * alpha * beta / size)


def _scale_and_power(
    x: torch.Tensor, size: int, alpha: float, beta: float, k: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Caffe's scale of x and scale^-beta, both in the memory layout of x, and 2 alpha beta / size."""
    nhwc = _is_nhwc(x)
    xr, dim = _rows(x, nhwc)
    a, beta, k, ratio_coeff = _constants(x.dtype, size, alpha, beta, k)
    scale = _restore(_scale(xr * xr, dim, size, a, k), x, nhwc)
    return scale, _power(scale, beta), ratio_coeff


class _LRNAcross(torch.autograd.Function):
    """LRN across channels with Caffe's forward and backward steps (see the module docstring); only the
    running sums work on the channels x pixels copy, the elementwise steps stay in the input's layout."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        scale, p, ratio_coeff = _scale_and_power(x, size, alpha, beta, k)
        ctx.save_for_backward(x, scale, p)
        ctx.lrn = (size, ratio_coeff)
        return p * x

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, scale, p = ctx.saved_tensors
        size, ratio_coeff = ctx.lrn
        nhwc = _is_nhwc(x)
        dy = dy.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
        ratio = p * x  # the forward's top, recomputed bitwise
        ratio.mul_(dy).div_(scale)
        rr, dim = _rows(ratio, nhwc)
        acc = _restore(_window_ratio(rr, dim, size), x, nhwc)
        acc.mul_(x)
        dx = dy * p
        dx.add_(acc, alpha=-ratio_coeff)
        return dx, None, None, None, None


def lrn_across_channels(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """Caffe's ACROSS_CHANNELS LRN of an N x C x H x W tensor, any memory layout (kept in the output)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _LRNAcross.apply(x, size, alpha, beta, k)
    _, p, _ = _scale_and_power(x, size, alpha, beta, k)
    return p.mul_(x)
