"""Python layers (type "Python"): caffe.Layer subclasses found on PYTHONPATH, in TRAIN and TEST nets, from
Python and from `pixsent caffe train`, with Caffe's call order and errors naming the layer.

Tolerance: relative error max|a-b| / max|b| <= 1e-6 between a Python layer and the built-in layer
computing the same thing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pixsent.caffe as caffe
from pixsent.errors import NetError

REPO = Path(__file__).resolve().parent.parent

LAYERS = '''
import numpy as np
import pixsent.caffe as caffe

CALLS = []


class EuclideanLossLayer(caffe.Layer):
    """Caffe's examples/pycaffe/layers/pyloss.py."""

    def setup(self, bottom, top):
        CALLS.append("setup")
        if len(bottom) != 2:
            raise Exception("Need two inputs to compute distance.")

    def reshape(self, bottom, top):
        CALLS.append("reshape")
        if bottom[0].count != bottom[1].count:
            raise Exception("Inputs must have the same dimension.")
        self.diff = np.zeros_like(bottom[0].data, dtype=np.float32)
        top[0].reshape(1)

    def forward(self, bottom, top):
        CALLS.append("forward")
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.0

    def backward(self, top, propagate_down, bottom):
        CALLS.append("backward")
        for i in range(2):
            if not propagate_down[i]:
                continue
            sign = 1 if i == 0 else -1
            bottom[i].diff[...] = sign * self.diff / bottom[i].num


class Ramp(caffe.Layer):
    """A data layer: no bottoms, top filled from param_str's batch size and a counter."""

    def setup(self, bottom, top):
        self.batch = int(self.param_str)
        self.count = 0

    def reshape(self, bottom, top):
        top[0].reshape(self.batch, 3)
        top[1].reshape(self.batch, 3)

    def forward(self, bottom, top):
        base = np.arange(self.batch * 3, dtype=np.float32).reshape(self.batch, 3) / 10
        top[0].data[...] = base + self.count
        top[1].data[...] = 0.5
        self.count += 1

    def backward(self, top, propagate_down, bottom):
        pass


class LearnedBias(caffe.Layer):
    """y = x + b with a learned b (a parameter blob), diff written by the layer."""

    def setup(self, bottom, top):
        self.blobs.add_blob(bottom[0].channels)
        self.blobs[0].data[...] = 1.0

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data + self.blobs[0].data

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[...] += top[0].diff.sum(0)
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff


class Broken(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        raise KeyError("no such thing")
'''

NET = """
name: "py"
force_backward: true
layer {{ name: "data" type: "Python" top: "x" top: "t"
  python_param {{ module: "{module}" layer: "Ramp" param_str: "4" }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "bias" type: "Python" bottom: "y" top: "z"
  python_param {{ module: "{module}" layer: "LearnedBias" }} }}
layer {{ name: "loss" type: "{loss}" bottom: "z" bottom: "t" top: "loss" {extra} }}
"""


@pytest.fixture
def module(tmp_path, monkeypatch):
    """A fresh module of user layers on sys.path (as PYTHONPATH would put it)."""
    name = f"user_layers_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(LAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _net(tmp_path, module, phase, loss="Python", name="net.prototxt"):
    extra = f'python_param {{ module: "{module}" layer: "EuclideanLossLayer" }} loss_weight: 1'
    text = NET.format(module=module, loss=loss, extra=extra if loss == "Python" else "")
    path = tmp_path / name
    path.write_text(text)
    return caffe.Net(str(path), phase)


def test_python_loss_matches_builtin(tmp_path, module):
    """Caffe's pyloss example equals EuclideanLoss: loss, data diff, InnerProduct and Python param diffs."""
    import importlib

    ours = _net(tmp_path, module, caffe.TRAIN)
    ref = _net(tmp_path, module, caffe.TRAIN, loss="EuclideanLoss", name="ref.prototxt")
    ref.params["ip"][0].data[...] = ours.params["ip"][0].data
    for net in (ours, ref):
        net.clear_param_diffs()
        net.forward()
        net.backward()
    loss, ref_loss = ours.blobs["loss"].data.item(), ref.blobs["loss"].data.item()
    assert abs(loss - ref_loss) <= 1e-6 * ref_loss
    for name in ("ip", "bias"):
        for a, b in zip(ours.params[name], ref.params[name]):
            assert np.abs(a.diff - b.diff).max() <= 1e-6 * np.abs(b.diff).max()
    x_ref = ref.blobs["x"].diff
    assert np.abs(ours.blobs["x"].diff - x_ref).max() <= 1e-6 * np.abs(x_ref).max()
    calls = importlib.import_module(module).CALLS
    assert calls[:2] == ["setup", "reshape"]  # set-up, then Caffe's Reshape before every Forward
    assert calls[2:5] == ["reshape", "forward", "backward"]
    user = ours.layers[list(ours._layer_names).index("bias")]
    assert type(user).__name__ == "LearnedBias" and user.type == "Python" and user.phase == caffe.TRAIN
    assert len(user.blobs) == 1 and user.blobs[0].data.shape == (3,)


def test_learned_python_param_right_after_the_data(tmp_path, module):
    """A Python layer with a parameter whose bottom needs no gradient still gets its backward called
    (Caffe: a layer with lr_mult != 0 needs backward), so the parameter's diff is written."""
    text = NET.format(module=module, loss="EuclideanLoss", extra="").replace(
        'bottom: "y" top: "z"', 'bottom: "x" top: "z"'
    )
    text = text.replace("force_backward: true", "")
    text = text.replace('bottom: "z" bottom: "t"', 'bottom: "z" bottom: "y"')
    (tmp_path / "b.prototxt").write_text(text)
    net = caffe.Net(str(tmp_path / "b.prototxt"), caffe.TRAIN)
    net.clear_param_diffs()
    net.forward()
    net.backward()
    z, y = net.blobs["z"].data, net.blobs["y"].data
    expect = (z - y).sum(0) / z.shape[0]  # d/db of sum((z - y)^2) / 2N with z = x + b
    assert np.abs(net.params["bias"][0].diff - expect).max() <= 1e-6 * np.abs(expect).max()


def test_python_layers_in_test_phase_and_param_str(tmp_path, module):
    net = _net(tmp_path, module, caffe.TEST)
    out1 = net.forward()
    x1 = net.blobs["x"].data.copy()
    net.forward()
    assert np.allclose(net.blobs["x"].data, x1 + 1)  # the data layer keeps its state between forwards
    assert net.blobs["x"].shape == (4, 3)  # param_str "4" is the batch
    assert "loss" in out1
    user = net.layers[0]
    assert user.param_str == "4" and user.phase == caffe.TEST


def test_errors_name_the_layer(tmp_path, module):
    text = NET.format(module=module, loss="EuclideanLoss", extra="").replace('"LearnedBias"', '"Broken"')
    (tmp_path / "broken.prototxt").write_text(text)
    net = caffe.Net(str(tmp_path / "broken.prototxt"), caffe.TEST)
    with pytest.raises(NetError, match=r"layer 'bias' \(Python .*Broken\): forward raised KeyError"):
        net.forward()
    missing = NET.format(module="no_such_module_xyz", loss="EuclideanLoss", extra="")
    (tmp_path / "missing.prototxt").write_text(missing)
    with pytest.raises(NetError, match="layer 'data'.*no_such_module_xyz.*PYTHONPATH"):
        caffe.Net(str(tmp_path / "missing.prototxt"), caffe.TEST)


def test_python_layers_train_from_the_command_line(tmp_path, module):
    """`pixsent caffe train` imports the layers from PYTHONPATH; the learned bias moves."""
    _net(tmp_path, module, caffe.TRAIN)  # writes net.prototxt
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.05\nlr_policy: "fixed"\nmax_iter: 5\ndisplay: 1\n'
        'snapshot_prefix: "snap"\nrandom_seed: 1\n'
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    r = subprocess.run(
        [sys.executable, "-m", "pixsent", "caffe", "train", "-solver", "solver.prototxt"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Creating Layer bias" in r.stderr and "Optimization Done." in r.stderr
    from pixsent.formats.caffemodel import read_weights

    bias = read_weights(tmp_path / "snap_iter_5.caffemodel")["bias"][0]
    assert bias.shape == (3,) and not np.allclose(bias, 1.0)
