"""Exact resume: a run stopped or killed and resumed from its snapshot ends with the uninterrupted run's
weights, bit for bit (the .solverstate.pixsent sidecar); without the sidecar it resumes as Caffe does.

The net has everything random: gaussian/xavier/msra/uniform fillers, random crops and mirrors, Dropout.
Batches of 6 from 32 records: epochs end inside iterations 5, 10 (Data) while snapshots fall every 3
iterations and tests every 4, so the interruptions land before, at and between snapshots, inside a test
round and across epoch boundaries. Weights are compared as caffemodel bytes (tolerance 0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine import glog
from pixsent.engine.logparse import parse_log
from pixsent.engine.solvers.signals import Action
from pixsent.engine.solvers.solver import Solver, SolverHooks

REPO = Path(__file__).resolve().parent.parent

NET = """
name: "ResumeNet"
layer {{ name: "data" type: "{kind}" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ scale: 0.0078125 mirror: true crop_size: 32 mean_value: 128 }}
  {train_source} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ scale: 0.0078125 crop_size: 32 mean_value: 128 }}
  data_param {{ source: "{test_lmdb}" batch_size: 4 backend: LMDB }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 3 stride: 2
    weight_filler {{ type: "gaussian" std: 0.1 }} bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}
layer {{ name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param {{ num_output: 8 kernel_size: 3
    weight_filler {{ type: "xavier" }} bias_filler {{ type: "uniform" min: -0.1 max: 0.1 }} }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "conv2" top: "ip1"
  inner_product_param {{ num_output: 16 weight_filler {{ type: "msra" }} }} }}
layer {{ name: "relu2" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param {{ dropout_ratio: 0.5 }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param {{ num_output: 2 weight_filler {{ type: "uniform" min: -0.05 max: 0.05 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include {{ phase: TEST }} }}
"""

MAX_ITER = 12


def solver_param(golden: Path, folder: Path, kind: str = "Data") -> caffe_pb2.SolverParameter:
    if kind == "Data":
        train_source = (
            f'data_param {{ source: "{golden / "lmdb" / "train_raw"}" batch_size: 6 backend: LMDB }}'
        )
    else:
        train_source = (
            f'image_data_param {{ source: "{golden / "train.txt"}" root_folder: "{golden / "images"}/" '
            "batch_size: 5 shuffle: true rand_skip: 7 new_height: 36 new_width: 36 }"
        )
    net = NET.format(kind=kind, train_source=train_source, test_lmdb=golden / "lmdb" / "test_raw")
    p = caffe_pb2.SolverParameter(
        base_lr=0.01,
        momentum=0.9,
        weight_decay=0.0005,
        lr_policy="fixed",
        max_iter=MAX_ITER,
        test_iter=[2],
        test_interval=4,
        display=1,
        average_loss=4,
        snapshot=3,
        snapshot_prefix=str(folder / "snap"),
        random_seed=1701,
    )
    p.net_param.CopyFrom(text_format.Parse(net, caffe_pb2.NetParameter()))
    return p


def run(param: caffe_pb2.SolverParameter, resume: Path | None = None, action=None, log: str = "") -> Solver:
    """Build a solver (nets and their random draws), optionally restore a snapshot, train, close; glog
    also goes to ``log`` (a file in the snapshot folder) when given."""
    fh = glog.add_file(Path(param.snapshot_prefix).parent / log) if log else None
    solver = Solver(param, hooks=SolverHooks(action=action))
    try:
        if resume is not None:
            solver.restore(str(resume))
        solver.solve()
    finally:
        for net in [solver.net, *solver.test_nets]:
            net.close()
        if fh is not None:
            glog.remove_file(fh)
    return solver


def assert_same_log_from(resumed: Path, straight: Path, start: int) -> None:
    """From iteration ``start`` on, the resumed log shows the uninterrupted run's smoothed losses and test
    outputs, as printed (Caffe's 6 digits)."""
    a, b = parse_log(resumed), parse_log(straight)
    mine, ref = dict(zip(a.iters.tolist(), a.loss.tolist())), dict(zip(b.iters.tolist(), b.loss.tolist()))
    assert {i: v for i, v in mine.items() if i >= start} == {i: v for i, v in ref.items() if i >= start}
    tests_a = [(t.iter, t.outputs) for t in a.tests if t.iter >= start]
    tests_b = [(t.iter, t.outputs) for t in b.tests if t.iter >= start]
    assert tests_a == tests_b and tests_a


def final_weights(folder: Path) -> bytes:
    return (folder / f"snap_iter_{MAX_ITER}.caffemodel").read_bytes()


def copy_snapshot(src: Path, dst: Path, it: int, sidecar: bool = True) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for suffix in (".caffemodel", ".solverstate") + ((".solverstate.pixsent",) if sidecar else ()):
        (dst / f"snap_iter_{it}{suffix}").write_bytes((src / f"snap_iter_{it}{suffix}").read_bytes())
    # learned_net inside the solverstate names the caffemodel by its path in src: that copy stays there
    return dst / f"snap_iter_{it}.solverstate"


@pytest.fixture(scope="module")
def straight(golden, tmp_path_factory) -> Path:
    """The uninterrupted run: snapshots (with sidecars) at 3, 6, 9, 12."""
    folder = tmp_path_factory.mktemp("straight")
    run(solver_param(golden, folder), log="train.log")
    assert (folder / "snap_iter_6.solverstate.pixsent").exists()
    return folder


@pytest.mark.parametrize("it", [3, 6, 9])
def test_resume_from_periodic_snapshot_equals_uninterrupted(golden, straight, tmp_path, it):
    state = copy_snapshot(straight, tmp_path, it)
    run(solver_param(golden, tmp_path), resume=state, log="resume.log")
    assert final_weights(tmp_path) == final_weights(straight)
    assert_same_log_from(tmp_path / "resume.log", straight / "train.log", it)


def stop_at(get_solver, iteration: int, in_test: bool = False):
    """A signal-like action: STOP once the solver reaches ``iteration`` (in a test round: after one batch)."""
    polls = []

    def action() -> Action:
        s = get_solver()
        if s is None or s.iter != iteration or (s._test_round is not None) != in_test:
            return Action.NONE
        polls.append(1)
        return Action.STOP if len(polls) == (2 if in_test else 1) else Action.NONE

    return action


@pytest.mark.parametrize("iteration, in_test", [(5, False), (8, True), (11, False)])
def test_stop_and_resume_equals_uninterrupted(golden, straight, tmp_path, iteration, in_test):
    stopped = tmp_path / "stopped"
    holder: list[Solver] = []

    def current():
        return holder[0] if holder else None

    param = solver_param(golden, stopped)
    solver = Solver(param, hooks=SolverHooks(action=stop_at(current, iteration, in_test)))
    holder.append(solver)
    try:
        solver.solve()
    finally:
        for net in [solver.net, *solver.test_nets]:
            net.close()
    assert solver.iter == iteration and solver.requested_early_exit
    state = stopped / f"snap_iter_{iteration}.solverstate"
    assert state.exists() and Path(f"{state}.pixsent").exists()
    run(solver_param(golden, stopped), resume=state, log="resume.log")
    assert final_weights(stopped) == final_weights(straight)
    # a stop inside a test round keeps the round's start: the resumed run repeats that test exactly
    assert_same_log_from(stopped / "resume.log", straight / "train.log", iteration)


KILLER = """
import os, signal, sys
from google.protobuf import text_format
from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.solvers.solver import Solver, SolverHooks

param = text_format.Parse(open(sys.argv[1]).read(), caffe_pb2.SolverParameter())
kill_at = int(sys.argv[2])

def maybe_kill(solver):
    if solver.iter == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

Solver(param, hooks=SolverHooks(on_start=[maybe_kill])).solve()
"""


def test_sigkilled_process_resumes_from_newest_snapshot(golden, straight, tmp_path):
    folder = tmp_path / "killed"
    folder.mkdir()
    param = solver_param(golden, folder)
    (folder / "solver.prototxt").write_text(text_format.MessageToString(param))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(folder / "solver.prototxt"), "7"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    states = sorted(folder.glob("snap_iter_*.solverstate"), key=lambda p: int(p.stem.split("_")[-1]))
    assert [p.name for p in states] == ["snap_iter_3.solverstate", "snap_iter_6.solverstate"]
    run(param, resume=states[-1])
    assert final_weights(folder) == final_weights(straight)


def test_without_sidecar_resumes_as_caffe_with_one_warning(golden, straight, tmp_path, capsys):
    state = copy_snapshot(straight, tmp_path, 6, sidecar=False)
    capsys.readouterr()
    run(solver_param(golden, tmp_path), resume=state)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "resuming as Caffe does" in line]
    assert (
        len(warnings) == 1
        and warnings[0].startswith("W")
        and "no snap_iter_6.solverstate.pixsent" in warnings[0]
    )
    assert final_weights(tmp_path) != final_weights(straight)


def test_sidecar_of_another_solverstate_is_not_used(golden, straight, tmp_path, capsys):
    state = copy_snapshot(straight, tmp_path, 6)
    (tmp_path / "snap_iter_6.solverstate.pixsent").write_bytes(
        (straight / "snap_iter_3.solverstate.pixsent").read_bytes()
    )
    capsys.readouterr()
    run(solver_param(golden, tmp_path), resume=state)
    err = capsys.readouterr().err
    assert "written for another solverstate" in err and "resuming as Caffe does" in err


def test_image_data_shuffle_and_skip_resume_exactly(golden, tmp_path):
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    run(solver_param(golden, straight_dir, kind="ImageData"))
    state = copy_snapshot(straight_dir, resumed_dir, 9)  # 45 + 7 skipped lines: inside the second epoch
    run(solver_param(golden, resumed_dir, kind="ImageData"), resume=state)
    assert final_weights(resumed_dir) == final_weights(straight_dir)


def test_sidecar_round_trip_and_bad_file(tmp_path):
    import numpy as np

    from pixsent.engine.solvers import resume_state
    from pixsent.errors import FormatError

    tree = {"a": np.arange(5, dtype=np.uint32), "k": b"\x00key", "n": None, "l": [1, 2.5, {"x": "y"}]}
    path = resume_state.write_sidecar(tmp_path / "s.solverstate.pixsent", tree)
    back = resume_state.read_sidecar(path)
    assert back["format"] == resume_state.FORMAT and back["k"] == b"\x00key" and back["n"] is None
    assert np.array_equal(back["a"], tree["a"]) and back["a"].dtype == np.uint32
    assert back["l"] == [1, 2.5, {"x": "y"}]
    (tmp_path / "bad.pixsent").write_bytes(b"not an npz")
    with pytest.raises(FormatError, match="bad.pixsent"):
        resume_state.read_sidecar(tmp_path / "bad.pixsent")
