"""Caffe's weight fillers (filler.hpp), one function each in a registry keyed by FillerParameter.type.

Fan-in and fan-out follow Caffe: fan_in = count / shape[0], fan_out = count / shape[1] (count when the
blob has one axis). Values are drawn from a seeded torch.Generator, so a seed reproduces pixsent's
initialisation but not Caffe's boost RNG stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError

Filler = Callable[[tuple[int, ...], caffe_pb2.FillerParameter, torch.Generator], torch.Tensor]
FILLERS: dict[str, Filler] = {}


def register_filler(name: str) -> Callable[[Filler], Filler]:
    """Decorator adding a filler function under Caffe's filler type name."""

    def decorate(fn: Filler) -> Filler:
        FILLERS[name] = fn
        return fn

    return decorate


def _fans(shape: tuple[int, ...]) -> tuple[float, float]:
    count = math.prod(shape)
    fan_in = count / shape[0] if shape else 1
    fan_out = count / shape[1] if len(shape) > 1 else count
    return float(fan_in), float(fan_out)


def _norm(shape: tuple[int, ...], p: caffe_pb2.FillerParameter) -> float:
    """The n of xavier/msra: fan_in, fan_out or their mean by ``variance_norm``."""
    fan_in, fan_out = _fans(shape)
    if p.variance_norm == caffe_pb2.FillerParameter.FAN_OUT:
        return fan_out
    if p.variance_norm == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2
    return fan_in


def _uniform(shape: tuple[int, ...], lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=g, dtype=torch.float32) * (hi - lo) + lo


@register_filler("constant")
def constant(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, g: torch.Generator) -> torch.Tensor:
    """Every value ``value`` (default 0)."""
    return torch.full(shape, float(p.value), dtype=torch.float32)


@register_filler("uniform")
def uniform(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, g: torch.Generator) -> torch.Tensor:
    """Uniform on [min, max] (defaults 0, 1)."""
    return _uniform(shape, float(p.min), float(p.max), g)


@register_filler("gaussian")
def gaussian(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, g: torch.Generator) -> torch.Tensor:
    """Normal(mean, std); with ``sparse`` s, each value is kept with probability s / shape[0] (else 0)."""
    out = torch.randn(shape, generator=g, dtype=torch.float32) * float(p.std) + float(p.mean)
    if p.sparse >= 0:
        if len(shape) < 2:
            raise NetError("gaussian filler with sparse needs a blob with at least 2 axes")
        keep = float(p.sparse) / shape[0]
        out = out * (torch.rand(shape, generator=g) < keep).float()
    return out


@register_filler("positive_unitball")
def positive_unitball(
    shape: tuple[int, ...], p: caffe_pb2.FillerParameter, g: torch.Generator
) -> torch.Tensor:
    """Uniform [0, 1) values, each row (everything after axis 0) scaled to sum to 1."""
    out = torch.rand(shape, generator=g, dtype=torch.float32)
    flat = out.reshape(shape[0], -1)
    return (flat / flat.sum(dim=1, keepdim=True)).reshape(shape)


@register_filler("xavier")
def xavier(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, g: torch.Generator) -> torch.Tensor:
    """Uniform on [-sqrt(3/n), sqrt(3/n)], n by variance_norm (default fan_in)."""
    scale = math.sqrt(3.0 / _norm(shape, p))
    return _uniform(shape, -scale, scale, g)


@register_filler("msra")
def msra(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, g: torch.Generator) -> torch.Tensor:
    """Normal(0, sqrt(2/n)), n by variance_norm (default fan_in)."""
    return torch.randn(shape, generator=g, dtype=torch.float32) * math.sqrt(2.0 / _norm(shape, p))


@register_filler("bilinear")
def bilinear(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, g: torch.Generator) -> torch.Tensor:
    """Bilinear upsampling kernel for Deconvolution: f = ceil(k/2), c = (2f - 1 - f%2) / (2f)."""
    if len(shape) != 4 or shape[2] != shape[3]:
        raise NetError(f"bilinear filler needs a 4-D blob with square kernels, got {shape}")
    k = shape[3]
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    x = torch.arange(k, dtype=torch.float64)
    w = 1 - torch.abs(x / f - c)
    kernel = (w[:, None] * w[None, :]).to(torch.float32)
    return kernel.expand(shape).clone()


def fill(shape: tuple[int, ...], p: caffe_pb2.FillerParameter, g: torch.Generator) -> torch.Tensor:
    """A float32 CPU tensor of ``shape`` filled as ``p`` says."""
    fn = FILLERS.get(p.type)
    if fn is None:
        raise NetError(f"unknown filler type {p.type!r} (known: {', '.join(sorted(FILLERS))})")
    return fn(tuple(int(d) for d in shape), p, g)
