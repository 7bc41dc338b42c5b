"""The format subcommands: upgrade_net_proto_text/binary, upgrade_solver_proto_text, mean convert, inspect."""

from __future__ import annotations

import numpy as np
import pytest

from pixsent.cli import main
from pixsent.formats.caffemodel import read_caffemodel, read_weights
from pixsent.formats.prototxt import read_net, read_solver


def test_upgrade_net_proto_binary(golden, tmp_path):
    out = tmp_path / "up.caffemodel"
    assert (
        main(["upgrade_net_proto_binary", str(golden / "mini_caffenet/weights_v1.caffemodel"), str(out)]) == 0
    )
    raw = read_caffemodel(out)
    assert not raw.layers and raw.layer[1].blobs[0].HasField("shape")
    ref = read_weights(golden / "mini_caffenet/weights.caffemodel")
    for name, arrays in read_weights(out).items():
        for a, b in zip(arrays, ref[name]):
            np.testing.assert_array_equal(a, b)


def test_upgrade_net_and_solver_text(tmp_path):
    old = tmp_path / "old.prototxt"
    old.write_text('name: "n"\nlayers { name: "fc" type: INNER_PRODUCT bottom: "x" top: "y" blobs_lr: 3 }\n')
    assert main(["upgrade_net_proto_text", str(old), str(tmp_path / "new.prototxt")]) == 0
    text = (tmp_path / "new.prototxt").read_text()
    assert 'type: "InnerProduct"' in text and "lr_mult: 3" in text and "layers" not in text
    assert read_net(tmp_path / "new.prototxt").layer[0].param[0].lr_mult == 3
    solver = tmp_path / "solver.prototxt"
    solver.write_text("solver_type: NESTEROV\nbase_lr: 0.1\n")
    assert main(["upgrade_solver_proto_text", str(solver), str(tmp_path / "s2.prototxt")]) == 0
    assert read_solver(tmp_path / "s2.prototxt").type == "Nesterov"


def test_mean_convert_both_ways(golden, tmp_path):
    npy = tmp_path / "m.npy"
    assert main(["mean", "convert", str(golden / "mean.binaryproto"), str(npy)]) == 0
    np.testing.assert_array_equal(np.load(npy), np.load(golden / "mean.npy"))
    bp = tmp_path / "m.binaryproto"
    assert main(["mean", "convert", str(npy), str(bp)]) == 0
    assert bp.read_bytes() == (golden / "mean.binaryproto").read_bytes()


def test_bad_input_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer {\n  nonsense: 1\n}\n")
    assert main(["upgrade_net_proto_text", str(bad), str(tmp_path / "o.prototxt")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{bad}:2:3" in err
    assert not (tmp_path / "o.prototxt").exists()


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("mini_caffenet/weights.caffemodel", "conv1"),
        ("mini_caffenet/deploy.prototxt", "Convolution"),
        ("solver_run/solver.prototxt", "base_lr: 0.01"),
        ("mean.binaryproto", "72.8933, 114.2624, 124.4304"),
        ("solver_run/snap_iter_20.solverstate", "iter 20"),
        ("lmdb/train_raw", "32 entries"),
    ],
)
def test_inspect(golden, capsys, name, expect):
    assert main(["inspect", str(golden / name)]) == 0
    assert expect in capsys.readouterr().out
