"""pixsent's `caffe train` against real Caffe's golden runs (solver_run: SGD + step, iter_size 2, snapshots,
resume; solver_types: Nesterov, AdaGrad, RMSProp, AdaDelta, Adam). Relative error = max|a-b| / max|b| per
blob; tolerance 1e-5 for weights, histories and logged values (6 printed digits)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pixsent.engine.net", reason="the engine's Net is not available yet")

from pixsent.cli.caffe_tool import CaffeFlags, train  # noqa: E402
from pixsent.engine import glog  # noqa: E402
from pixsent.engine.logparse import parse_log  # noqa: E402
from pixsent.formats.caffemodel import read_weights  # noqa: E402
from pixsent.formats.solverstate import history_arrays, read_solverstate  # noqa: E402

TOL = 1e-5
TYPES = ["Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"]


def rel(a: np.ndarray, b: np.ndarray) -> float:
    b = np.asarray(b, dtype=np.float64)
    scale = np.abs(b).max()
    return float(np.abs(np.asarray(a, dtype=np.float64) - b).max() / (scale if scale else 1.0))


@contextlib.contextmanager
def _in_dir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _train(folder: Path, log_name: str, **flags) -> Path:
    """Run `caffe train` inside ``folder`` with glog also written to ``log_name``; returns the log path."""
    log = folder / log_name
    with _in_dir(folder):
        fh = glog.add_file(log)
        try:
            train(CaffeFlags(action="train", **flags))
        finally:
            glog.remove_file(fh)
    return log


@pytest.fixture(scope="module")
def work(golden, tmp_path_factory) -> Path:
    """A copy of the golden folders with their relative layout (../lmdb, ../mean.binaryproto)."""
    root = tmp_path_factory.mktemp("golden_copy")
    for name in ("solver_run", "solver_types", "lmdb"):
        shutil.copytree(golden / name, root / name)
    shutil.copy(golden / "mean.binaryproto", root / "mean.binaryproto")
    for f in (root / "solver_run").glob("snap_iter_*"):
        f.rename(f.with_name("golden_" + f.name))
    return root


@pytest.fixture(scope="module")
def sgd_run(work) -> Path:
    folder = work / "solver_run"
    _train(folder, "ours.log", solver="solver.prototxt", weights="init.caffemodel")
    return folder


def test_sgd_log_matches_trajectory(sgd_run, golden):
    t = np.load(golden / "solver_run" / "trajectory.npz")
    log = parse_log(sgd_run / "ours.log")
    assert list(log.iters) == list(t["iter"])
    assert rel(log.loss, t["loss"]) < TOL, rel(log.loss, t["loss"])
    assert list(log.lr_iters) == list(t["lr_iter"]) and rel(log.lr, t["lr"]) < 1e-7
    assert rel(log.train_outputs["loss"], t["train_output_loss"]) < TOL
    assert list(log.test_iters) == list(t["test_iter"])
    assert rel(log.test_outputs["accuracy"], t["test_accuracy"]) < TOL
    assert rel(log.test_outputs["loss"], t["test_loss"]) < TOL
    golden_log = parse_log(golden / "solver_run" / "train.log")
    assert list(golden_log.iters) == list(log.iters)


@pytest.mark.parametrize("it", [10, 20])
def test_sgd_snapshot_weights(sgd_run, it):
    ours = read_weights(sgd_run / f"snap_iter_{it}.caffemodel")
    ref = read_weights(sgd_run / f"golden_snap_iter_{it}.caffemodel")
    assert ours.keys() == ref.keys()
    for layer, blobs in ref.items():
        for k, b in enumerate(blobs):
            assert rel(ours[layer][k], b) < TOL, (layer, k, rel(ours[layer][k], b))


def test_sgd_solverstate(sgd_run):
    ours = read_solverstate(sgd_run / "snap_iter_10.solverstate")
    ref = read_solverstate(sgd_run / "golden_snap_iter_10.solverstate")
    assert ours.iter == ref.iter == 10
    assert ours.learned_net == "snap_iter_10.caffemodel" and ours.current_step == ref.current_step
    ha, hb = history_arrays(ours), history_arrays(ref)
    assert len(ha) == len(hb)
    for k, (a, b) in enumerate(zip(ha, hb)):
        assert a.shape == b.shape and rel(a, b) < TOL, (k, rel(a, b))


def test_resume_from_golden_solverstate(work, golden):
    folder = work / "resume"
    shutil.copytree(work / "solver_run", folder, ignore=shutil.ignore_patterns("snap_iter_*", "ours.log"))
    shutil.copy(golden / "solver_run" / "snap_iter_10.caffemodel", folder / "snap_iter_10.caffemodel")
    shutil.copy(golden / "solver_run" / "snap_iter_10.solverstate", folder / "snap_iter_10.solverstate")
    (folder / "out").mkdir()
    solver = (
        (folder / "solver.prototxt")
        .read_text()
        .replace('snapshot_prefix: "snap"', 'snapshot_prefix: "out/snap"')
    )
    (folder / "resume_solver.prototxt").write_text(solver)
    # the golden folder already holds real Caffe's resume.log: write ours beside it, never into it
    log = _train(
        folder, "ours_resume.log", solver="resume_solver.prototxt", snapshot="snap_iter_10.solverstate"
    )
    ours = read_weights(folder / "out" / "snap_iter_20.caffemodel")
    ref = read_weights(golden / "solver_run" / "snap_iter_20.caffemodel")
    for layer, blobs in ref.items():
        for k, b in enumerate(blobs):
            assert rel(ours[layer][k], b) < TOL, (layer, k)
    parsed = parse_log(log)
    assert list(parsed.test_iters) == [10, 15, 20]  # the test at the resume iteration is re-run
    assert list(parsed.iters) == list(range(10, 21))
    ref_log = parse_log(golden / "solver_run" / "resume.log")
    assert list(parsed.test_iters) == list(ref_log.test_iters)
    assert rel(parsed.test_outputs["loss"], ref_log.test_outputs["loss"]) < TOL


@pytest.mark.parametrize("kind", TYPES)
def test_solver_types(work, golden, kind):
    folder = work / "solver_types"
    ref_model = read_weights(golden / "solver_types" / f"{kind}_iter_10.caffemodel")
    ref_state = history_arrays(read_solverstate(golden / "solver_types" / f"{kind}_iter_10.solverstate"))
    ref_log = parse_log(golden / "solver_types" / f"{kind}.log")
    (folder / f"{kind}_iter_10.caffemodel").unlink(missing_ok=True)
    log = _train(
        folder, f"ours_{kind}.log", solver=f"{kind}.solver.prototxt", weights="../solver_run/init.caffemodel"
    )
    ours = read_weights(folder / f"{kind}_iter_10.caffemodel")
    worst = max(rel(ours[layer][k], b) for layer, blobs in ref_model.items() for k, b in enumerate(blobs))
    assert worst < TOL, (kind, worst)
    hist = history_arrays(read_solverstate(folder / f"{kind}_iter_10.solverstate"))
    assert len(hist) == len(ref_state)
    for k, (a, b) in enumerate(zip(hist, ref_state)):
        assert rel(a, b) < TOL, (kind, k, rel(a, b))
    parsed = parse_log(log)
    assert rel(parsed.loss, ref_log.loss) < TOL
    assert rel(parsed.test_outputs["loss"], ref_log.test_outputs["loss"]) < TOL
