"""Every executable in tools/ run as a subprocess, as a Caffe script would: from another folder, with the
default worker count (the machine's cores), through the script's own interpreter line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from pixsent.caffe.proto import caffe_pb2
from pixsent.formats.lmdb_io import LMDBReader

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "tools"
EXECUTABLES = sorted(p.name for p in TOOLS.iterdir() if p.is_file() and os.access(p, os.X_OK))


def run_tool(name: str, *args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PIXSENT_NO_REEXEC"}
    return subprocess.run(
        [str(TOOLS / name), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def test_every_executable_is_tested():
    tested = {
        "caffe",
        "compute_image_mean",
        "convert_imageset",
        "draw_net",
        "extract_features",
        "upgrade_net_proto_binary",
        "upgrade_net_proto_text",
        "upgrade_solver_proto_text",
    }
    assert set(EXECUTABLES) == tested


def test_every_executable_guards_its_main():
    """Importing a script (a test, a spawned process) must not run it: nothing may run at import."""
    for name in EXECUTABLES:
        text = (TOOLS / name).read_text()
        assert 'if __name__ == "__main__":' in text, name
        head = text.split('if __name__ == "__main__":')[0]
        assert "run_tool(" not in head and "execv" not in head, name


def test_caffe_version(tmp_path):
    r = run_tool("caffe", "--version", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "caffe version 1.0.0"


def test_convert_imageset_with_default_workers_then_compute_image_mean(golden, tmp_path):
    """8 JPEGs with the default decode threads (min(2, cores)); the datums equal Caffe's own LMDB byte for
    byte, and the mean of the 8 equals numpy's (1e-6 rel)."""
    lines = (golden / "train.txt").read_text().splitlines()[:8]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    r = run_tool(
        "convert_imageset",
        "--resize_height=36",
        "--resize_width=36",
        f"{golden / 'images'}/",
        "list.txt",
        "out_lmdb",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    with LMDBReader(golden / "lmdb" / "train_raw") as ref, LMDBReader(tmp_path / "out_lmdb") as ours:
        theirs = dict(list(ref.datums())[:8])
        mine = dict(ours.datums())
    assert list(mine) == list(theirs)
    assert all(mine[k].data == theirs[k].data and mine[k].label == theirs[k].label for k in mine)
    r = run_tool("compute_image_mean", "--backend=lmdb", "out_lmdb", "mean.binaryproto", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    blob = caffe_pb2.BlobProto.FromString((tmp_path / "mean.binaryproto").read_bytes())
    pixels = np.stack([np.frombuffer(d.data, np.uint8).reshape(3, 36, 36) for d in mine.values()])
    expect = pixels.astype(np.float64).mean(0).ravel()
    assert np.abs(np.array(blob.data) - expect).max() / np.abs(expect).max() < 1e-6


def test_extract_features(golden, tmp_path):
    """Caffe's argument order; 2 batches of 8 test images; ip2 as 1x1 float Datums keyed %010d."""
    out = tmp_path / "feat"
    r = run_tool(
        "extract_features",
        "init.caffemodel",
        "net.prototxt",
        "ip2,pool2",
        f"{out}_ip2,{out}_pool2",
        "2",
        "lmdb",
        cwd=golden / "solver_run",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Successfully extracted the features!" in r.stderr
    with LMDBReader(f"{out}_ip2") as reader:
        entries = list(reader.datums())
    assert [k for k, _ in entries] == [f"{i:010d}".encode() for i in range(16)]
    d = entries[0][1]
    assert (d.channels, d.height, d.width) == (2, 1, 1) and len(d.float_data) == 2
    with LMDBReader(f"{out}_pool2") as reader:
        d = next(iter(reader.datums()))[1]
    assert (d.channels, d.height, d.width) == (8, 9, 9) and len(d.float_data) == 8 * 9 * 9
    args = ["init.caffemodel", "net.prototxt", "nope", str(out), "1", "lmdb"]
    r = run_tool("extract_features", *args, cwd=golden / "solver_run")
    assert r.returncode == 1 and "unknown feature blob name nope" in r.stderr


def test_upgrade_net_proto_text_and_binary(golden, tmp_path):
    v1 = 'name: "v1"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 4\ninput_dim: 4\n'
    v1 += 'layers { name: "relu" type: RELU bottom: "data" top: "data" }\n'
    (tmp_path / "old.prototxt").write_text(v1)
    r = run_tool("upgrade_net_proto_text", "old.prototxt", "new.prototxt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "new.prototxt").read_text()
    assert 'type: "ReLU"' in text and 'type: "Input"' in text and "layers {" not in text
    src = golden / "mini_caffenet" / "weights_v1.caffemodel"
    r = run_tool("upgrade_net_proto_binary", str(src), "new.caffemodel", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    new = caffe_pb2.NetParameter.FromString((tmp_path / "new.caffemodel").read_bytes())
    ref = caffe_pb2.NetParameter.FromString((golden / "mini_caffenet" / "weights.caffemodel").read_bytes())
    assert not new.layers and len(new.layer) > 0
    ours = {la.name: [np.array(b.data) for b in la.blobs] for la in new.layer if la.blobs}
    theirs = {la.name: [np.array(b.data) for b in la.blobs] for la in ref.layer if la.blobs}
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(a, b) for k in ours for a, b in zip(ours[k], theirs[k]))


def test_upgrade_solver_proto_text(tmp_path):
    (tmp_path / "old.prototxt").write_text('net: "n.prototxt"\nbase_lr: 0.1\nsolver_type: NESTEROV\n')
    r = run_tool("upgrade_solver_proto_text", "old.prototxt", "new.prototxt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "new.prototxt").read_text()
    assert 'type: "Nesterov"' in text and "solver_type" not in text


def test_draw_net(golden, tmp_path):
    """Renders with graphviz where pydot and dot exist; otherwise one clear line and exit 1."""
    proto = golden / "solver_run" / "net.prototxt"
    r = run_tool("draw_net", str(proto), "net.raw", "--phase", "TEST", cwd=tmp_path)
    have = shutil.which("dot") is not None and _has_pydot()
    if have:
        assert r.returncode == 0, r.stderr
        assert "Drawing net to net.raw" in r.stdout
        assert "conv1" in (tmp_path / "net.raw").read_text()
    else:
        assert r.returncode == 1
        assert "pydot" in r.stderr or "graphviz" in r.stderr
        assert "Traceback" not in r.stderr


def _has_pydot() -> bool:
    return subprocess.run([sys.executable, "-c", "import pydot"], capture_output=True).returncode == 0
