"""`pixsent caffe` / tools/caffe command line: flag handling, errors, and the ENGINE=caffe hand-off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pixsent.cli import main

REPO = Path(__file__).resolve().parent.parent


def _fake_caffe(folder: Path) -> Path:
    """An executable named caffe that records its argv and prints a glog-like line."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "caffe"
    exe.write_text(
        f"#!{sys.executable}\n"
        "import sys, pathlib\n"
        "pathlib.Path(sys.argv[0]).with_name('argv.txt').write_text('\\n'.join(sys.argv[1:]))\n"
        "print('I0101 00:00:00.000000 1 caffe.cpp:1] real caffe here', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    exe.chmod(0o755)
    return exe


def test_engine_caffe_runs_binary_from_path(tmp_path, monkeypatch, capfd):
    exe = _fake_caffe(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{REPO / 'tools'}{os.pathsep}{exe.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CAFFE_BIN", raising=False)
    monkeypatch.setenv("ENGINE", "caffe")
    rc = main(
        ["caffe", "train", "-solver", "s.prototxt", "-weights", "a.caffemodel,b.caffemodel", "-gpu", "0"]
    )
    assert rc == 3  # the real binary's exit code comes back
    argv = (exe.parent / "argv.txt").read_text().splitlines()
    assert argv == ["train", "-solver", "s.prototxt", "-weights", "a.caffemodel,b.caffemodel", "-gpu", "0"]
    assert "real caffe here" in capfd.readouterr().err


def test_engine_flag_and_caffe_bin(tmp_path, monkeypatch):
    exe = _fake_caffe(tmp_path / "elsewhere")
    monkeypatch.setenv("CAFFE_BIN", str(exe))
    monkeypatch.delenv("ENGINE", raising=False)
    rc = main(
        [
            "caffe",
            "test",
            "-model",
            "m.prototxt",
            "-weights",
            "w.caffemodel",
            "-iterations",
            "7",
            "--engine",
            "caffe",
        ]
    )
    assert rc == 3
    assert (exe.parent / "argv.txt").read_text().splitlines() == [
        "test",
        "-model",
        "m.prototxt",
        "-weights",
        "w.caffemodel",
        "-iterations",
        "7",
    ]


def test_missing_binary_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", f"{REPO / 'tools'}{os.pathsep}{tmp_path}")  # only our own tools/caffe
    monkeypatch.delenv("CAFFE_BIN", raising=False)
    monkeypatch.setenv("ENGINE", "caffe")
    assert main(["caffe", "train", "-solver", "s.prototxt"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no BVLC caffe binary found" in err and "CAFFE_BIN" in err


def test_weights_with_snapshot_is_an_error(monkeypatch, capsys):
    monkeypatch.delenv("ENGINE", raising=False)
    assert (
        main(["caffe", "train", "-solver", "s.prototxt", "-weights", "w", "-snapshot", "x.solverstate"]) == 1
    )
    assert "not both" in capsys.readouterr().err


def test_gpu_without_cuda_is_an_error(monkeypatch, capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device exists here")
    monkeypatch.delenv("ENGINE", raising=False)
    assert main(["caffe", "test", "-model", "m.prototxt", "-weights", "w", "-gpu", "0"]) == 1
    assert "no CUDA device" in capsys.readouterr().err


def test_tools_caffe_script_runs(tmp_path):
    env = dict(os.environ, ENGINE="pixsent")
    out = subprocess.run(
        [str(REPO / "tools" / "caffe"), "train", "-solver=missing_solver.prototxt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 1
    assert "missing_solver.prototxt" in out.stderr


# ---------------------------------------------------------------------- Caffe 1.0 behaviours (issue 13)
GLOG_LINE = __import__("re").compile(r"^[IWEF]\d{4,8} \S+ +\d+ (\S+)\] (.*)$")


def _setup_lines(text: str) -> list[tuple[str, str]]:
    """(source, message) of the Net::Init lines (net.cpp, layer_factory.hpp) of a glog log."""
    out = []
    for line in text.splitlines():
        m = GLOG_LINE.match(line)
        if m and m.group(1).split(":")[0] in ("net.cpp", "layer_factory.hpp"):
            out.append((m.group(1), m.group(2)))
    return out


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["caffe", "--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == "caffe version 1.0.0"


def test_train_log_has_caffes_net_setup_lines(golden, tmp_path, monkeypatch, capfd):
    """Every net.cpp / layer_factory.hpp line of the golden train.log (both nets: 239 lines, split layers,
    Top shape, Memory required, backward needs, outputs) comes out identical, in the same order."""
    import shutil

    for name in ("solver_run", "lmdb"):
        shutil.copytree(golden / name, tmp_path / name)
    shutil.copy(golden / "mean.binaryproto", tmp_path / "mean.binaryproto")
    monkeypatch.chdir(tmp_path / "solver_run")
    flags = ["-solver", "solver.prototxt", "-weights", "init.caffemodel", "-iterations", "0"]
    rc = main(["caffe", "train", *flags])
    assert rc == 0
    ours = _setup_lines(capfd.readouterr().err)
    theirs = _setup_lines((golden / "solver_run" / "train.log").read_text())
    assert len(theirs) == 239
    assert ours == theirs


def test_time_phase_test_times_the_test_net(golden, monkeypatch, capfd):
    monkeypatch.chdir(golden / "solver_run")
    rc = main(["caffe", "time", "-model", "net.prototxt", "-phase", "TEST", "-iterations", "1"])
    assert rc == 0
    err = capfd.readouterr().err
    assert "accuracy\tforward:" in err  # the Accuracy layer exists only in the TEST net
    assert "This network produces output accuracy" in err
    rc = main(["caffe", "time", "-model", "net.prototxt", "-iterations", "1"])
    err = capfd.readouterr().err
    assert rc == 0 and "accuracy\tforward:" not in err
    assert main(["caffe", "time", "-model", "net.prototxt", "-phase", "VAL"]) == 1
    assert 'phase must be "TRAIN" or "TEST"' in capfd.readouterr().err


def test_a_diverging_training_exits_with_its_own_status(tmp_path, monkeypatch, capsys):
    """A NaN/inf loss stops `caffe train` with one line and status 3 (a broken input gives 1), so that the
    fold workflow and `pixsent select` can tell a diverged configuration from a failure."""
    monkeypatch.chdir(tmp_path)
    Path("net.prototxt").write_text(
        'layer { name: "d" type: "DummyData" top: "x" top: "y" dummy_data_param {\n'
        "  shape { dim: 4 dim: 3 } shape { dim: 4 dim: 1 }\n"
        '  data_filler { type: "gaussian" std: 100 } data_filler { type: "constant" value: 1 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p"\n'
        '  inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 1 } } }\n'
        'layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }\n'
    )
    Path("s.prototxt").write_text(
        'net: "net.prototxt" base_lr: 1e30 lr_policy: "fixed" max_iter: 50 display: 1\n'
        "snapshot_after_train: false solver_mode: CPU\n"
    )
    assert main(["caffe", "train", "-solver", "s.prototxt"]) == 3
    err = capsys.readouterr().err
    assert "pixsent caffe: error: s.prototxt: training loss is" in err and "at iteration" in err
