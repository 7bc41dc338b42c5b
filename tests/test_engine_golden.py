"""Engine vs real BVLC Caffe: forward blobs, gradients, fully convolutional map, OpenCV's importer.

Tolerance everywhere: relative error = max |ours - caffe| / max |caffe| <= 1e-5 (1e-4 against OpenCV).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.net import Net

TOL = 1e-5


def rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.fixture(scope="module")
def mini(golden):
    return golden / "mini_caffenet"


@pytest.mark.parametrize("weights", ["weights.caffemodel", "weights_v1.caffemodel"])
def test_deploy_forward_matches_every_blob(mini, weights):
    net = Net(mini / "deploy.prototxt", caffe_pb2.TEST, weights=str(mini / weights))
    net.blobs["data"].data[...] = np.load(mini / "input.npy")
    net.forward()
    ref = np.load(mini / "blobs.npz")
    assert list(net.blobs) == list(ref.files)
    for name in ref.files:
        assert rel(net.blobs[name].data, ref[name]) <= TOL, name
    assert net.inputs == ["data"] and net.outputs == ["prob"]


def test_save_is_byte_identical_to_caffe(mini, tmp_path):
    net = Net(mini / "deploy.prototxt", caffe_pb2.TEST, weights=str(mini / "weights.caffemodel"))
    net.save(tmp_path / "w.caffemodel")
    assert (tmp_path / "w.caffemodel").read_bytes() == (mini / "weights.caffemodel").read_bytes()


def test_train_gradients_match(mini):
    net = Net(mini / "train_nodrop.prototxt", caffe_pb2.TRAIN, weights=str(mini / "weights.caffemodel"))
    net.blobs["data"].data[...] = np.load(mini / "input.npy")
    net.blobs["label"].data[...] = np.load(mini / "labels.npy")
    net.clear_param_diffs()
    loss = net.forward()
    net.backward()
    ref = np.load(mini / "grads.npz")
    assert abs(loss - float(ref["loss"])) <= TOL * abs(float(ref["loss"]))
    keys = [k for k in ref.files if "/" in k]
    assert keys == net.learnable_param_names
    for key in keys:
        layer, index = key.split("/")
        assert rel(net.params[layer][int(index)].diff, ref[key]) <= TOL, key
    assert rel(net.blobs["data"].diff, ref["data_diff"]) <= TOL


def test_gradients_accumulate_until_cleared(mini):
    net = Net(mini / "train_nodrop.prototxt", caffe_pb2.TRAIN, weights=str(mini / "weights.caffemodel"))
    net.blobs["data"].data[...] = np.load(mini / "input.npy")
    net.blobs["label"].data[...] = np.load(mini / "labels.npy")
    net.forward()
    net.backward()
    once = net.params["fc8"][1].diff.copy()
    net.forward()
    net.backward()
    np.testing.assert_allclose(net.params["fc8"][1].diff, 2 * once, rtol=1e-6, atol=1e-7)
    net.clear_param_diffs()
    assert not net.params["fc8"][1].diff.any()


def test_fully_convolutional_map(mini):
    net = Net(mini / "fullconv.prototxt", caffe_pb2.TEST, weights=str(mini / "fullconv.caffemodel"))
    net.blobs["data"].data[...] = np.load(mini / "input_451.npy")
    net.forward()
    assert rel(net.blobs["prob"].data, np.load(mini / "fullconv_prob.npy")) <= TOL


def test_agrees_with_opencv_caffe_importer(mini):
    cv2 = pytest.importorskip("cv2")
    x = np.load(mini / "input.npy")
    cvnet = cv2.dnn.readNetFromCaffe(str(mini / "deploy.prototxt"), str(mini / "weights.caffemodel"))
    cvnet.setInput(x)
    theirs = cvnet.forward()
    net = Net(mini / "deploy.prototxt", caffe_pb2.TEST, weights=str(mini / "weights.caffemodel"))
    net.blobs["data"].data[...] = x
    net.forward()
    assert rel(net.blobs["prob"].data, theirs.reshape(2, 3)) <= 1e-4


def test_solver_run_test_phase_blobs(golden, monkeypatch):
    """Data layer (LMDB, mean_file, scale), LRN defaults, group conv, ceil and AVE-with-pad pooling."""
    monkeypatch.chdir(golden / "solver_run")
    net = Net("net.prototxt", caffe_pb2.TEST, weights="init.caffemodel")
    try:
        net.forward()
        ref = np.load("init_test_blobs.npz")
        # Caffe's Split blobs (left out of the npz) sit right after their source blob, with Caffe's names
        assert [b for b in net.blobs if "_split_" not in b] == list(ref.files)
        names = list(net.blobs)
        assert names[2:4] == ["label_data_1_split_0", "label_data_1_split_1"]
        assert names[names.index("ip2") + 1 :][:2] == ["ip2_ip2_0_split_0", "ip2_ip2_0_split_1"]
        for name in ref.files:
            assert rel(net.blobs[name].data, ref[name]) <= TOL, name
        # the transform is bitwise Caffe's: (uint8 - mean) * 0.0078125 in float32
        assert np.array_equal(net.blobs["data"].data, ref["data"])
        assert net.outputs == ["accuracy", "loss"]
    finally:
        net.close()


def test_solver_run_train_net_saves_like_caffe(golden, monkeypatch, tmp_path):
    monkeypatch.chdir(golden / "solver_run")
    net = Net("net.prototxt", caffe_pb2.TRAIN, weights="init.caffemodel")
    try:
        assert net.learnable_param_names == [
            "conv1/0",
            "conv1/1",
            "conv2/0",
            "conv2/1",
            "ip1/0",
            "ip1/1",
            "ip2/0",
            "ip2/1",
        ]
        assert net.params_lr == [1, 2, 1, 1, 0, 1, 10, 20]
        assert net.params_weight_decay == [1, 0, 1, 1, 1, 0, 1, 0]
        assert net.to_proto().SerializeToString() == (golden / "solver_run" / "init.caffemodel").read_bytes()
        net.forward()
        net.backward()
        assert not net.params["ip1"][0].diff.any()  # lr_mult 0: Caffe computes no diff
        assert net.params["ip1"][1].diff.any()
    finally:
        net.close()


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.cuda
@cuda
def test_cuda_forward_and_gradients_match(mini):
    net = Net(
        mini / "train_nodrop.prototxt",
        caffe_pb2.TRAIN,
        weights=str(mini / "weights.caffemodel"),
        device="cuda",
    )
    net.blobs["data"].data = np.load(mini / "input.npy")
    net.blobs["label"].data = np.load(mini / "labels.npy")
    loss = net.forward()
    net.backward()
    ref = np.load(mini / "grads.npz")
    assert abs(loss - float(ref["loss"])) <= 1e-4 * float(ref["loss"])
    for key in net.learnable_param_names:
        layer, index = key.split("/")
        assert rel(net.params[layer][int(index)].diff, ref[key]) <= 1e-4, key  # TF32/cuDNN: 1e-4


@pytest.mark.cuda
@cuda
def test_cuda_data_layer_and_pooling(golden, monkeypatch):
    monkeypatch.chdir(golden / "solver_run")
    net = Net("net.prototxt", caffe_pb2.TEST, weights="init.caffemodel", device="cuda")
    try:
        net.forward()
        ref = np.load("init_test_blobs.npz")
        for name in ref.files:
            assert rel(net.blobs[name].data, ref[name]) <= 1e-4, name
    finally:
        net.close()
