"""bench/bench_train_process.py: the log parser, the solver and net it writes, and the issue-15 goal rows it
feeds (behaviour only; its speed is what the benchmark measures, never asserted here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from pixsent.caffe.proto import caffe_pb2
from pixsent.formats.prototxt import read_net, read_solver

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    """Import bench/NAME.py by path (bench/ is not a package of pixsent)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def btp():
    return _load("bench_train_process")


SAMPLE_LOG = """\
I1201 10:00:01.000000  1234 solver.cpp:239] Iteration 0 (-1.2e+05 iter/s, 3.5s/1 iters), loss = 0.693
I1201 10:00:01.000000  1234 solver.cpp:258]     Train net output #0: loss = 0.693 (* 1 = 0.693 loss)
I1201 10:00:02.000000  1234 sgd_solver.cpp:112] Iteration 0, lr = 0.001
I1201 10:00:02.500000  1234 solver.cpp:239] Iteration 1 (0.8 iter/s, 1.25s/1 iters), loss = 0.69
Iteration 2 (1.1 iter/s, 0.9s/1 iters), loss = 0.7
I20261201 10:00:04.000000  1234 solver.cpp:239] Iteration 4 (1 iter/s, 2s/2 iters), loss = 0.7
I1201 10:00:05.000000  1234 solver.cpp:464] Iteration 10, loss = 0.69
"""


def test_iteration_seconds_reads_each_display_line(btp) -> None:
    assert btp.iteration_seconds(SAMPLE_LOG) == {0: 3.5, 1: 1.25, 2: 0.9, 4: 1.0}


def test_solver_runs_ten_iterations_without_snapshot_or_test(btp, tmp_path: Path) -> None:
    net = tmp_path / "train_val.prototxt"
    sp = read_solver(btp.write_solver(net, tmp_path))
    assert sp.net == str(net)
    assert sp.max_iter == 10 and sp.display == 1
    assert sp.snapshot == 0 and not sp.snapshot_after_train
    assert not sp.test_initialization and sp.test_interval > sp.max_iter
    assert sp.max_iter % sp.test_interval != 0  # no test after the last iteration either
    assert sp.test_iter == [4]  # the test net is still built


def test_net_reads_the_cached_fold_at_batch_32(btp, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    npar = read_net(btp.write_net(cache, tmp_path))
    data = {lp.include[0].phase: lp for lp in npar.layer if lp.type == "Data"}
    train, test = data[caffe_pb2.TRAIN], data[caffe_pb2.TEST]
    assert train.data_param.source == str(cache / "train_lmdb")
    assert test.data_param.source == str(cache / "test_lmdb")
    mean = str(cache / "mean.binaryproto")
    assert train.transform_param.mean_file == test.transform_param.mean_file == mean
    assert train.data_param.batch_size == 32 and test.data_param.batch_size == 44
    assert train.transform_param.mirror and train.transform_param.crop_size == 227
    assert not any(lp.blobs for lp in npar.layer)  # no weights: the fillers run


def test_summary_takes_medians_of_the_processes(btp) -> None:
    figures = [(700.0, 12.0, 1500.0), (650.0, 11.0, 1400.0), (900.0, 15.0, 1450.0)]
    runs = [
        {"iter_ms": i, "process_s": p, "peak_rss_mib": m, "cpu_s": 2 * p, "loadavg_before": 0.5}
        for i, p, m in figures
    ]
    body = btp.summarise(runs, threads=2)
    assert (body["iter_ms"], body["process_s"], body["peak_rss_mib"]) == (700.0, 12.0, 1450.0)
    assert "| whole process, 10 iterations | 19.1 s | 12.0 s | 1.59x | 12.0, 11.0, 15.0 |" in btp.render(body)


def test_goal_table_takes_the_process_rows_from_report_json() -> None:
    engine = _load("bench_engine")
    rows = {"ours_train32": {"median_ms": 760.0, "peak_rss_mib": 1300.0}}
    process = {"iter_ms": 760.0, "process_s": 9.55, "peak_rss_mib": 1500.0}
    goals = {g["key"]: g for g in engine.goal_rows(rows, process)}
    assert goals["train32"]["ours"] == 760.0 and goals["train32"]["met"]
    assert goals["process32"]["ours"] == 9.55 and goals["process32"]["met"]
    assert goals["rss32"]["ours"] == 1500.0 and not goals["rss32"]["met"]
    assert goals["step32"]["ours"] == 760.0
    assert goals["time32"]["ours"] is None
    assert {g["key"]: g["ours"] for g in engine.goal_rows(rows)}["train32"] is None
    table = "\n".join(engine.render_goals(rows, process))
    assert "| 19.1 s | 9.6 s | 2.00x |" in table and "not run" in table
