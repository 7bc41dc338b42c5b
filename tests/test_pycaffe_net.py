"""pycaffe Net adapter, Classifier and solver wrappers on the real engine, against golden pycaffe outputs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import pixsent.caffe as caffe

pytest.importorskip("pixsent.engine.net", reason="engine Net not available")


@pytest.fixture(scope="module")
def mini(golden: Path) -> dict[str, str]:
    d = golden / "mini_caffenet"
    return {"deploy": str(d / "deploy.prototxt"), "weights": str(d / "weights.caffemodel")}


@pytest.fixture(scope="module")
def deploy_net(mini):
    return caffe.Net(mini["deploy"], caffe.TEST, weights=mini["weights"])


def test_constructor_signatures_agree(mini, deploy_net, golden: Path):
    """Net(proto, weights, phase) and Net(proto, phase, weights=...) load the same weights."""
    other = caffe.Net(mini["deploy"], mini["weights"], caffe.TEST)
    assert list(other.params) == list(deploy_net.params)
    for name in deploy_net.params:
        for a, b in zip(deploy_net.params[name], other.params[name]):
            assert np.array_equal(a.data, b.data)
    assert deploy_net.inputs == ["data"] and deploy_net.outputs == ["prob"]
    assert deploy_net.blobs["data"].shape == (2, 3, 227, 227)
    b = deploy_net.blobs["data"]
    assert (b.num, b.channels, b.height, b.width, b.count) == (2, 3, 227, 227, 2 * 3 * 227 * 227)
    assert deploy_net._layer_names[0] == "data" and "conv1" in deploy_net.layer_dict
    assert deploy_net.layer_dict["conv1"].type == "Convolution"
    assert deploy_net.params["conv1"][0].shape == (16, 3, 11, 11)
    assert deploy_net.blob_loss_weights["prob"] == 0.0


def test_forward_matches_golden_blobs(deploy_net, golden: Path):
    """blobs["data"].data[...] = x then forward() equals forward(data=x) and blobs.npz (1e-5 rel)."""
    x = np.load(golden / "mini_caffenet" / "input.npy")
    ref = np.load(golden / "mini_caffenet" / "blobs.npz")
    deploy_net.blobs["data"].data[...] = x
    out1 = {k: v.copy() for k, v in deploy_net.forward().items()}
    out2 = deploy_net.forward(data=x)
    assert set(out1) == {"prob"}
    assert np.array_equal(out1["prob"], out2["prob"])
    rel = np.abs(out2["prob"] - ref["prob"]).max() / np.abs(ref["prob"]).max()
    assert rel < 1e-5
    fc7 = deploy_net.forward(data=x, blobs=["fc7"])["fc7"]
    assert np.abs(fc7 - ref["fc7"]).max() / np.abs(ref["fc7"]).max() < 1e-5
    with pytest.raises(Exception, match="batch sized"):
        deploy_net.forward(data=x[:1])
    with pytest.raises(Exception, match="do not match net inputs"):
        deploy_net.forward(label=x)


def test_forward_all_pads_last_batch(deploy_net, golden: Path):
    """5 inputs on a batch-2 net: 3 batches, padding dropped, rows equal single forwards (1e-6 abs)."""
    x = np.load(golden / "mini_caffenet" / "input.npy")
    five = np.concatenate([x, x[::-1], x[:1]])
    out = deploy_net.forward_all(data=five)
    assert out["prob"].shape == (5, 3)
    ref = deploy_net.forward(data=x)["prob"].copy()
    expect = np.concatenate([ref, ref[::-1], ref[:1]])
    assert np.abs(out["prob"] - expect).max() < 1e-6


def test_param_writes_change_output_and_save_round_trip(mini, golden: Path, tmp_path: Path):
    x = np.load(golden / "mini_caffenet" / "input.npy")
    net = caffe.Net(mini["deploy"], caffe.TEST, weights=mini["weights"])
    before = net.forward(data=x)["prob"].copy()
    saved = tmp_path / "saved.caffemodel"
    net.save(str(saved))
    net.params["conv1"][0].data[...] = 0
    net.params["conv1"][1].data[...] = 0
    after = net.forward(data=x)["prob"].copy()
    assert np.abs(after - before).max() > 1e-3
    reloaded = caffe.Net(mini["deploy"], str(saved), caffe.TEST)
    assert np.array_equal(reloaded.forward(data=x)["prob"], before)
    net.copy_from(str(saved))
    assert np.array_equal(net.forward(data=x)["prob"], before)


def test_backward_matches_golden_grads(mini, golden: Path):
    """train_nodrop: loss and data diff through forward()/backward() within 1e-5 rel of grads.npz."""
    d = golden / "mini_caffenet"
    net = caffe.Net(str(d / "train_nodrop.prototxt"), caffe.TRAIN, weights=mini["weights"])
    grads = np.load(d / "grads.npz")
    x, y = np.load(d / "input.npy"), np.load(d / "labels.npy")
    out = net.forward(data=x, label=y.reshape(net.blobs["label"].shape))
    assert abs(float(out["loss"]) - float(grads["loss"])) < 1e-5 * float(grads["loss"])
    diffs = net.backward()
    ref = grads["data_diff"]
    assert np.abs(diffs["data"] - ref).max() / np.abs(ref).max() < 1e-5
    ref_w = grads["fc8/0"]
    assert np.abs(net.params["fc8"][0].diff - ref_w).max() / np.abs(ref_w).max() < 1e-5


def test_classifier_matches_golden_predictions(golden: Path):
    """Classifier.predict with and without oversampling vs pycaffe's predictions.npz (1e-5 absolute)."""
    ov = golden / "oversample"
    preds = np.load(ov / "predictions.npz")
    clf = caffe.Classifier(
        str(ov / "deploy_batch10.prototxt"),
        str(golden / "mini_caffenet" / "weights.caffemodel"),
        image_dims=(256, 256),
        mean=preds["mean_bgr"],
        raw_scale=255,
        channel_swap=(2, 1, 0),
    )
    for rel in (ov / "images.txt").read_text().split():
        stem = Path(rel).stem
        img = caffe.io.load_image(str(golden / "images" / rel))
        assert np.array_equal(img, preds[f"{stem}/image"])
        over = clf.predict([img], oversample=True)
        assert over.shape == (1, 3)
        assert np.abs(over[0] - preds[f"{stem}/oversample"]).max() < 1e-5
        crops = clf.blobs["prob"].data.reshape(10, 3)
        assert np.abs(crops - preds[f"{stem}/oversample_crops"]).max() < 1e-5
        centre = clf.predict([img], oversample=False)
        assert np.abs(centre[0] - preds[f"{stem}/center"]).max() < 1e-5


def test_sgd_solver_step_on_golden_run(golden: Path, tmp_path: Path):
    """SGDSolver on a copy of solver_run (paths relative to the working directory, as Caffe) runs step(1)."""
    work = tmp_path / "golden"
    (work / "solver_run").mkdir(parents=True)
    for name in ("net.prototxt", "solver.prototxt", "init.caffemodel"):
        shutil.copy(golden / "solver_run" / name, work / "solver_run" / name)
    shutil.copytree(golden / "lmdb", work / "lmdb")
    shutil.copy(golden / "mean.binaryproto", work / "mean.binaryproto")
    cwd = os.getcwd()
    os.chdir(work / "solver_run")
    try:
        solver = caffe.SGDSolver("solver.prototxt")
        solver.net.copy_from("init.caffemodel")
        w0 = solver.net.params["ip2"][0].data.copy()
        assert solver.iter == 0 and len(solver.test_nets) == 1
        solver.step(1)
        assert solver.iter == 1
        assert np.abs(solver.net.params["ip2"][0].data - w0).max() > 0
        # the test net shares the train net's weights
        assert np.array_equal(solver.test_nets[0].params["ip2"][0].data, solver.net.params["ip2"][0].data)
        assert isinstance(caffe.get_solver("solver.prototxt"), caffe.pycaffe.Solver)
    finally:
        os.chdir(cwd)
