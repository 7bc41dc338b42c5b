"""pycaffe Net adapter logic (argument parsing, batching, input checks, views) on a tiny stand-in engine net.

The stand-in follows the engine interface of docs/ARCHITECTURE.md: data (N x 3) -> InnerProduct ip (4)
-> Softmax prob, with an optional loss. It keeps these tests independent of the real engine.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

import pixsent.caffe as caffe
from pixsent.caffe import pycaffe
from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.blob import Blob as EngineBlob


def FakeBlob(tensor: torch.Tensor, *, owned: bool = False, is_param: bool = False) -> EngineBlob:
    """The engine's Blob (live storage, pinning) around a given tensor."""
    blob = EngineBlob("b", device=tensor.device, tensor=tensor, is_param=is_param)
    blob.owned = owned
    return blob


class FakeLayer:
    def __init__(self, text: str) -> None:
        from google.protobuf import text_format

        self.param = text_format.Parse(text, caffe_pb2.LayerParameter())


class FakeNet:
    created: list[tuple] = []

    def __init__(
        self, model, phase, *, weights=None, stages=(), level=0, device="cpu", batch=2, log=False
    ) -> None:
        FakeNet.created.append((model, phase, weights, stages, level, device))
        self.phase = phase
        self.keep_blob_diffs = False
        self.blob_loss_weights = {"aux": 0.5}
        self.layers = [
            FakeLayer('name: "data" type: "Input" top: "data"'),
            FakeLayer('name: "ip" type: "InnerProduct" bottom: "data" top: "ip"'),
            FakeLayer('name: "prob" type: "Softmax" bottom: "ip" top: "prob"'),
            FakeLayer(
                'name: "aux" type: "EuclideanLoss" bottom: "ip" bottom: "ip" top: "aux" loss_weight: 0.5'
            ),
        ]
        self.layer_names = [lyr.param.name for lyr in self.layers]
        dev = torch.device(device)
        w = (torch.arange(12, dtype=torch.float32).reshape(4, 3) / 10).to(dev)
        self.params = {
            "data": [],
            "ip": [
                FakeBlob(w.requires_grad_(), is_param=True),
                FakeBlob(torch.zeros(4, requires_grad=True, device=dev), is_param=True),
            ],
        }
        self.blobs = {
            "data": FakeBlob(torch.zeros((batch, 3), device=dev), owned=True),
            "ip": FakeBlob(torch.zeros((batch, 4), device=dev)),
        }
        self.blobs["prob"] = FakeBlob(torch.zeros(batch, 4, device=dev))
        self.blobs["aux"] = FakeBlob(torch.zeros((), device=dev))
        self.inputs = ["data"]
        self.outputs = ["aux", "prob"]
        self.calls: list[tuple] = []

    def forward(self, start=None, end=None) -> float:
        self.calls.append(("forward", start, end))
        w, b = (p.tensor for p in self.params["ip"])
        with torch.no_grad():
            ip = self.blobs["data"].tensor @ w.T + b
            self.blobs["ip"].tensor = ip
            self.blobs["prob"].tensor = torch.softmax(ip, dim=1)
        for name in ("ip", "prob"):
            self.blobs[name].sync_live()
        return 0.0

    def backward(self, start=None, end=None) -> None:
        self.calls.append(("backward", start, end))


@pytest.fixture
def fake_engine(monkeypatch):
    module = types.ModuleType("pixsent.engine.net")
    module.Net = FakeNet
    monkeypatch.setitem(sys.modules, "pixsent.engine.net", module)
    FakeNet.created.clear()
    return module


def test_constructor_forms(fake_engine):
    caffe.Net("a.prototxt", caffe.TEST)
    caffe.Net("a.prototxt", "w.caffemodel", caffe.TRAIN)
    caffe.Net("a.prototxt", caffe.TEST, weights="w.caffemodel", stages=["s"], level=2)
    caffe.Net("a.prototxt", phase=caffe.TRAIN)
    assert FakeNet.created == [
        ("a.prototxt", caffe.TEST, None, (), 0, "cpu"),
        ("a.prototxt", caffe.TRAIN, "w.caffemodel", (), 0, "cpu"),
        ("a.prototxt", caffe.TEST, "w.caffemodel", ("s",), 2, "cpu"),
        ("a.prototxt", caffe.TRAIN, None, (), 0, "cpu"),
    ]
    with pytest.raises(TypeError):
        caffe.Net("a.prototxt")


def test_views_and_legacy_axes(fake_engine):
    net = caffe.Net("a.prototxt", caffe.TEST)
    assert list(net.blobs) == ["data", "ip", "prob", "aux"] and list(net.params) == ["ip"]
    blob = net.blobs["data"]
    assert (blob.num, blob.channels, blob.height, blob.width, blob.count) == (2, 3, 1, 1, 6)
    assert [lv.type for lv in net.layers] == ["Input", "InnerProduct", "Softmax", "EuclideanLoss"]
    assert net.top_names["ip"] == ["ip"] and net.bottom_names["aux"] == ["ip", "ip"]
    assert net.blob_loss_weights == {"data": 0.0, "ip": 0.0, "prob": 0.0, "aux": 0.5}


def test_forward_inputs_and_outputs(fake_engine):
    net = caffe.Net("a.prototxt", caffe.TEST)
    x = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    out = net.forward(data=x)
    assert set(out) == {"aux", "prob"}
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    e = np.exp(x @ w.T)
    assert np.abs(out["prob"] - e / e.sum(1, keepdims=True)).max() < 1e-6
    assert set(net.forward(end="ip", blobs=["prob"])) == {"ip", "prob"}
    assert net.engine.calls[-1] == ("forward", None, "ip")
    with pytest.raises(Exception, match="batch sized"):
        net.forward(data=x[:1])
    with pytest.raises(Exception, match="do not match"):
        net.forward(data=x, label=x)
    with pytest.raises(ValueError):  # same batch, wrong width: pycaffe's numpy copy refuses, no reshape
        net.forward(data=np.zeros((2, 5), np.float32))
    net.params["ip"][0].data[...] = 0
    assert np.allclose(net.forward(data=x)["prob"], 0.25)


def test_forward_all_batches_and_padding(fake_engine):
    net = caffe.Net("a.prototxt", caffe.TEST)
    xs = np.random.RandomState(0).rand(5, 3).astype(np.float32)
    out = net.forward_all(data=xs)
    assert out["prob"].shape == (5, 4)
    single = np.concatenate([net.forward(data=xs[i : i + 2])["prob"].copy() for i in (0, 2)])
    assert np.abs(out["prob"][:4] - single).max() < 1e-6
    last = net.forward(data=np.stack([xs[4], np.zeros(3, np.float32)]))["prob"][0]
    assert np.abs(out["prob"][4] - last).max() < 1e-6
    n_forward = sum(c[0] == "forward" for c in net.engine.calls)
    assert n_forward == 3 + 2 + 1  # forward_all: 3 batches (2, 2, 1 + padding)


def test_backward_range_goes_to_the_engine(fake_engine):
    net = caffe.Net("a.prototxt", caffe.TEST)
    net.backward()
    assert net.engine.calls[-1] == ("backward", None, None)
    net.backward(start="prob", end="ip")
    assert net.engine.calls[-1] == ("backward", "prob", "ip")
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        net.backward(start="nope")


def test_mode_switches():
    try:
        caffe.set_mode_gpu()
        caffe.set_device(0)
        expect = "cuda:0" if torch.cuda.is_available() else "cpu"
        assert pycaffe.MODE.device() == expect
    finally:
        caffe.set_mode_cpu()
    assert pycaffe.MODE.device() == "cpu"
    caffe.set_random_seed(7)
    a = torch.rand(3)
    caffe.set_random_seed(7)
    assert torch.equal(a, torch.rand(3))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_blobs_use_host_mirrors(fake_engine):
    """On CUDA, writes into .data reach the device before forward; outputs are re-read after it."""
    try:
        caffe.set_mode_gpu()
        net = caffe.Net("a.prototxt", caffe.TEST)
    finally:
        caffe.set_mode_cpu()
    assert net.engine.blobs["data"].tensor.is_cuda
    x = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    net.blobs["data"].data[...] = x
    net.params["ip"][0].data[...] = 0
    out = net.forward()
    assert np.allclose(out["prob"], 0.25)
    assert torch.equal(net.engine.blobs["data"].tensor.cpu(), torch.from_numpy(x))
    assert np.array_equal(net.forward(data=2 * x)["prob"], out["prob"])


def test_net_spec_reexported():
    from pixsent.caffe import net_spec

    assert caffe.NetSpec is net_spec.NetSpec and caffe.layers is net_spec.layers
    assert caffe.params is net_spec.params and caffe.to_proto is net_spec.to_proto
    assert caffe.proto.caffe_pb2 is caffe_pb2
