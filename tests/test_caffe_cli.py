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
