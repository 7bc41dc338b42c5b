"""Caffe's weight fillers (include/caffe/filler.hpp), one function each in a registry keyed by type.

With a ``CaffeRng`` (the default) the values are Caffe's, bit for bit, and the generator advances exactly
as Caffe's does; with a ``torch.Generator`` (``PIXSENT_RNG=torch``) they only have Caffe's distribution.
What filler.hpp does, in float32:

- constant: ``value``. uniform: caffe_rng_uniform(min, max). gaussian: caffe_rng_gaussian(mean, std); with
  ``sparse`` s >= 0, then one float bernoulli(s / shape[0]) per value, zeroing the losers.
- xavier: uniform(-sqrt(3/n), sqrt(3/n)); msra: gaussian(0, sqrt(2/n)); n = fan_in = count / shape[0]
  (integer division), fan_out = count / shape[1] (count for one axis), or their mean (in float) by
  ``variance_norm``.
- positive_unitball: uniform(0, 1), then each row (everything after axis 0) divided by its sum, summed in
  order in float. bilinear: no draws, ``(1 - |x/f - c|) * (1 - |y/f - c|)`` with f = ceil(k/2),
  c = (2f - 1 - f%2) / (2f), for square 4-D kernels.
- Every type but gaussian rejects ``sparse`` (Caffe CHECKs it is -1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.rng import CaffeRng
from pixsent.errors import NetError

F32 = np.float32
Rng = CaffeRng | torch.Generator
Filler = Callable[[tuple[int, ...], caffe_pb2.FillerParameter, Rng], np.ndarray]
FILLERS: dict[str, Filler] = {}


def register_filler(name: str) -> Callable[[Filler], Filler]:
    """Decorator adding a filler function under Caffe's filler type name."""

    def decorate(fn: Filler) -> Filler:
        FILLERS[name] = fn
        return fn

    return decorate


def _uniform(n: int, lo: float, hi: float, rng: Rng) -> np.ndarray:
    if isinstance(rng, CaffeRng):
        return rng.uniform(n, lo, hi)
    return (torch.rand(n, generator=rng, dtype=torch.float32) * (hi - lo) + lo).numpy()


def _gaussian(n: int, mean: float, std: float, rng: Rng) -> np.ndarray:
    if isinstance(rng, CaffeRng):
        try:
            return rng.gaussian(n, mean, std)
        except ValueError:
            raise NetError(f"gaussian filler: std must be positive, got {std} (Caffe aborts)") from None
    return (torch.randn(n, generator=rng, dtype=torch.float32) * std + mean).numpy()


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    count = math.prod(shape)
    fan_in = count // shape[0] if shape else 1
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _norm(shape: tuple[int, ...], p: caffe_pb2.FillerParameter) -> np.float32:
    """The n of xavier/msra: fan_in, fan_out or their mean (float) by ``variance_norm``."""
    fan_in, fan_out = _fans(shape)
    if p.variance_norm == caffe_pb2.FillerParameter.FAN_OUT:
        return F32(fan_out)
    if p.variance_norm == caffe_pb2.FillerParameter.AVERAGE:
        return F32(fan_in + fan_out) / F32(2)
    return F32(fan_in)


def _no_sparse(p: caffe_pb2.FillerParameter) -> None:
    if p.sparse != -1:
        raise NetError(f"{p.type} filler: sparsity (sparse: {p.sparse}) is only supported by gaussian")


@register_filler("constant")
def constant(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, rng: Rng) -> np.ndarray:
    """Every value ``value`` (default 0); no draws."""
    _no_sparse(p)
    return np.full(math.prod(shape), F32(p.value), dtype=F32)


@register_filler("uniform")
def uniform(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, rng: Rng) -> np.ndarray:
    """Uniform on [min, max] (defaults 0, 1)."""
    _no_sparse(p)
    return _uniform(math.prod(shape), float(p.min), float(p.max), rng)


@register_filler("gaussian")
def gaussian(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, rng: Rng) -> np.ndarray:
    """Normal(mean, std); with ``sparse`` s, each value is kept with probability s / shape[0] (else 0)."""
    n = math.prod(shape)
    out = _gaussian(n, float(p.mean), float(p.std), rng)
    if p.sparse >= 0:
        if not shape:
            raise NetError("gaussian filler with sparse needs a blob with at least 1 axis")
        keep_p = F32(p.sparse) / F32(shape[0])
        if isinstance(rng, CaffeRng):
            if keep_p > 1:
                raise NetError(f"gaussian filler: sparse {p.sparse} above the {shape[0]} outputs")
            keep = rng.bernoulli(n, float(keep_p), np.float32)
        else:
            keep = (torch.rand(n, generator=rng) < float(keep_p)).numpy()
        out = out * keep.astype(F32)
    return out


@register_filler("positive_unitball")
def positive_unitball(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, rng: Rng) -> np.ndarray:
    """Uniform [0, 1] values, each row (everything after axis 0) divided by its (sequential float) sum."""
    _no_sparse(p)
    n = math.prod(shape)
    rows = _uniform(n, 0.0, 1.0, rng).reshape(shape[0], -1)
    if rows.shape[1] == 0:
        raise NetError(f"positive_unitball filler: empty rows in shape {shape}")
    sums = np.cumsum(rows, axis=1, dtype=F32)[:, -1:]
    return (rows / sums).reshape(-1)


@register_filler("xavier")
def xavier(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, rng: Rng) -> np.ndarray:
    """Uniform on [-sqrt(3/n), sqrt(3/n)], n by variance_norm (default fan_in)."""
    _no_sparse(p)
    scale = _xavier_scale(shape, p)
    return _uniform(math.prod(shape), -scale, scale, rng)


def _xavier_scale(shape: tuple[int, ...], p: caffe_pb2.FillerParameter) -> float:
    return float(F32(math.sqrt(F32(3) / _norm(shape, p))))


@register_filler("msra")
def msra(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, rng: Rng) -> np.ndarray:
    """Normal(0, sqrt(2/n)), n by variance_norm (default fan_in)."""
    _no_sparse(p)
    std = F32(math.sqrt(F32(2) / _norm(shape, p)))
    return _gaussian(math.prod(shape), 0.0, float(std), rng)


@register_filler("bilinear")
def bilinear(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, rng: Rng) -> np.ndarray:
    """Bilinear upsampling kernel for Deconvolution: f = ceil(k/2), c = (2f - 1 - f%2) / (2f), in float."""
    _no_sparse(p)
    if len(shape) != 4 or shape[2] != shape[3]:
        raise NetError(f"bilinear filler needs a 4-D blob with square kernels, got {shape}")
    k = shape[3]
    f = math.ceil(k / 2.0)
    c = F32((2 * f - 1 - f % 2) / (2.0 * f))
    x = np.arange(k, dtype=F32)
    w = F32(1) - np.abs(x / F32(f) - c)
    return np.broadcast_to(w[:, None] * w[None, :], shape).reshape(-1).copy()


def check_filler(p: caffe_pb2.FillerParameter) -> Filler:
    """The filler function of ``p.type`` (NetError naming the known types when there is none)."""
    fn = FILLERS.get(p.type)
    if fn is None:
        raise NetError(f"unknown filler type {p.type!r} (known: {', '.join(sorted(FILLERS))})")
    return fn


def fill(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, rng: Rng) -> torch.Tensor:
    """A float32 CPU tensor of ``shape`` filled as ``p`` says, drawing from ``rng``."""
    fn = check_filler(p)
    shape = tuple(int(d) for d in shape)
    values = np.ascontiguousarray(fn(shape, p, rng), dtype=F32)
    return torch.from_numpy(values.reshape(shape))


#: values drawn at a time when only the stream's position matters (``advance``)
STREAM_CHUNK = 1 << 20
#: the one vector draw each filler type makes: gaussian (the generator's use does not depend on mean or
#: deviation), or uniform with the bounds given (a value rounding up to the upper bound is redrawn)
Bounds = Callable[[tuple[int, ...], caffe_pb2.FillerParameter], tuple[float, float] | None]
_STREAM_DRAW: dict[str, Bounds] = {
    "gaussian": lambda shape, p: None,
    "msra": lambda shape, p: None,
    "uniform": lambda shape, p: (float(p.min), float(p.max)),
    "positive_unitball": lambda shape, p: (0.0, 1.0),
    "xavier": lambda shape, p: (-_xavier_scale(shape, p), _xavier_scale(shape, p)),
}


def advance(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, rng: Rng) -> None:
    """Draw what ``fill(shape, p, rng)`` draws and keep nothing: a parameter another net replaces costs the
    stream its draws (as in Caffe) but no memory. Uniform and gaussian draws consume the generator the same
    whatever their bounds or deviation, so they run chunk by chunk; a sparse gaussian fills as usual."""
    check_filler(p)
    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    kind = _STREAM_DRAW.get(p.type)
    if p.type in ("constant", "bilinear"):
        return
    sparse_or_bad = p.type == "gaussian" and (p.sparse >= 0 or not p.std > 0)
    odd = sparse_or_bad or (p.type == "uniform" and p.min > p.max)
    if kind is None or odd or not isinstance(rng, CaffeRng):  # fill as usual (and fail as Caffe does)
        fill(shape, p, rng)
        return
    bounds = kind(shape, p)
    for start in range(0, n, STREAM_CHUNK):
        count = min(STREAM_CHUNK, n - start)
        if bounds is None:
            rng.gaussian(count, 0.0, 1.0)
        else:
            rng.uniform(count, *bounds)
