"""Crop, Tile, Filter, BatchReindex and ArgMax against numpy references written from Caffe's loops;
backward by central finite differences in float64 (relative error <= 1e-6; forward exact)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from layer_harness import build, check_gradients, rel, t64

from pixsent.errors import NetError

RNG = np.random.default_rng(11)


# ---------------------------------------------------------------- Crop
def caffe_crop(x: np.ndarray, ref_shape: tuple[int, ...], axis: int, offsets: list[int]) -> np.ndarray:
    """crop_layer.cpp Reshape + crop_copy: axes >= axis take the reference size at their offset."""
    axis = axis + x.ndim if axis < 0 else axis
    window = []
    for i in range(x.ndim):
        if i < axis:
            window.append(slice(None))
            continue
        off = offsets[0] if len(offsets) == 1 else offsets[i - axis] if offsets else 0
        window.append(slice(off, off + ref_shape[i]))
    return x[tuple(window)]


@pytest.mark.parametrize(
    "param,axis,offsets,data,ref",
    [
        ("", 2, [], (2, 3, 7, 8), (1, 1, 4, 5)),
        ("axis: 2 offset: 2", 2, [2], (2, 3, 7, 8), (1, 1, 4, 5)),
        ("axis: 1 offset: 1 offset: 2 offset: 3", 1, [1, 2, 3], (2, 4, 7, 8), (2, 2, 4, 5)),
        ("axis: -1 offset: 3", -1, [3], (2, 3, 7, 8), (1, 1, 1, 5)),
        ("axis: 0 offset: 1", 0, [1], (3, 4, 5), (2, 2, 2)),
    ],
)
def test_crop_forward_backward(param, axis, offsets, data, ref):
    layer, tops = build(f'type: "Crop" crop_param {{ {param} }}', [data, ref])
    x = RNG.normal(size=data)
    want = caffe_crop(x, ref, axis, offsets)
    assert tops[0] == want.shape
    xb, rb = t64(x, True), t64(RNG.normal(size=ref), True)
    assert rel(layer.forward([xb, rb])[0].detach(), want) == 0
    check_gradients(layer, [xb, rb], [xb])
    layer.forward([xb, rb])[0].sum().backward()
    assert rb.grad is None  # the reference bottom only gives its shape


@pytest.mark.parametrize(
    "param,data,ref,match",
    [
        ("axis: 1 offset: 1 offset: 1", (2, 3, 7, 8), (2, 2, 4, 5), "one per axis"),
        ("axis: 2 offset: 4", (2, 3, 7, 8), (1, 1, 4, 5), "does not fit axis 2"),
        ("axis: 4", (2, 3, 7, 8), (1, 1, 4, 5), "axis 4 out of range"),
    ],
)
def test_crop_setup_checks(param, data, ref, match):
    with pytest.raises(NetError, match=match):
        build(f'name: "cr" type: "Crop" crop_param {{ {param} }}', [data, ref])


# ---------------------------------------------------------------- Tile
@pytest.mark.parametrize(
    "axis,tiles,shape", [(1, 3, (2, 3, 4)), (0, 2, (2, 3)), (-1, 2, (2, 3, 2)), (2, 1, (2, 2, 3))]
)
def test_tile_forward_backward(axis, tiles, shape):
    layer, tops = build(f'type: "Tile" tile_param {{ axis: {axis} tiles: {tiles} }}', [shape])
    x = RNG.normal(size=shape)
    a = axis % len(shape)
    reps = [1] * len(shape)
    reps[a] = tiles
    want = np.tile(x, reps)  # tile_layer.cpp copies the whole block from axis on, tiles times
    assert tops[0] == want.shape
    xb = t64(x, True)
    assert rel(layer.forward([xb])[0].detach(), want) == 0
    check_gradients(layer, [xb], [xb])


@pytest.mark.parametrize("param,match", [("axis: 1", "tiles"), ("axis: 1 tiles: 0", "positive")])
def test_tile_setup_checks(param, match):
    with pytest.raises(NetError, match=match):
        build(f'type: "Tile" tile_param {{ {param} }}', [(2, 3)])


# ---------------------------------------------------------------- Filter
def test_filter_selects_items_and_routes_gradients():
    layer, tops = build('type: "Filter" top: "a" top: "b"', [(5, 3, 2), (5, 4), (5, 1, 1)])
    assert tops == [(5, 3, 2), (5, 4)]  # set-up keeps the full batch (Caffe's first Reshape)
    a, b = t64(RNG.normal(size=(5, 3, 2)), True), t64(RNG.normal(size=(5, 4)), True)
    sel = t64(np.array([0, 1.0, 0, -2.5, 1]).reshape(5, 1, 1), True)
    out = layer.forward([a, b, sel])
    keep = [1, 3, 4]
    assert rel(out[0].detach(), a.detach().numpy()[keep]) == 0
    assert rel(out[1].detach(), b.detach().numpy()[keep]) == 0
    check_gradients(layer, [a, b, sel], [a, b])
    a.grad = None
    layer.forward([a, b, sel])[0].sum().backward()
    assert np.all(a.grad.numpy()[[0, 2]] == 0) and np.all(a.grad.numpy()[keep] == 1)
    assert sel.grad is None


def test_filter_keeps_nothing():
    layer, _ = build('type: "Filter" top: "a"', [(3, 2), (3,)])
    out = layer.forward([t64(np.ones((3, 2))), t64(np.zeros(3))])
    assert tuple(out[0].shape) == (0, 2)


@pytest.mark.parametrize(
    "shapes,extra,match",
    [
        ([(3, 2), (3, 2)], "", "selector shape"),
        ([(4, 2), (3,)], "", "differ in axis 0"),
        (
            [(3, 2), (3,)],
            "propagate_down: true propagate_down: true",
            "cannot back-propagate to its selector",
        ),
    ],
)
def test_filter_setup_checks(shapes, extra, match):
    with pytest.raises(NetError, match=match):
        build(f'name: "f" type: "Filter" top: "a" {extra}', shapes)


# ---------------------------------------------------------------- BatchReindex
def test_batch_reindex_forward_and_summed_backward():
    layer, tops = build('type: "BatchReindex"', [(4, 3, 2), (6,)])
    assert tops == [(6, 3, 2)]
    x = t64(RNG.normal(size=(4, 3, 2)), True)
    index = t64([3, 0, 3, 1, 3.7, 0])  # 3.7 -> 3 as static_cast<int>
    out = layer.forward([x, index])[0]
    assert rel(out.detach(), x.detach().numpy()[[3, 0, 3, 1, 3, 0]]) == 0
    check_gradients(layer, [x, index], [x])
    x.grad = None
    layer.forward([x, index])[0].sum().backward()
    assert x.grad.numpy()[:, 0, 0].tolist() == [2, 1, 0, 3]  # diffs of every copy summed, item 2 unused


@pytest.mark.parametrize(
    "shapes,index,extra,match",
    [
        ([(4, 2), (2, 1)], None, "", "1 axis"),
        ([(4, 2), (2,)], [0, 4], "", r"\[0, 4\)"),
        ([(4, 2), (2,)], [-1, 0], "", r"\[0, 4\)"),
        ([(4, 2), (2,)], None, "propagate_down: true propagate_down: true", "index"),
    ],
)
def test_batch_reindex_checks(shapes, index, extra, match):
    with pytest.raises(NetError, match=match):
        layer, _ = build(f'type: "BatchReindex" {extra}', shapes)
        layer.forward([t64(np.zeros(shapes[0])), t64(index)])


# ---------------------------------------------------------------- ArgMax
def caffe_argmax(x: np.ndarray, top_k: int, out_max_val: bool, axis: int | None) -> np.ndarray:
    """argmax_layer.cpp Forward_cpu: (value, index) pairs partially sorted with std::greater."""
    if axis is None:
        num, dim, axis_dist = x.shape[0], x[0].size, 1
        shape = [1] * max(3, x.ndim)
        shape[0], shape[1], shape[2] = x.shape[0], 2 if out_max_val else 1, top_k
    else:
        dim = x.shape[axis]
        axis_dist = int(np.prod(x.shape[axis + 1 :]))
        num = x.size // dim
        shape = list(x.shape)
        shape[axis] = top_k
    flat, top = x.reshape(-1), np.zeros(int(np.prod(shape)))
    for i in range(num):
        pairs = [(flat[(i // axis_dist * dim + j) * axis_dist + i % axis_dist], j) for j in range(dim)]
        pairs.sort(reverse=True)
        for j in range(top_k):
            if out_max_val and axis is None:
                top[2 * i * top_k + j] = pairs[j][1]
                top[2 * i * top_k + top_k + j] = pairs[j][0]
            else:
                where = (i // axis_dist * top_k + j) * axis_dist + i % axis_dist
                top[where] = pairs[j][0] if out_max_val else pairs[j][1]
    return top.reshape(shape)


@pytest.mark.parametrize(
    "param,axis,top_k,out_max_val,shape",
    [
        ("", None, 1, False, (3, 4, 2, 2)),
        ("top_k: 3", None, 3, False, (3, 10)),
        ("top_k: 2 out_max_val: true", None, 2, True, (2, 5, 3)),
        ("axis: 1 top_k: 2", 1, 2, False, (2, 5, 3)),
        ("axis: 2 top_k: 2 out_max_val: true", 2, 2, True, (2, 3, 4, 2)),
        ("axis: -1", -1, 1, False, (2, 3, 4)),
    ],
)
def test_argmax_matches_caffe_with_ties(param, axis, top_k, out_max_val, shape):
    layer, tops = build(f'type: "ArgMax" argmax_param {{ {param} }}', [shape])
    x = RNG.integers(0, 4, size=shape).astype(np.float64)  # many ties: Caffe lists the larger index first
    want = caffe_argmax(x, top_k, out_max_val, None if axis is None else axis % len(shape))
    assert tops[0] == want.shape
    got = layer.forward([t64(x)])[0]
    assert rel(got, want) == 0
    assert not got.requires_grad


@pytest.mark.parametrize(
    "param,match",
    [("top_k: 0", "less than 1"), ("axis: 1 top_k: 5", "exceeds axis"), ("top_k: 13", "exceeds the")],
)
def test_argmax_setup_checks(param, match):
    with pytest.raises(NetError, match=match):
        build(f'type: "ArgMax" argmax_param {{ {param} }}', [(2, 4, 3)])


def test_argmax_ignores_gradient_requests():
    layer, _ = build('type: "ArgMax" argmax_param { out_max_val: true axis: 1 }', [(2, 3)])
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert not layer.forward([x])[0].requires_grad  # Caffe's ArgMax has no backward
