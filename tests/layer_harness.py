"""Helpers for the per-layer tests: build one layer from prototxt text, run it in float64, and compare
autograd's gradient with central finite differences (relative error = max |a - b| / max |b|)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from google.protobuf import text_format

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.context import NetContext
from pixsent.engine.layers.base import Layer
from pixsent.engine.net import Net
from pixsent.engine.registry import create_layer


def rel(a, b) -> float:
    """max |a - b| / max |b| (float64; 0 when both are all zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.size == 0:
        return 0.0
    scale = np.abs(b).max()
    diff = np.abs(a - b).max()
    return float(diff / scale) if scale > 0 else float(diff)


def build(text: str, bottom_shapes: Sequence[tuple[int, ...]], phase: int = caffe_pb2.TEST, seed: int = 1):
    """A layer made from ``layer { ... }`` body text, set up on ``bottom_shapes``; returns (layer, tops)."""
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    if not param.name:
        param.name = "x"
    if not param.top:
        param.top.append(param.name)
    layer = create_layer(param, NetContext(phase=phase, seed=seed))
    return layer, layer.setup([tuple(s) for s in bottom_shapes])


def to64(layer: Layer) -> list[torch.Tensor]:
    """Replace the layer's parameters by float64 leaf copies that want gradients; returns them."""
    layer.blobs = [b.detach().double().requires_grad_(True) for b in layer.blobs]
    return layer.blobs


def t64(x, grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.asarray(x, np.float64), requires_grad=grad)


def projection(tops: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_i <w_i, top_i>: a scalar whose gradient is the layer's backward for top diffs w."""
    total = torch.zeros((), dtype=torch.float64)
    for t, w in zip(tops, weights):
        total = total + (t * w).sum()
    return total


def _central(f: Callable[[], torch.Tensor], x: torch.Tensor, direction: torch.Tensor, eps: float) -> float:
    """(f(x + eps d) - f(x - eps d)) / (2 eps), with ``x`` restored afterwards."""
    old = x.data.clone()
    x.data.add_(direction, alpha=eps)
    hi = float(f())
    x.data.copy_(old - eps * direction)
    lo = float(f())
    x.data.copy_(old)
    return (hi - lo) / (2 * eps)


def numeric_checks(
    f: Callable[[], torch.Tensor],
    x: torch.Tensor,
    grad: np.ndarray,
    rng: np.random.Generator,
    eps: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (autograd, finite difference) of directional derivatives of the scalar f() at ``x``: every
    entry when ``x`` has at most 64, else 24 random entries and 8 random directions (so each check costs
    at most 64 forward pairs)."""
    n = x.numel()
    if n <= 64:
        dirs = list(np.eye(n))
    else:
        dirs = list(np.eye(n)[rng.choice(n, 24, replace=False)]) + list(rng.normal(size=(8, n)))
    got, want = [], []
    for d in dirs:
        got.append(float(grad.reshape(-1) @ d))
        want.append(_central(f, x, torch.tensor(d, dtype=x.dtype).reshape(x.shape), eps))
    return np.array(got), np.array(want)


def check_gradients(
    layer: Layer,
    bottoms: Sequence[torch.Tensor],
    wrt: Sequence[torch.Tensor],
    tol: float = 1e-6,
    seed: int = 0,
) -> float:
    """Autograd's gradients of sum <w, tops> for random top diffs w against finite differences (see
    numeric_checks), for every tensor in ``wrt`` (bottoms that want gradients and/or the layer's float64
    parameters); returns the largest relative error and asserts it is within ``tol``."""
    rng = np.random.default_rng(seed)
    tops = layer.forward(list(bottoms))
    weights = [torch.tensor(rng.normal(size=tuple(t.shape))) for t in tops]

    def f() -> torch.Tensor:
        with torch.no_grad():
            return projection(layer.forward(list(bottoms)), weights)

    for t in wrt:
        t.grad = None
    projection(tops, weights).backward()
    worst = 0.0
    for t in wrt:
        grad = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
        got, want = numeric_checks(f, t, grad, rng)
        err = rel(got, want)
        worst = max(worst, err)
        assert err <= tol, (tuple(t.shape), err)
    return worst


def net_from(text: str, phase: int = caffe_pb2.TEST, **kw) -> Net:
    """A Net from prototxt text."""
    return Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase, **kw)


def input_layer(shapes: dict[str, tuple[int, ...]]) -> str:
    tops = "".join(f' top: "{n}"' for n in shapes)
    dims = "".join("shape {" + "".join(f" dim: {d}" for d in s) + " }" for s in shapes.values())
    return f'layer {{ name: "in" type: "Input"{tops} input_param {{ {dims} }} }}\n'
