"""Embed and Parameter: forward against numpy, parameter gradients by central finite differences in float64
(relative error <= 1e-6), blob shapes and order as Caffe stores them, and Parameter's diff semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from layer_harness import build, check_gradients, input_layer, net_from, rel, t64

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError

RNG = np.random.default_rng(3)
EMBED = (
    'type: "Embed" embed_param {{ num_output: 4 input_dim: 6 {extra} weight_filler {{ type: "gaussian" }} '
    'bias_filler {{ type: "gaussian" }} }}'
)


@pytest.mark.parametrize("bias", [True, False])
def test_embed_lookup_and_parameter_gradients(bias):
    layer, tops = build(EMBED.format(extra="" if bias else "bias_term: false"), [(2, 3)])
    assert tops == [(2, 3, 4)]
    assert [tuple(b.shape) for b in layer.blobs] == ([(6, 4), (4,)] if bias else [(6, 4)])
    params = [b.detach().double().requires_grad_(True) for b in layer.blobs]
    layer.blobs = params
    index = t64([[0, 5, 2.9], [5, 5, 1]])  # 2.9 -> 2 as static_cast<int>; repeated rows accumulate
    w = params[0].detach().numpy()
    want = w[[[0, 5, 2], [5, 5, 1]]] + (params[1].detach().numpy() if bias else 0)
    assert rel(layer.forward([index])[0].detach(), want) == 0
    check_gradients(layer, [index], params)
    params[0].grad = None
    layer.forward([index])[0].sum().backward()
    assert params[0].grad[:, 0].tolist() == [1, 1, 1, 0, 0, 3]


@pytest.mark.parametrize(
    "text,index,match",
    [
        ('type: "Embed" embed_param { input_dim: 3 }', None, "num_output must be positive"),
        ('type: "Embed" embed_param { num_output: 3 }', None, "input_dim must be positive"),
        ('type: "Embed" embed_param { num_output: 2 input_dim: 3 }', [0, 3], r"outside \[0, 3\)"),
        ('type: "Embed" embed_param { num_output: 2 input_dim: 3 }', [-1, 0], r"outside \[0, 3\)"),
        (
            'type: "Embed" propagate_down: true embed_param { num_output: 2 input_dim: 3 }',
            None,
            "index input",
        ),
    ],
)
def test_embed_checks(text, index, match):
    with pytest.raises(NetError, match=match):
        layer, _ = build(text, [(2,)])
        layer.forward([t64(index)])


def test_embed_caffemodel_roundtrip(tmp_path):
    text = (
        input_layer({"i": (3,)})
        + 'layer { name: "e" type: "Embed" bottom: "i" top: "e" '
        + EMBED.format(extra="")[14:]
        + " }"
    )
    net = net_from(text)
    net.save(tmp_path / "e.caffemodel")
    saved = caffe_pb2.NetParameter.FromString((tmp_path / "e.caffemodel").read_bytes())
    assert [list(b.shape.dim) for b in saved.layer[1].blobs] == [[6, 4], [4]]
    other = net_from(text, weights=str(tmp_path / "e.caffemodel"))
    assert rel(other.params["e"][0].data, net.params["e"][0].data) == 0


def test_parameter_layer_is_its_blob():
    layer, tops = build('type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }', [])
    assert tops == [(2, 3)] and layer.blobs[0].shape == (2, 3)
    assert float(layer.blobs[0].abs().sum()) == 0  # Caffe gives it no filler: zeros until weights load
    (p,) = [b.detach().double().normal_().requires_grad_(True) for b in layer.blobs]
    layer.blobs = [p]
    assert rel(layer.forward([])[0].detach(), p.detach()) == 0
    check_gradients(layer, [], [p])


def test_parameter_diff_is_overwritten_each_backward_like_caffe():
    """Caffe shares the top's diff with the blob, so a second backward (iter_size 2) replaces the diff;
    an InnerProduct's weight diff in the same net accumulates."""
    text = (
        (
            input_layer({"x": (2, 3)})
            + 'layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 3 } } }\n'
            + 'layer { name: "s" type: "Eltwise" bottom: "x" bottom: "p" bottom: "p" top: "s" }\n'
            + 'layer { name: "ip" type: "InnerProduct" bottom: "s" top: "ip" '
            + 'inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }\n'
            + 'layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "t" top: "loss" }\n'
        )
        .replace('top: "x"', 'top: "x" top: "t"')
        .replace("dim: 3 } }", "dim: 3 } shape { dim: 2 dim: 2 } }", 1)
    )
    net = net_from(text, caffe_pb2.TRAIN)
    net.blobs["x"].data[...] = RNG.normal(size=(2, 3))
    net.blobs["t"].data[...] = RNG.normal(size=(2, 2))
    net.params["p"][0].data[...] = RNG.normal(size=(2, 3))
    net.forward()
    net.backward()
    once_p = net.params["p"][0].diff.copy()
    once_w = net.params["ip"][0].diff.copy()
    net.forward()
    net.backward()
    assert rel(net.params["p"][0].diff, once_p) <= 1e-7  # replaced
    assert rel(net.params["ip"][0].diff, 2 * once_w) <= 1e-6  # accumulated
    # within one pass the two uses of p are summed (Caffe's Split): dp = 2 * dx
    net.keep_blob_diffs = True
    net.clear_param_diffs()
    net.forward()
    net.backward()
    ws = net.params["ip"][0].data
    x = net.blobs["x"].data + 2 * net.params["p"][0].data
    dip = (x @ ws.T - net.blobs["t"].data) / 2
    assert rel(net.params["p"][0].diff, 2 * dip @ ws) <= 1e-5


def test_parameter_takes_no_bottom():
    with pytest.raises(NetError, match="takes 0 bottoms"):
        build('type: "Parameter" parameter_param { shape { dim: 2 } }', [(2,)])


def test_parameter_in_test_phase_is_plain_copy():
    layer, _ = build('type: "Parameter" parameter_param { shape { dim: 2 } }', [])
    with torch.no_grad():
        layer.blobs[0] += 1
    assert layer.forward([])[0].tolist() == [1.0, 1.0]
