"""Live blob arrays and partial passes, as Caffe's pycaffe has them (golden mini CaffeNet from real Caffe).

Tolerances: relative error max|a-b| / max|b|; 1e-5 against Caffe's own numbers, 1e-6 between two pixsent
computations of the same quantity by different routes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pixsent.caffe as caffe


def rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-30))


@pytest.fixture(scope="module")
def mini(golden: Path) -> Path:
    return golden / "mini_caffenet"


def test_held_arrays_follow_later_forwards(mini):
    """a = blobs[...].data and the dict forward() returns are views later forwards overwrite in place."""
    net = caffe.Net(str(mini / "deploy.prototxt"), caffe.TEST, weights=str(mini / "weights.caffemodel"))
    x = np.load(mini / "input.npy")
    ref = np.load(mini / "blobs.npz")
    conv1 = net.blobs["conv1"].data  # taken before any forward
    out = net.forward(data=x)
    prob = out["prob"]
    assert rel(conv1, ref["conv1"]) < 1e-5 and rel(prob, ref["prob"]) < 1e-5
    first = prob.copy()
    net.forward(data=x[::-1].copy())  # the two images swapped
    assert np.shares_memory(net.blobs["conv1"].data, conv1)
    assert rel(prob, first[::-1]) < 1e-6, "the array forward() returned must show the new values"
    assert rel(conv1, ref["conv1"][::-1]) < 1e-5
    # writes through a held array reach the next pass (net surgery on an intermediate blob)
    pool5 = net.blobs["pool5"].data
    pool5[...] = 0
    net.forward(start="fc6")
    fc6_bias = net.params["fc6"][1].data
    assert rel(net.blobs["fc6"].data, np.maximum(np.broadcast_to(fc6_bias, (2, 64)), 0)) < 1e-6


def test_reshape_gives_new_memory(mini):
    net = caffe.Net(str(mini / "deploy.prototxt"), caffe.TEST, weights=str(mini / "weights.caffemodel"))
    x = np.load(mini / "input.npy")
    held = net.forward(data=x)["prob"]
    stale = held.copy()
    net.blobs["data"].reshape(1, 3, 227, 227)
    net.reshape()
    net.forward(data=x[1:])
    assert net.blobs["prob"].data.shape == (1, 3)
    assert np.array_equal(held, stale)  # the old array is left alone after a reshape
    assert rel(net.blobs["prob"].data, np.load(mini / "blobs.npz")["prob"][1:]) < 1e-5


def test_solver_loss_array_is_live(golden, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    monkeypatch.chdir(golden / "solver_run")
    solver_text = (golden / "solver_run" / "solver.prototxt").read_text()
    solver_text = solver_text.replace('snapshot_prefix: "snap"', f'snapshot_prefix: "{folder}/snap"')
    (folder / "solver.prototxt").write_text(solver_text.replace("snapshot: 10", "snapshot: 0"))
    solver = caffe.get_solver(str(folder / "solver.prototxt"))
    loss = solver.net.blobs["loss"].data
    conv1_w_diff = solver.net.params["conv1"][0].diff
    seen = []
    for _ in range(3):
        solver.step(1)
        seen.append(float(loss))
    assert len(set(seen)) == 3, "the held loss array must change with every step"
    assert np.abs(conv1_w_diff).max() > 0  # param diffs are live too
    solver.net.forward()
    assert float(loss) == float(solver.net.blobs["loss"].data)


def test_partial_backward_composes_to_the_full_pass(mini):
    """backward(start='loss', end='fc6') then backward(start='pool5') equals one full backward; layers
    outside a range keep their diffs (Caffe's BackwardFromTo)."""
    proto, weights = str(mini / "train_nodrop.prototxt"), str(mini / "weights.caffemodel")
    x, labels = np.load(mini / "input.npy"), np.load(mini / "labels.npy")
    grads = np.load(mini / "grads.npz")
    full = caffe.Net(proto, caffe.TRAIN, weights=weights)
    full.clear_param_diffs()
    full.forward(data=x, label=labels)
    full.backward()
    assert rel(full.params["conv1"][0].diff, grads["conv1/0"]) < 1e-4
    part = caffe.Net(proto, caffe.TRAIN, weights=weights)
    part.clear_param_diffs()
    part.forward(data=x, label=labels)
    part.backward(start="loss", end="fc6")
    assert rel(part.params["fc6"][0].diff, full.params["fc6"][0].diff) < 1e-6
    assert not part.params["conv5"][0].diff.any(), "layers below end must not be touched"
    assert rel(part.blobs["pool5"].diff, full.blobs["pool5"].diff) < 1e-6
    forwards = []
    engine_forward = part.engine._forward
    part.engine._forward = lambda *a, **k: forwards.append(a) or engine_forward(*a, **k)
    out = part.backward(start="pool5")  # from the pool5 diff the first pass left
    assert forwards == [], "the second range reuses the first forward's graph, as Caffe reuses its blobs"
    assert rel(part.params["conv1"][0].diff, full.params["conv1"][0].diff) < 1e-6
    assert rel(out["data"], grads["data_diff"]) < 1e-4
    with pytest.raises(ValueError, match="no layer named 'fc9'"):
        part.backward(start="fc9")


def test_deep_dream_step_from_an_intermediate_blob(mini, tmp_path):
    """forward(end=L); blobs[L].diff = blobs[L].data; backward(start=L) gives the data gradient of
    0.5 * ||L||^2 (checked by central differences on one input value, 2e-2 rel)."""
    text = (mini / "deploy.prototxt").read_text() + "\nforce_backward: true\n"
    path = tmp_path / "dream.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TEST, weights=str(mini / "weights.caffemodel"))
    x = np.load(mini / "input.npy")
    net.blobs["data"].data[...] = x
    net.forward(end="conv2")
    dst = net.blobs["conv2"]
    dst.diff[...] = dst.data
    g = net.backward(start="conv2")["data"].copy()
    i = (0, 1, 100, 100)
    eps = 1e-2
    vals = []
    for sign in (1, -1):
        xp = x.copy()
        xp[i] += sign * eps
        net.blobs["data"].data[...] = xp
        net.forward(end="conv2")
        vals.append(0.5 * float((net.blobs["conv2"].data.astype(np.float64) ** 2).sum()))
    numeric = (vals[0] - vals[1]) / (2 * eps)
    assert abs(g[i] - numeric) / max(abs(numeric), 1e-6) < 2e-2


def test_split_forward_reads_what_the_user_wrote_and_keeps_the_graph(tmp_path):
    """TRAIN net: forward(end='ip1'), write into the held ip1 array, forward(start='ip2'), backward():
    ip2 sees the written values (its output is exactly ip2(written)), and ip1's weights still get their
    gradient through the first part, as Caffe's blobs make it."""
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
      inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
    layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"
      inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 0.5 } } }
    """
    (tmp_path / "n.prototxt").write_text(
        text + 'layer { name: "l" type: "Power" bottom: "y" top: "l" loss_weight: 1 }'
    )
    net = caffe.Net(str(tmp_path / "n.prototxt"), caffe.TRAIN)
    net.clear_param_diffs()
    net.blobs["x"].data[...] = 1.0
    net.forward(end="ip1")
    h = net.blobs["h"].data
    h[...] = 2.0
    net.forward(start="ip2")
    w2, b2 = net.params["ip2"][0].data, net.params["ip2"][1].data
    assert rel(net.blobs["y"].data, 2.0 * w2.sum(1) + b2) < 1e-6
    net.backward()
    assert np.abs(net.params["ip1"][0].diff).max() > 0, "the graph through ip1 must still be there"
    assert rel(net.params["ip2"][0].diff, np.full((1, 4), 2.0 * 2)) < 1e-6  # d(sum y)/dW2 = sum_n h
