"""Caffe log parser on real Caffe's golden logs (train, resume, solver types) and on edge-case lines."""

from __future__ import annotations

import numpy as np
import pytest

from pixsent.engine.logparse import parse_lines, parse_log, to_csv


def test_golden_train_log_matches_trajectory(golden):
    log = parse_log(golden / "solver_run" / "train.log")
    t = np.load(golden / "solver_run" / "trajectory.npz")
    assert list(log.iters) == list(t["iter"])
    np.testing.assert_array_equal(log.loss, t["loss"])  # both are the printed 6-digit values
    np.testing.assert_array_equal(log.lr_iters, t["lr_iter"])
    np.testing.assert_array_equal(log.lr, t["lr"])
    np.testing.assert_array_equal(log.train_outputs["loss"], t["train_output_loss"])
    np.testing.assert_array_equal(log.test_iters, t["test_iter"])
    np.testing.assert_array_equal(log.test_outputs["accuracy"], t["test_accuracy"])
    np.testing.assert_array_equal(log.test_outputs["loss"], t["test_loss"])
    assert log.seconds[0] >= 0 and log.seconds[-1] >= log.seconds[0]


def test_golden_resume_and_solver_type_logs(golden):
    resume = parse_log(golden / "solver_run" / "resume.log")
    full = parse_log(golden / "solver_run" / "train.log")
    assert list(resume.iters) == list(range(10, 21))
    np.testing.assert_array_equal(resume.loss, full.loss[10:])
    assert list(resume.test_iters) == [10, 15, 20]
    first = {
        "Nesterov": 0.534579,
        "AdaGrad": 0.0663088,
        "RMSProp": 0.137397,
        "AdaDelta": 0.103305,
        "Adam": 0.569492,
    }
    for name, last in first.items():
        log = parse_log(golden / "solver_types" / f"{name}.log")
        assert list(log.iters) == list(range(11)), name
        assert log.loss[0] == 0.693621 and log.loss[-1] == last
        assert list(log.test_iters) == [0, 5, 10]


def test_odd_rate_fields_and_both_prefixes():
    lines = [
        "I20261122 05:08:18.418596 16902 solver.cpp:239] Iteration 0 (-1.13267e-41 iter/s, 0.012s/1 iters), "
        "loss = 0.693377",
        "I1122 05:08:19.000000  1234 solver.cpp:258]     Train net output #0: loss = 0.69 (* 1 = 0.69 loss)",
        "I1122 05:08:19.000001  1234 sgd_solver.cpp:112] Iteration 0, lr = 1e-05",
        "I1122 05:08:19.5 1234 solver.cpp:239] Iteration 1 (inf iter/s, 0s/1 iters), loss = 5.5e-01",
        "Iteration 2, loss = nan",
    ]
    log = parse_lines(lines)
    assert list(log.iters) == [0, 1, 2]
    assert log.loss[0] == 0.693377 and log.loss[1] == 0.55 and np.isnan(log.loss[2])
    assert log.lr_at(0) == 1e-05


def test_to_csv_tables(golden, tmp_path):
    log = parse_log(golden / "solver_run" / "train.log")
    train, test = to_csv(log, tmp_path, "train.log")
    rows = train.read_text().splitlines()
    assert rows[0] == "NumIters,Seconds,LearningRate,loss"
    assert len(rows) == 21 and rows[1].startswith("0,") and rows[1].endswith(",0.01,0.693132")
    trows = test.read_text().splitlines()
    assert trows[0] == "NumIters,Seconds,LearningRate,accuracy,loss" and len(trows) == 6
    assert trows[-1].startswith("20,") and trows[-1].endswith(",0.9375,0.345934")


def test_missing_log_is_format_error(tmp_path):
    from pixsent.errors import FormatError

    with pytest.raises(FormatError, match="not found"):
        parse_log(tmp_path / "nope.log")
