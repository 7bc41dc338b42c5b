"""Reduction and MVN against numpy references of reduction_layer.cpp / mvn_layer.cpp; backward by central
finite differences in float64 (relative error <= 1e-6), and MVN's non-exact backward against Caffe's
formula (<= 1e-12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from layer_harness import build, check_gradients, rel, t64

from pixsent.errors import NetError

RNG = np.random.default_rng(5)
OPS = {"SUM": np.sum, "ASUM": lambda v, axis: np.abs(v).sum(axis), "SUMSQ": lambda v, axis: (v * v).sum(axis)}


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, 2.5), (-1, -0.5), (2, 1.0)])
def test_reduction_forward_backward(op, axis, coeff):
    shape = (2, 3, 4)
    layer, tops = build(
        f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}', [shape]
    )
    a = axis % 3
    assert tops[0] == shape[:a]
    x = RNG.normal(size=shape)
    rows = x.reshape(*shape[:a], -1)
    if op == "MEAN":  # Caffe scales the sum by coeff / count computed in float32
        want = rows.sum(-1) * float(np.float32(coeff) / np.float32(rows.shape[-1]))
    else:
        want = coeff * OPS[op](rows, axis=-1)
    xb = t64(x, True)
    assert rel(layer.forward([xb])[0].detach(), want) <= 1e-12
    check_gradients(layer, [xb], [xb])


def test_reduction_asum_gradient_is_zero_at_zero():
    layer, _ = build('type: "Reduction" reduction_param { operation: ASUM }', [(4,)])
    x = t64([-2.0, 0.0, 3.0, 0.0], True)
    layer.forward([x])[0].backward()
    assert x.grad.tolist() == [-1.0, 0.0, 1.0, 0.0]  # caffe_cpu_sign


def caffe_mvn(x: np.ndarray, across: bool, normalize: bool, eps: float) -> np.ndarray:
    n, c = x.shape[0], x.shape[1] if x.ndim > 1 else 1
    rows = x.reshape(n if across else n * c, -1)
    centred = rows - rows.mean(1, keepdims=True)
    if normalize:
        centred = centred / (np.sqrt((centred**2).mean(1, keepdims=True)) + eps)
    return centred.reshape(x.shape)


def caffe_mvn_backward(y: np.ndarray, dy: np.ndarray, std_eps: np.ndarray, dim: int) -> np.ndarray:
    """mvn_layer.cpp Backward_cpu with normalize_variance, on (num, dim) rows."""
    inner = dy.sum(1, keepdims=True) + y * (y * dy).sum(1, keepdims=True)
    return (dy - inner / dim) / std_eps


@pytest.mark.parametrize(
    "param,across,normalize",
    [("", False, True), ("across_channels: true", True, True), ("normalize_variance: false", False, False)],
)
def test_mvn_forward_and_gradient(param, across, normalize):
    shape = (2, 3, 4, 5)
    layer, _ = build(f'type: "MVN" mvn_param {{ {param} eps: 0.001 }}', [shape])
    x = RNG.normal(size=shape) * 3 + 1
    xb = t64(x, True)
    eps = float(np.float32(0.001))
    assert rel(layer.forward([xb])[0].detach(), caffe_mvn(x, across, normalize, eps)) <= 1e-12
    if not normalize:
        check_gradients(layer, [xb], [xb])
        return
    # Caffe's backward divides the last term by std + eps, the exact gradient by std: compare the formula
    y = layer.forward([xb])[0]
    dy = RNG.normal(size=shape)
    y.backward(torch.tensor(dy))
    num = shape[0] if across else shape[0] * shape[1]
    rows = x.reshape(num, -1)
    std_eps = np.sqrt(((rows - rows.mean(1, keepdims=True)) ** 2).mean(1, keepdims=True)) + eps
    want = caffe_mvn_backward(
        y.detach().numpy().reshape(num, -1), dy.reshape(num, -1), std_eps, rows.shape[1]
    )
    assert rel(xb.grad.numpy(), want.reshape(shape)) <= 1e-12
    # and with the default eps 1e-9 it is the exact gradient up to finite-difference precision
    layer, _ = build(f'type: "MVN" mvn_param {{ {param} }}', [shape])
    check_gradients(layer, [xb], [xb], tol=1e-6)


def test_mvn_differs_from_exact_gradient_where_caffe_does():
    """With a large eps Caffe's gradient is measurably not the exact one: the test can tell them apart."""
    layer, _ = build('type: "MVN" mvn_param { eps: 0.5 }', [(1, 1, 6)])
    x = t64(RNG.normal(size=(1, 1, 6)), True)
    with pytest.raises(AssertionError):
        check_gradients(layer, [x], [x], tol=1e-3)


def test_mvn_2d_and_5d():
    layer, _ = build('type: "MVN" mvn_param { across_channels: true }', [(3, 4)])
    x = RNG.normal(size=(3, 4))
    assert rel(layer.forward([t64(x)])[0], caffe_mvn(x, True, True, float(np.float32(1e-9)))) <= 1e-9
    with pytest.raises(NetError, match="at most|4 axes|N x C x H x W"):
        build('type: "MVN"', [(1, 2, 3, 4, 5)])
