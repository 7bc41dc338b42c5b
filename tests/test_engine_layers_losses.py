"""HingeLoss, ContrastiveLoss, InfogainLoss and MultinomialLogisticLoss against numpy references written
from Caffe's loops; gradients by central finite differences in float64 (relative error <= 1e-6) where
Caffe's gradient is the exact one, else against Caffe's own backward formula (<= 1e-12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from layer_harness import build, check_gradients, input_layer, net_from, rel, t64

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError
from pixsent.formats.blob import array_to_blob

RNG = np.random.default_rng(17)


# ---------------------------------------------------------------- HingeLoss
def caffe_hinge(x: np.ndarray, label: np.ndarray, norm: str) -> float:
    """hinge_loss_layer.cpp Forward_cpu."""
    num = x.shape[0]
    d = x.reshape(num, -1).copy()
    d[np.arange(num), label.astype(int)] *= -1
    d = np.maximum(0, 1 + d)
    return float(np.abs(d).sum() / num if norm == "L1" else (d * d).sum() / num)


@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("shape", [(4, 5), (3, 2, 2, 2)])
def test_hinge_loss(norm, shape):
    layer, tops = build(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', [shape, (shape[0],)])
    assert tops == [()] and list(layer.param.loss_weight) == [1.0]
    x = RNG.normal(size=shape)
    label = RNG.integers(0, int(np.prod(shape[1:])), size=shape[0]).astype(np.float64)
    xb, lb = t64(x, True), t64(label + 0.25, True)  # labels truncate like static_cast<int>
    assert rel(layer.forward([xb, lb])[0].detach(), caffe_hinge(x, label, norm)) <= 1e-12
    check_gradients(layer, [xb, lb], [xb])
    layer.forward([xb, lb])[0].backward()
    assert lb.grad is None


def test_hinge_l1_gradient_is_zero_on_the_margin():
    layer, _ = build('type: "HingeLoss"', [(1, 3), (1,)])
    x = t64([[0.5, -1.0, 2.0]], True)  # class 1 sits exactly on its margin (1 + (-1) = 0)
    layer.forward([x, t64([0.0])])[0].backward()
    assert x.grad.tolist() == [[-1.0, 0.0, 1.0]]  # caffe_cpu_sign(0) = 0


@pytest.mark.parametrize(
    "shapes,extra,label,match",
    [
        ([(3, 4), (2,)], "", None, "same first dimension"),
        ([(2, 4), (2,)], "propagate_down: true propagate_down: true", None, "label"),
        ([(2, 4), (2,)], "", [0, 4], r"outside \[0, 4\)"),
    ],
)
def test_hinge_checks(shapes, extra, label, match):
    with pytest.raises(NetError, match=match):
        layer, _ = build(f'type: "HingeLoss" {extra}', shapes)
        layer.forward([t64(np.zeros(shapes[0])), t64(label)])


# ---------------------------------------------------------------- ContrastiveLoss
def caffe_contrastive(a, b, y, margin, legacy):
    """contrastive_loss_layer.cpp: loss and the two bottom diffs for a top diff of 1."""
    n = a.shape[0]
    diff = a.reshape(n, -1) - b.reshape(n, -1)
    dist_sq = (diff * diff).sum(1)
    loss, grad = 0.0, np.zeros_like(diff)
    for i in range(n):
        if int(y[i]):
            loss += dist_sq[i]
            grad[i] = diff[i] / n
            continue
        d = np.sqrt(dist_sq[i])
        mdist = margin - dist_sq[i] if legacy else margin - d
        loss += max(mdist, 0.0) if legacy else max(mdist, 0.0) ** 2
        beta = -1 / n if legacy else -mdist / (d + 1e-4) / n
        grad[i] = beta * diff[i] if mdist > 0 else 0
    return loss / n / 2, grad.reshape(a.shape), -grad.reshape(a.shape)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("shape", [(6, 3), (6, 3, 1, 1)])
def test_contrastive_loss(legacy, shape):
    margin = 2.0
    p = f"margin: {margin} legacy_version: {str(legacy).lower()}"
    layer, tops = build(f'type: "ContrastiveLoss" contrastive_loss_param {{ {p} }}', [shape, shape, (6,)])
    a, b = RNG.normal(size=shape) * 0.7, RNG.normal(size=shape) * 0.7
    y = np.array([1, 0, 0, 1.9, 0, -1])  # int(-1) and int(1.9) are similar pairs
    ab, bb, yb = t64(a, True), t64(b, True), t64(y, True)
    loss = layer.forward([ab, bb, yb])[0]
    want, ga, gb = caffe_contrastive(a, b, y, margin, legacy)
    assert rel(loss.detach(), want) <= 1e-12
    loss.backward()
    assert rel(ab.grad.numpy(), ga) <= 1e-12 and rel(bb.grad.numpy(), gb) <= 1e-12
    assert yb.grad is None
    if legacy:  # the legacy gradient is the exact one
        check_gradients(layer, [ab, bb, yb], [ab, bb])
    else:  # the default one differs by the 1e-4 in (d + 1e-4): close, but measurably not exact
        err = check_gradients(layer, [ab, bb, yb], [ab, bb], tol=1e-3)
        assert err > 1e-7


def test_contrastive_loss_pairs_beyond_the_margin_get_no_gradient():
    layer, _ = build('type: "ContrastiveLoss" contrastive_loss_param { margin: 0.5 }', [(1, 2), (1, 2), (1,)])
    a, b = t64([[3.0, 0.0]], True), t64([[0.0, 0.0]], True)
    loss = layer.forward([a, b, t64([0.0])])[0]
    loss.backward()
    assert float(loss.detach()) == 0 and float(a.grad.abs().sum()) == 0


@pytest.mark.parametrize(
    "shapes,match",
    [
        ([(2, 3), (2, 4), (2,)], "differ in channels"),
        ([(2, 3, 2), (2, 3, 2), (2,)], "N x C x 1 x 1"),
        ([(2, 3), (2, 3), (2, 2)], "N x C x 1 x 1"),
        ([(2, 3), (3, 3), (2,)], "same first dimension"),
    ],
)
def test_contrastive_checks(shapes, match):
    with pytest.raises(NetError, match=match):
        build('type: "ContrastiveLoss"', shapes)


# ---------------------------------------------------------------- InfogainLoss
def caffe_infogain(x, label, h, axis, ignore=None, mode="VALID"):
    """infogain_loss_layer.cpp: loss and bottom diff for a top diff of 1 (softmax inside)."""
    outer, k, inner = int(np.prod(x.shape[:axis])), x.shape[axis], int(np.prod(x.shape[axis + 1 :]))
    xs = x.reshape(outer, k, inner)
    e = np.exp(xs - xs.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    lab = label.reshape(outer, inner).astype(int)
    loss, count, diff = 0.0, 0, np.zeros_like(p)
    for i in range(outer):
        for j in range(inner):
            if ignore is not None and lab[i, j] == ignore:
                continue
            loss -= (h[lab[i, j]] * np.log(np.maximum(p[i, :, j], 1e-20))).sum()
            diff[i, :, j] = p[i, :, j] * h[lab[i, j]].sum() - h[lab[i, j]]
            count += 1
    norm = {"VALID": count, "FULL": outer * inner, "BATCH_SIZE": outer, "NONE": 1}[mode]
    norm = max(1, norm)
    return loss / norm, (diff / norm).reshape(x.shape)


@pytest.mark.parametrize(
    "shape,axis,extra,ignore,mode",
    [
        ((4, 3), 1, "", None, "VALID"),
        ((2, 3, 2, 2), 1, "loss_param { ignore_label: 1 }", 1, "VALID"),
        ((2, 2, 4), -1, "loss_param { normalization: BATCH_SIZE }", None, "BATCH_SIZE"),
        ((2, 3, 2), 1, "loss_param { ignore_label: 0 normalization: FULL }", 0, "FULL"),
        ((3, 4), 1, "loss_param { normalization: NONE }", None, "NONE"),
    ],
)
def test_infogain_loss_with_h_bottom(shape, axis, extra, ignore, mode):
    a = axis % len(shape)
    k = shape[a]
    label_shape = shape[:a] + shape[a + 1 :]
    layer, tops = build(
        f'type: "InfogainLoss" top: "l" top: "p" infogain_loss_param {{ axis: {axis} }} {extra}',
        [shape, label_shape, (1, 1, k, k)],
    )
    assert tops == [(), shape]
    x = RNG.normal(size=shape) * 2
    label = RNG.integers(0, k, size=label_shape).astype(np.float64)
    h = RNG.uniform(0, 1, size=(k, k)) + np.eye(k)
    xb, lb, hb = t64(x, True), t64(label), t64(h.reshape(1, 1, k, k), True)
    loss, prob = layer.forward([xb, lb, hb])
    want, grad = caffe_infogain(x, label, h, a, ignore, mode)
    assert rel(loss.detach(), want) <= 1e-12
    assert rel(prob.sum(a), np.ones(label_shape)) <= 1e-12 and not prob.requires_grad
    loss.backward()
    assert rel(xb.grad.numpy(), grad) <= 1e-12 and hb.grad is None
    # the gradient is the exact one of the loss (the prob top's diff is ignored, so check the loss alone)
    del layer.param.top[1:]
    check_gradients(layer, [xb, lb, hb], [xb])


def test_infogain_loss_reads_h_from_source(tmp_path):
    h = np.array([[1.0, 0.2, 0.0], [0.1, 2.0, 0.3], [0.0, 0.0, 0.5]], np.float32)
    (tmp_path / "h.binaryproto").write_bytes(array_to_blob(h.reshape(1, 1, 3, 3)).SerializeToString())
    layer, _ = build(
        f'type: "InfogainLoss" infogain_loss_param {{ source: "{tmp_path / "h.binaryproto"}" }}',
        [(4, 3), (4,)],
    )
    x, label = RNG.normal(size=(4, 3)), np.array([0, 1, 2, 1.0])
    want, _ = caffe_infogain(x, label, h.astype(np.float64), 1)
    assert rel(layer.forward([t64(x), t64(label)])[0], want) <= 1e-6  # H in float32


def test_infogain_loss_keeps_caffe_gradient_below_the_log_threshold():
    """p < 1e-20: Caffe clamps the log's value but its gradient stays p * rowsum(H) - H[label]."""
    layer, _ = build('type: "InfogainLoss"', [(1, 2), (1,), (2, 2)])
    x = t64([[0.0, 60.0]], True)  # softmax(x)_0 = e^-60 < 1e-20
    loss = layer.forward([x, t64([0.0]), t64(np.eye(2))])[0]
    assert float(loss.detach()) == pytest.approx(-np.log(1e-20), rel=1e-6)
    loss.backward()
    p0 = np.exp(-60.0) / (1 + np.exp(-60.0))
    assert rel(x.grad.numpy(), [[p0 - 1, 1 - p0]]) <= 1e-12


@pytest.mark.parametrize(
    "text,shapes,match",
    [
        ('type: "InfogainLoss"', [(2, 3), (2,)], "source must be specified"),
        ('type: "InfogainLoss" loss_param { normalize: true }', [(2, 3), (2,), (3, 3)], "deprecated"),
        ('type: "InfogainLoss"', [(2, 3), (2,), (2, 2)], "needs 3 x 3"),
        ('type: "InfogainLoss"', [(2, 3), (2, 2), (3, 3)], "4 labels for 2 x 1"),
        (
            'type: "InfogainLoss" propagate_down: 1 propagate_down: 0 propagate_down: 1',
            [(2, 3), (2,), (3, 3)],
            "matrix",
        ),
        (
            'type: "InfogainLoss" infogain_loss_param { source: "/nonexistent/h" }',
            [(2, 3), (2,)],
            "not found",
        ),
    ],
)
def test_infogain_checks(text, shapes, match):
    with pytest.raises(NetError, match=match):
        build(text, shapes)


# ---------------------------------------------------------------- MultinomialLogisticLoss
@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 2, 1)])
def test_multinomial_logistic_loss(shape):
    layer, tops = build('type: "MultinomialLogisticLoss"', [shape, (shape[0], 1, 1, 1)])
    p = RNG.uniform(0.05, 1, size=shape)
    label = RNG.integers(0, int(np.prod(shape[1:])), size=(shape[0], 1, 1, 1)).astype(np.float64)
    pb = t64(p, True)
    rows = p.reshape(shape[0], -1)
    want = -np.log(rows[np.arange(shape[0]), label.reshape(-1).astype(int)]).sum() / shape[0]
    assert rel(layer.forward([pb, t64(label)])[0].detach(), want) <= 1e-12
    check_gradients(layer, [pb, t64(label)], [pb])


def test_multinomial_logistic_loss_clamps_like_caffe():
    """Below 1e-20 the loss uses 1e-20 and Caffe's gradient is -1 / 1e-20 / N (not the clamp's zero)."""
    layer, _ = build('type: "MultinomialLogisticLoss"', [(2, 2), (2,)])
    p = t64([[0.0, 1.0], [0.5, 0.5]], True)
    loss = layer.forward([p, t64([0.0, 1.0])])[0]
    assert float(loss.detach()) == pytest.approx(
        (-np.log(float(np.float32(1e-20))) - np.log(0.5)) / 2, rel=1e-9
    )
    loss.backward()
    assert rel(p.grad.numpy(), [[-0.5 / float(np.float32(1e-20)), 0], [0, -1.0]]) <= 1e-9


def test_multinomial_logistic_loss_checks():
    with pytest.raises(NetError, match="N x 1 x 1 x 1"):
        build('type: "MultinomialLogisticLoss"', [(2, 3), (2, 3)])


def test_losses_run_in_a_net_with_loss_weight():
    text = (
        input_layer({"x": (4, 3), "y": (4,)})
        + 'layer { name: "h" type: "HingeLoss" bottom: "x" bottom: "y" top: "h" loss_weight: 0.5 }\n'
    )
    net = net_from(text, caffe_pb2.TRAIN)
    net.keep_blob_diffs = True
    x = RNG.normal(size=(4, 3))
    y = np.array([0, 1, 2, 1.0])
    net.blobs["x"].data[...] = x
    net.blobs["y"].data[...] = y
    loss = net.forward()
    assert loss == pytest.approx(0.5 * caffe_hinge(x, y, "L1"), rel=1e-6)
    net.backward()
    assert np.abs(net.blobs["x"].diff).max() == pytest.approx(0.5 / 4)
    assert torch.count_nonzero(net.blobs["y"].grad_tensor) == 0
