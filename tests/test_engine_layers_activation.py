"""Clip and Swish (BVLC master): forward against numpy, backward by central finite differences in float64
(relative error <= 1e-6), Clip's gradient at its bounds as clip_layer.cpp (inclusive)."""

from __future__ import annotations

import numpy as np
import pytest
from layer_harness import build, check_gradients, rel, t64

from pixsent.errors import NetError

RNG = np.random.default_rng(8)


def test_clip_forward_backward():
    layer, _ = build('type: "Clip" clip_param { min: -0.5 max: 0.75 }', [(3, 4, 5)])
    x = RNG.normal(size=(3, 4, 5))
    xb = t64(x, True)
    assert rel(layer.forward([xb])[0].detach(), np.maximum(-0.5, np.minimum(x, 0.75))) == 0
    check_gradients(layer, [xb], [xb])  # no input sits on a bound


def test_clip_gradient_passes_at_both_bounds():
    layer, _ = build('type: "Clip" clip_param { min: -0.5 max: 0.75 }', [(5,)])
    x = t64([-0.6, -0.5, 0.0, 0.75, 0.8], True)
    layer.forward([x])[0].sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 0]


def test_clip_min_above_max_gives_min():
    layer, _ = build('type: "Clip" clip_param { min: 1 max: -1 }', [(3,)])
    assert layer.forward([t64([-2.0, 0.0, 2.0])])[0].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("param", ["", "clip_param { min: 0 }", "clip_param { max: 0 }"])
def test_clip_needs_both_bounds(param):
    with pytest.raises(NetError, match="min: ... max"):
        build(f'type: "Clip" {param}', [(2,)])


@pytest.mark.parametrize("beta", [None, 1.0, 0.5, 2.5])
def test_swish_forward_backward(beta):
    p = "" if beta is None else f"swish_param {{ beta: {beta} }}"
    layer, _ = build(f'type: "Swish" {p}', [(2, 3, 4)])
    b = 1.0 if beta is None else beta
    x = RNG.normal(size=(2, 3, 4)) * 3
    xb = t64(x, True)
    assert rel(layer.forward([xb])[0].detach(), x / (1 + np.exp(-b * x))) <= 1e-15
    check_gradients(layer, [xb], [xb])
    # swish_layer.cpp's backward: dy * (beta y + sigmoid(beta x) (1 - beta y))
    xb.grad = None
    y = layer.forward([xb])[0]
    y.sum().backward()
    s = 1 / (1 + np.exp(-b * x))
    yv = x * s
    assert rel(xb.grad.numpy(), b * yv + s * (1 - b * yv)) <= 1e-12
