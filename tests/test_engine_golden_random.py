"""Caffe's random streams against real Caffe's golden files: parameters drawn by fillers from a seed (exact),
and the random_run training (gaussian, xavier, msra and uniform fillers, crop + mirror, Dropout, seed 1701)
against Caffe's log and snapshots. Relative error = max|a-b| / max|b|; 1e-5 for trained weights, histories
and logged values (Caffe prints 6 digits); 0 (bit for bit) for anything drawn before training."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pixsent.caffe.proto import caffe_pb2
from pixsent.cli.caffe_tool import CaffeFlags, train
from pixsent.engine import glog
from pixsent.engine.logparse import parse_log
from pixsent.engine.net import Net
from pixsent.formats.caffemodel import read_weights
from pixsent.formats.solverstate import history_arrays, read_solverstate

TOL = 1e-5


def rel(a, b) -> float:
    b = np.asarray(b, dtype=np.float64)
    scale = np.abs(b).max()
    return float(np.abs(np.asarray(a, dtype=np.float64) - b).max() / (scale if scale else 1.0))


def train_in(folder: Path, log_name: str, **flags) -> Path:
    """`caffe train` run inside ``folder`` (relative paths resolve as in Caffe), logging to ``log_name``."""
    old = os.getcwd()
    os.chdir(folder)
    fh = glog.add_file(folder / log_name)
    try:
        train(CaffeFlags(action="train", **flags))
    finally:
        glog.remove_file(fh)
        os.chdir(old)
    return folder / log_name


def assert_bitwise(net: Net, path) -> None:
    ref = read_weights(path)
    assert set(ref) == set(net.params)
    for name, blobs in ref.items():
        for i, want in enumerate(blobs):
            got = net.params[name][i].data.reshape(want.shape)
            assert np.array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32)), (name, i)


def test_mini_caffenet_fillers_from_seed_2017(golden):
    import pixsent.caffe as caffe

    caffe.set_random_seed(2017)  # as the golden file was made: fillers only, no weights loaded
    net = caffe.Net(str(golden / "mini_caffenet" / "deploy.prototxt"), caffe.TEST)
    assert_bitwise(net._net, golden / "mini_caffenet" / "weights.caffemodel")


def test_solver_run_init_from_seed_2023(golden, monkeypatch):
    from pixsent.engine.context import set_random_seed

    monkeypatch.chdir(golden / "solver_run")  # Data layers (no random transform) draw the thread seed first
    set_random_seed(2023)
    net = Net("net.prototxt", caffe_pb2.TRAIN)
    try:
        assert_bitwise(net, "init.caffemodel")
    finally:
        net.close()


@pytest.fixture(scope="module")
def random_run(golden, tmp_path_factory):
    """random_run copied beside ../lmdb, its golden snapshots renamed, trained once by `caffe train`."""
    root = tmp_path_factory.mktemp("random_copy")
    shutil.copytree(golden / "lmdb", root / "lmdb")
    folder = root / "random_run"
    shutil.copytree(golden / "random_run", folder)
    for f in folder.glob("snap_iter_*"):
        f.rename(f.with_name("golden_" + f.name))
    train_in(folder, "ours.log", solver="solver.prototxt")
    return folder


def test_random_run_parameters_after_solver_set_up(random_run):
    from pixsent.engine.solvers.solver import solver_from_file

    old = os.getcwd()
    os.chdir(random_run)
    try:
        solver = solver_from_file("solver.prototxt")  # pycaffe's get_solver, as init_from_seed was made
        try:
            assert_bitwise(solver.net, "init_from_seed.caffemodel")
        finally:
            for n in [solver.net, *solver.test_nets]:
                n.close()
    finally:
        os.chdir(old)


def test_random_run_log_matches_caffe(random_run):
    ours, ref = parse_log(random_run / "ours.log"), parse_log(random_run / "train.log")
    assert list(ours.iters) == list(ref.iters) == list(range(21))
    assert rel(ours.loss, ref.loss) < TOL, rel(ours.loss, ref.loss)
    assert rel(ours.train_outputs["loss"], ref.train_outputs["loss"]) < TOL
    assert list(ours.test_iters) == list(ref.test_iters) == [0, 10, 20]
    for key in ("accuracy", "loss"):
        assert rel(ours.test_outputs[key], ref.test_outputs[key]) < TOL, key


@pytest.mark.parametrize("it", [10, 20])
def test_random_run_snapshots_match_caffe(random_run, it):
    ours = read_weights(random_run / f"snap_iter_{it}.caffemodel")
    ref = read_weights(random_run / f"golden_snap_iter_{it}.caffemodel")
    for name, blobs in ref.items():
        for i, want in enumerate(blobs):
            assert rel(ours[name][i], want) < TOL, (name, i, rel(ours[name][i], want))
    hist = history_arrays(read_solverstate(random_run / f"snap_iter_{it}.solverstate"))
    want = history_arrays(read_solverstate(random_run / f"golden_snap_iter_{it}.solverstate"))
    assert len(hist) == len(want)
    for a, b in zip(hist, want):
        assert rel(a, b) < TOL
