"""Sentiment maps of a net that is fully convolutional already (SqueezeNet's kind): a classifier convolution
(1x1, pad 1, ReLU in place) before global average pooling, on a small seeded net.

The map must be the classifier's ReLU'd scores with a softmax over the channels at each location, without
the ring of cells that sees only the convolution's zero padding (each holds relu(bias), whatever the image:
checked here), and the image-level answer must be the net's own ``prob``. Tolerance: absolute 1e-6 on
probabilities (float32 nets, same engine).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from pixsent.analysis import maps
from pixsent.analysis import surgery as surg
from pixsent.caffe.proto import caffe_pb2
from pixsent.cli import main

pytest.importorskip("pixsent.engine.net", reason="engine Net not available")

SIZE = 20
NET = f"""
name: "tiny_squeeze"
layer {{ name: "data" type: "Input" top: "data"
  input_param {{ shape {{ dim: 1 dim: 3 dim: {SIZE} dim: {SIZE} }} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 3 stride: 2 }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "cls_twitter" type: "Convolution" bottom: "conv1" top: "cls_twitter"
  convolution_param {{ num_output: 2 kernel_size: 1 pad: 1 }} }}
layer {{ name: "relu_cls" type: "ReLU" bottom: "cls_twitter" top: "cls_twitter" }}
layer {{ name: "pool_final" type: "Pooling" bottom: "cls_twitter" top: "pool_final"
  pooling_param {{ pool: AVE global_pooling: true }} }}
layer {{ name: "prob" type: "Softmax" bottom: "pool_final" top: "prob" }}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """The net's prototxt and a caffemodel of seeded weights (positive biases: the ReLU passes the ring)."""
    from pixsent.engine.net import Net

    root = tmp_path_factory.mktemp("scoremap")
    proto = root / "deploy.prototxt"
    proto.write_text(NET)
    net = Net(str(proto), caffe_pb2.TEST)
    rng = np.random.default_rng(11)
    for blobs in net.params.values():
        blobs[0].data[...] = rng.normal(0, 0.2, blobs[0].data.shape)
        blobs[1].data[...] = rng.uniform(0.1, 0.5, blobs[1].data.shape)
    weights = root / "weights.caffemodel"
    net.save(str(weights))
    return {"proto": proto, "weights": weights, "root": root}


def _deploy_forward(tiny, x: np.ndarray) -> dict[str, np.ndarray]:
    from pixsent.engine.net import Net

    net = Net(str(tiny["proto"]), caffe_pb2.TEST, weights=str(tiny["weights"]))
    net.blobs["data"].data[...] = x[None]
    net.forward()
    return {b: np.array(net.blobs[b].data[0], copy=True) for b in ("cls_twitter", "prob")}


def test_score_map_found_with_its_padding_border(tiny, golden):
    head = surg.score_map(text_format.Parse(NET, caffe_pb2.NetParameter()))
    assert head == surg.ScoreMap(
        "cls_twitter", "cls_twitter", "pool_final", caffe_pb2.PoolingParameter.AVE, 1
    )
    mini = golden / "mini_caffenet"
    from pixsent.formats.prototxt import read_net

    assert surg.score_map(read_net(mini / "deploy.prototxt")) is None  # fc layers: surgery converts them
    assert surg.score_map(read_net(mini / "fullconv.prototxt")) is None  # no global pooling: a map already


def test_score_map_net_is_cut_after_the_relu(tiny):
    net = text_format.Parse(NET, caffe_pb2.NetParameter())
    out = surg.score_map_net(net, surg.score_map(net), size=40)
    assert [layer.name for layer in out.layer] == [
        "data",
        "conv1",
        "relu1",
        "cls_twitter",
        "relu_cls",
        "prob_map",
    ]
    assert list(out.layer[0].input_param.shape[0].dim) == [1, 3, 40, 40]
    assert out.layer[-1].type == "Softmax" and list(out.layer[-1].bottom) == ["cls_twitter"]


def test_map_is_the_softmax_of_the_scores_and_the_global_answer_the_nets(tiny):
    cfg = maps.MapConfig(size=None, mean=np.zeros(3), work_dir=tiny["root"])
    net = maps.MapNet.open(tiny["weights"], tiny["proto"], cfg)
    assert net.head is not None and net.net.blobs["data"].data.shape == (1, 3, SIZE, SIZE)  # its own size
    x = np.random.default_rng(3).normal(0, 50, (3, SIZE, SIZE)).astype(np.float32)
    prob, overall = net.predict(x)
    ref = _deploy_forward(tiny, x)
    scores = ref["cls_twitter"]  # (2, 11, 11) after the in-place ReLU
    assert scores.shape == (2, 11, 11)
    bias = net.net.params["cls_twitter"][1].data
    for ring in (scores[:, 0, :], scores[:, -1, :], scores[:, :, 0], scores[:, :, -1]):
        np.testing.assert_allclose(ring, np.maximum(bias, 0)[:, None] * np.ones_like(ring), atol=1e-6)
    inner = scores[:, 1:-1, 1:-1]
    e = np.exp(inner - inner.max(0))
    assert prob.shape == (2, 9, 9)
    np.testing.assert_allclose(prob, e / e.sum(0), atol=1e-6)
    np.testing.assert_allclose(overall, ref["prob"].ravel(), atol=1e-6)
    assert prob[1].std() > 1e-3  # the map varies over the image


def test_surgery_cli_writes_the_score_map_net_and_keeps_the_weights(tiny, tmp_path, capsys):
    assert (
        main(
            [
                "surgery",
                "--weights",
                str(tiny["weights"]),
                "--model",
                str(tiny["proto"]),
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "no InnerProduct to convert: the map is cls_twitter" in out and "1 padding cell" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights_scoremap.prototxt"]


def test_pick_test_images_takes_both_sentiments(tmp_path):
    lines = [f"p{i}.jpg 1" for i in range(6)] + [f"n{i}.jpg 0" for i in range(2)] + ["p6.jpg 1"]
    (tmp_path / "test.txt").write_text("\n".join(lines) + "\n")
    picked = [p.name for p in maps.pick_test_images(tmp_path / "test.txt", tmp_path, 4)]
    assert picked == ["p0.jpg", "p1.jpg", "n0.jpg", "n1.jpg"]
    picked = [p.name for p in maps.pick_test_images(tmp_path / "test.txt", tmp_path, 6)]
    assert picked == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg", "n0.jpg", "n1.jpg"]  # only 2 negatives
    picked = [p.name for p in maps.pick_test_images(tmp_path / "test.txt", tmp_path, 2, exclude=["p0.jpg"])]
    assert picked == ["p1.jpg", "n0.jpg"]
