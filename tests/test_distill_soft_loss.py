"""SoftmaxCrossEntropyLoss against numpy (value and gradient), and soft labels reaching the net through a
second Data layer aligned with the image LMDB."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pixsent.engine.net", reason="engine Net not available yet")

import pixsent.engine.layers.soft_loss  # noqa: E402,F401  (registers the layer)
from pixsent.caffe.proto import caffe_pb2  # noqa: E402
from pixsent.engine.net import Net  # noqa: E402
from pixsent.formats.prototxt import parse_net  # noqa: E402

NET = """
name: "soft" force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 5 dim: 3 } } }
layer { name: "t" type: "Input" top: "t" input_param { shape { dim: 5 dim: 3 dim: 1 dim: 1 } } }
layer { name: "loss" type: "SoftmaxCrossEntropyLoss" bottom: "x" bottom: "t" top: "loss" loss_weight: 2 }
"""


def _reference(x: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    z = x - x.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    loss = -(t * np.log(p)).sum() / x.shape[0]
    grad = (p * t.sum(1, keepdims=True) - t) / x.shape[0]
    return float(loss), grad


def test_value_and_gradient_match_numpy():
    rng = np.random.RandomState(0)
    x = rng.randn(5, 3).astype(np.float64) * 3
    t = rng.dirichlet(np.ones(3), size=5)
    net = Net(parse_net(NET), caffe_pb2.TRAIN)
    net.blobs["x"].data[...] = x
    net.blobs["t"].data[...] = t.reshape(5, 3, 1, 1)
    loss = net.forward()
    net.backward()
    ref_loss, ref_grad = _reference(x, t)
    # float32 net: tolerances 1e-5 relative (stated)
    assert abs(loss - 2 * ref_loss) <= 1e-5 * abs(2 * ref_loss)
    rel = np.abs(net.blobs["x"].diff - 2 * ref_grad).max() / np.abs(2 * ref_grad).max()
    assert rel < 1e-5
    # one-hot targets: equals SoftmaxWithLoss (the paper's loss)
    onehot = np.eye(3)[[0, 2, 1, 1, 0]]
    net.blobs["t"].data[...] = onehot.reshape(5, 3, 1, 1)
    hard = -np.log(
        np.exp(x - x.max(1, keepdims=True)) / np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)
    )
    assert net.forward() == pytest.approx(2 * hard[np.arange(5), [0, 2, 1, 1, 0]].mean(), rel=1e-5)


def test_soften_aligns_soft_labels_with_images(tmp_path):
    """Image LMDB (shuffled by convert_imageset) + soft LMDB under the same keys: every TRAIN batch's hard
    label equals argmax of its soft label, over a wrap-around of the database."""
    import cv2

    from pixsent.data.imageset import convert_imageset
    from pixsent.distill.student import soften, write_soft_lmdb

    rng = np.random.RandomState(1)
    names, scores = [], {}
    for i in range(11):
        name = f"im{i}.png"
        cv2.imwrite(str(tmp_path / name), rng.randint(0, 255, (8, 8, 3)).astype(np.uint8))
        p_pos = float(rng.uniform(0.8, 1.0) if i % 3 else rng.uniform(0.0, 0.2))
        names.append(f"{name} {int(p_pos > 0.5)}\n")
        scores[name] = (1 - p_pos, p_pos)
    (tmp_path / "list.txt").write_text("".join(names))
    convert_imageset(
        tmp_path, tmp_path / "list.txt", tmp_path / "img_lmdb", shuffle=True, seed=3, progress=False
    )
    assert write_soft_lmdb(tmp_path / "img_lmdb", scores, tmp_path / "soft_lmdb") == 11
    net_param = parse_net(f"""
name: "t"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  data_param {{ source: "{tmp_path / "img_lmdb"}" batch_size: 4 backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  data_param {{ source: "{tmp_path / "img_lmdb"}" batch_size: 4 backend: LMDB }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param {{ num_output: 2 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }}
""")
    soft = soften(net_param, tmp_path / "soft_lmdb")
    types = {(layer.name, layer.type, tuple(r.phase for r in layer.include)) for layer in soft.layer}
    assert ("soft_label", "Data", (caffe_pb2.TRAIN,)) in types
    assert ("loss", "SoftmaxCrossEntropyLoss", (caffe_pb2.TRAIN,)) in types
    assert ("loss", "SoftmaxWithLoss", (caffe_pb2.TEST,)) in types
    net = Net(soft, caffe_pb2.TRAIN)
    for _ in range(6):  # 24 items: wraps around the 11 twice
        net.forward()
        hard = net.blobs["label"].data
        probs = net.blobs["soft_label"].data.reshape(4, 2)
        np.testing.assert_array_equal(hard, probs.argmax(1))
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    test_net = Net(soft, caffe_pb2.TEST)
    assert "soft_label" not in test_net.blobs
