"""Bad input at the `pixsent` command line: one clear error line naming the file/line/layer, no traceback.

Every user-facing command is fed realistic broken input made here (a prototxt with a syntax error, an
unknown layer type, weights of the wrong shape, a truncated caffemodel, malformed list and split lines,
a corrupt JPEG, a missing LMDB, a solver whose net is missing, a mean of the wrong shape); most run
in-process through ``pixsent.cli.main``, a few as real processes to prove no traceback reaches the user.
Interrupted writers must leave nothing under the final name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pixsent.caffe.proto import caffe_pb2
from pixsent.cli import main
from pixsent.formats.binaryproto import write_mean
from pixsent.formats.blob import array_to_blob

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"


def _layer(name: str, kind: str, bottom: str | None, top: str, param: str = "") -> str:
    """One prototxt line: layer { name type [bottom] top [param] }."""
    bottom_field = f'bottom: "{bottom}" ' if bottom else ""
    return f'layer {{ name: "{name}" type: "{kind}" {bottom_field}top: "{top}" {param}}}\n'


def _input(*dims: int) -> str:
    return _layer(
        "data", "Input", None, "data", f"input_param {{ shape {{ {' '.join(f'dim: {d}' for d in dims)} }} }} "
    )


INPUT = _input(2, 3, 8, 8)
IP = _layer("ip", "InnerProduct", "data", "ip", "inner_product_param { num_output: 2 } ")
# line 4 holds the error: a float field given a word
SYNTAX = (
    INPUT
    + IP
    + 'layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip"\n  relu_param { negative_slope: abc }\n}\n'
)
UNKNOWN = INPUT + IP + _layer("weird", "FancyLayer", "ip", "w")
CONV_NET = (
    _input(1, 3, 8, 8)
    + _layer("conv1", "Convolution", "data", "conv1", "convolution_param { num_output: 4 kernel_size: 3 } ")
    + _layer("fc", "InnerProduct", "conv1", "fc", "inner_product_param { num_output: 2 } ")
    + _layer("prob", "Softmax", "fc", "prob")
)


def _caffemodel(layers: dict[str, list[np.ndarray]]) -> bytes:
    """A binary NetParameter holding ``layers`` (name -> blobs), typed as InnerProduct/Convolution."""
    net = caffe_pb2.NetParameter()
    for name, arrays in layers.items():
        layer = net.layer.add(name=name, type="Convolution" if arrays[0].ndim == 4 else "InnerProduct")
        layer.blobs.extend(array_to_blob(a.astype(np.float32)) for a in arrays)
    return net.SerializeToString()


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    """Good and broken inputs, made once: nets, weights, images, lists, splits, an LMDB, means."""
    d = tmp_path_factory.mktemp("bad")
    files = {
        "net": INPUT + IP,
        "syntax": SYNTAX,
        "unknown": UNKNOWN,
        "conv": CONV_NET,
        "bigkernel": CONV_NET.replace("kernel_size: 3", "kernel_size: 11"),
    }
    out = {name: d / f"{name}.prototxt" for name in files}
    for name, text in files.items():
        out[name].write_text(text)
    rng = np.random.RandomState(0)
    good = _caffemodel({"ip": [rng.randn(2, 192), rng.randn(2)]})
    (d / "good.caffemodel").write_bytes(good)
    (d / "trunc.caffemodel").write_bytes(good[: len(good) // 2])
    (d / "shape.caffemodel").write_bytes(_caffemodel({"ip": [rng.randn(3, 5), rng.randn(3)]}))
    (d / "conv_bad.caffemodel").write_bytes(
        _caffemodel({"conv1": [rng.randn(4, 3, 3, 3), rng.randn(4)], "fc": [rng.randn(2, 99), rng.randn(2)]})
    )
    (d / "conv_good.caffemodel").write_bytes(
        _caffemodel({"conv1": [rng.randn(4, 3, 3, 3), rng.randn(4)], "fc": [rng.randn(2, 144), rng.randn(2)]})
    )
    for name in ("good", "trunc", "shape", "conv_bad", "conv_good"):
        out[f"{name}_w"] = d / f"{name}.caffemodel"
    # images: two real JPEGs and one that is not a JPEG at all
    images = d / "images"
    images.mkdir()
    for i in range(2):
        cv2.imwrite(str(images / f"img{i}.jpg"), rng.randint(0, 255, (12, 10, 3)).astype(np.uint8))
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    out["images"] = images
    lists = {
        "list_nolabel": "img0.jpg 0\nimg1.jpg\n",
        "list_corrupt": "img0.jpg 0\ncorrupt.jpg 1\nimg1.jpg 1\n",
        "list_ok": "img0.jpg 0\nimg1.jpg 1\n",
        "labels_malformed": "a 0\nb 1\nc\n",
        "labels_dup": "a 0\nb 1\nc 0\na 1\n",
        "labels_two": "a 0\nb 1\nc 2\n",
    }
    for name, text in lists.items():
        out[name] = d / f"{name}.txt"
        out[name].write_text(text)
    # a split set with a malformed line (2), label 2 (3) and a duplicate id (4) in test1/train.txt
    splits = d / "splits" / "five_agrees"
    for k, (train, test) in enumerate(
        (("x1 0\nbad line x\nx3 2\nx1 0\n", "x2 1\n"), ("x2 1\n", "x1 0\n")), 1
    ):
        (splits / f"test{k}").mkdir(parents=True)
        (splits / f"test{k}" / "train.txt").write_text(train)
        (splits / f"test{k}" / "test.txt").write_text(test)
    out["splits"] = splits
    splits_ok = d / "splits_ok" / "five_agrees"  # a valid set (the pipeline checks splits before all else)
    for k, (train, test) in enumerate((("x1 0\n", "x2 1\n"), ("x2 1\n", "x1 0\n")), 1):
        (splits_ok / f"test{k}").mkdir(parents=True)
        (splits_ok / f"test{k}" / "train.txt").write_text(train)
        (splits_ok / f"test{k}" / "test.txt").write_text(test)
    out["splits_ok"] = splits_ok
    # a real LMDB of 12x10 images, and nets reading it (one with a missing LMDB, one with a wrong mean)
    from pixsent.data.imageset import convert_imageset

    convert_imageset(images, out["list_ok"], d / "lmdb", workers=1, progress=False)
    out["lmdb"] = d / "lmdb"
    write_mean(np.zeros((3, 4, 4), np.float32), d / "mean_4x4.binaryproto")
    out["mean_4x4"] = d / "mean_4x4.binaryproto"
    (d / "mean_num2.binaryproto").write_bytes(
        array_to_blob(np.zeros((2, 3, 4, 4), np.float32)).SerializeToString()
    )
    out["mean_num2"] = d / "mean_num2.binaryproto"
    data_layer = (
        'layer {{ name: "data" type: "Data" top: "data" top: "label" {transform}'
        'data_param {{ source: "{source}" batch_size: 2 backend: LMDB }} }}\n'
    )
    out["net_nolmdb"] = d / "net_nolmdb.prototxt"
    out["net_nolmdb"].write_text(data_layer.format(transform="", source=d / "no_such_lmdb") + IP)
    out["net_badmean"] = d / "net_badmean.prototxt"
    out["net_badmean"].write_text(
        data_layer.format(
            transform=f'transform_param {{ mean_file: "{out["mean_4x4"]}" }} ', source=out["lmdb"]
        )
        + IP
    )
    out["solver_nonet"] = d / "solver_nonet.prototxt"
    out["solver_nonet"].write_text(f'net: "{d / "missing_net.prototxt"}"\nbase_lr: 0.01\nmax_iter: 1\n')
    out["solver"] = d / "solver.prototxt"
    out["solver"].write_text(f'net: "{out["net"]}"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 1\n')
    out["dir"] = d
    return out


@pytest.fixture(autouse=True)
def _own_engine(monkeypatch):
    """Run pixsent's engine even where ENGINE=caffe or CAFFE_BIN is set in the environment."""
    monkeypatch.delenv("ENGINE", raising=False)
    monkeypatch.delenv("CAFFE_BIN", raising=False)


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``pixsent ARGV`` run in-process; argparse exits count as codes."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_one_error(rc: int, err: str, command: str, *needles: str) -> str:
    """Non-zero exit, no traceback, exactly one `pixsent COMMAND: error:` line holding every needle."""
    assert rc != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"pixsent {command}: error: ")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# id -> (command line, with {name} = a fixture path and {out} = a fresh folder; needles of the error line)
CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    # caffe test / time / train
    "test-missing-model": (
        "caffe test -model {out}/nope.prototxt -weights {good_w} -iterations 1",
        ("nope.prototxt", "not found"),
    ),
    "test-syntax-line": (
        "caffe test -model {syntax} -weights {good_w} -iterations 1",
        ("syntax.prototxt:4:", "abc"),
    ),
    "time-unknown-type": (
        "caffe time -model {unknown} -iterations 1",
        ("unknown.prototxt", "'weird'", "FancyLayer"),
    ),
    "test-weight-shape": (
        "caffe test -model {net} -weights {shape_w} -iterations 1",
        ("shape.caffemodel", "'ip'", "(3, 5)", "(2, 192)"),
    ),
    "test-truncated-weights": (
        "caffe test -model {net} -weights {trunc_w} -iterations 1",
        ("trunc.caffemodel", "truncated"),
    ),
    "time-missing-lmdb": (
        "caffe time -model {net_nolmdb} -iterations 1",
        ("net_nolmdb.prototxt", "layer 'data'", "data_param.source", "no_such_lmdb", "LMDB not found"),
    ),
    "time-kernel-larger-than-input": (
        "caffe time -model {bigkernel} -iterations 1",
        ("layer 'conv1'", "kernel 11x11", "does not fit its 8x8 input"),
    ),
    "time-mean-wrong-shape": (
        "caffe time -model {net_badmean} -iterations 1",
        ("'data'", "mean_4x4.binaryproto", "(3, 4, 4)", "(3, 12, 10)"),
    ),
    "train-missing-solver": (
        "caffe train -solver {out}/nosolver.prototxt",
        ("nosolver.prototxt", "not found"),
    ),
    "train-solver-net-missing": (
        "caffe train -solver {solver_nonet}",
        ("solver_nonet.prototxt", "missing_net.prototxt", "not found"),
    ),
    "train-weight-shape": (
        "caffe train -solver {solver} -weights {shape_w}",
        ("shape.caffemodel", "'ip'", "(3, 5)", "(2, 192)"),
    ),
    "train-missing-snapshot": (
        "caffe train -solver {solver} -snapshot {out}/gone.solverstate",
        ("gone.solverstate", "not found"),
    ),
    # Caffe's tools
    "convert-no-label": (
        "convert_imageset --quiet --workers 1 {images}/ {list_nolabel} {out}/db",
        ("list_nolabel.txt:2", "no label"),
    ),
    "convert-strict-corrupt": (
        "convert_imageset -quiet -workers=1 --strict {images}/ {list_corrupt} {out}/db",
        ("list_corrupt.txt:2", "corrupt.jpg"),
    ),
    "convert-missing-list": (
        "convert_imageset --quiet {images}/ {out}/nolist.txt {out}/db",
        ("nolist.txt", "not found"),
    ),
    "mean-missing-lmdb": (
        "compute_image_mean --quiet {out}/no_lmdb {out}/m.binaryproto",
        ("no_lmdb", "LMDB not found"),
    ),
    "mean-not-lmdb": ("compute_image_mean --quiet {images} {out}/m.binaryproto", ("images", "not an LMDB")),
    # splits make (splits check has its own test: it lists every problem)
    "splits-make-malformed": (
        "splits make {labels_malformed} --out {out}/s",
        ("labels_malformed.txt:3", "no label"),
    ),
    "splits-make-duplicate": (
        "splits make {labels_dup} --out {out}/s",
        ("labels_dup.txt:4", "duplicate id a"),
    ),
    "splits-make-label-2": ("splits make {labels_two} --out {out}/s", ("labels_two.txt:3", "label 2")),
    # format tools
    "mean-convert-wrong-shape": ("mean convert {mean_num2} {out}/m.npy", ("mean_num2.binaryproto", "num=2")),
    "mean-convert-garbage": ("mean convert {trunc_w} {out}/m.npy", ("trunc.caffemodel", "binaryproto")),
    "inspect-syntax-line": ("inspect {syntax}", ("syntax.prototxt:4:", "abc")),
    "inspect-truncated": ("inspect {trunc_w}", ("trunc.caffemodel", "truncated")),
    "inspect-missing": ("inspect {out}/gone.caffemodel", ("gone.caffemodel", "not found")),
    "upgrade-syntax-line": ("upgrade_net_proto_text {syntax} {out}/up.prototxt", ("syntax.prototxt:4:",)),
    "upgrade-output-is-folder": ("upgrade_net_proto_text {net} {dir}", ("is a folder",)),
    # the paper's commands
    "prototxt-splits-missing": ("prototxt --splits {out}/nosplits --out {out}/pt", ("nosplits", "not found")),
    "prototxt-out-under-file": ("prototxt --out {net}/pt", ("net.prototxt is a file",)),
    "fold-unknown-variant": ("fold 1 --variant fc99 --runs {out}/runs --quiet", ("fc99", "unknown variant")),
    "fold-missing-images": (
        "fold 1 --splits {splits_ok}/.. --data {out}/noimages --runs {out}/runs --lmdb {out}/lmdb --quiet",
        ("noimages", "image folder not found"),
    ),
    "predict-missing-image": (
        "predict {out}/gone.jpg --weights {good_w} --model {net} --mean 104,117,123",
        ("gone.jpg", "not found"),
    ),
    "predict-corrupt-image": (
        "predict {images}/corrupt.jpg --weights {good_w} --model {net} --mean 104,117,123",
        ("corrupt.jpg", "decode"),
    ),
    "predict-weight-shape": (
        "predict {images}/img0.jpg --weights {shape_w} --model {net} --mean 104,117,123",
        ("shape.caffemodel", "'ip'", "(3, 5)", "(2, 192)"),
    ),
    "predict-mean-two-values": (
        "predict {images}/img0.jpg --weights {good_w} --model {net} --mean 104,117",
        ("104,117", "3 numbers"),
    ),
    "predict-mean-num2": (
        "predict {images}/img0.jpg --weights {good_w} --model {net} --mean {mean_num2}",
        ("mean_num2.binaryproto", "num=2"),
    ),
    "surgery-weight-shape": (
        "surgery --weights {conv_bad_w} --model {conv} --out {out} --size 10",
        ("conv_bad.caffemodel", "'fc'", "(2, 99)", "(2, 4, 6, 6)"),
    ),
    "surgery-truncated": (
        "surgery --weights {trunc_w} --model {conv} --out {out}",
        ("trunc.caffemodel", "truncated"),
    ),
    "surgery-syntax-line": (
        "surgery --weights {conv_good_w} --model {syntax} --out {out}",
        ("syntax.prototxt:4:",),
    ),
    "maps-missing-image": (
        "maps {out}/gone.jpg --weights {conv_good_w} --model {conv} --out {out}",
        ("gone.jpg", "not found"),
    ),
    "maps-mean-garbage": (
        "maps {images}/img0.jpg --weights {conv_good_w} --model {conv} --mean {trunc_w} --out {out}",
        ("trunc.caffemodel", "binaryproto"),
    ),
    "layers-no-splits": ("layers --run {out} --splits {out}/nosplits --mean 1,2,3", ("nosplits", "fold")),
    "layers-mean-words": (
        "layers --run {good_w} --model {net} --splits {splits} --mean a,b,c",
        ("a,b,c", "numbers"),
    ),
    "layers-no-net": ("layers --splits {splits} --mean 1,2,3", ("--run", "--init")),
    "layers-unknown-init": (
        "layers --init no_such_model --splits {splits}",
        ("no_such_model", "unknown model"),
    ),
    "layers-unknown-arch": (
        "layers --run {good_w} --model {net} --splits {splits} --mean 1,2,3 --arch vgg16",
        ("vgg16", "architecture"),
    ),
    "maps-no-weights": ("maps {images}/img0.jpg --out {out}", ("--weights", "--run")),
    "maps-run-not-a-fold": ("maps --run {out} --test-images 2 --out {out}", ("deploy.prototxt", "snapshot")),
    "distill-missing-posts": (
        "distill label {out}/posts.jsonl --out {out}/labels",
        ("posts.jsonl", "not found"),
    ),
    "models-fetch-unknown": ("models fetch no_such_model --dest {out}", ("no_such_model", "unknown model")),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_clear_line(case: str, bad, tmp_path, capsys, monkeypatch):
    line, needles = CASES[case]
    monkeypatch.chdir(tmp_path)  # relative defaults (runs/, data/, models/) stay in this test's folder
    argv = [token.format(out=tmp_path / "out", **bad) for token in line.split()]
    rc, _, err = run_cli(capsys, argv)
    assert_one_error(rc, err, line.split()[0], *needles)


def test_distill_csv_without_text_column_names_file_and_line(tmp_path, capsys):
    posts = tmp_path / "posts.csv"
    posts.write_text("id,body,picture\n1,great day,a.jpg\n")
    rc, _, err = run_cli(capsys, ["distill", "label", posts, "--out", tmp_path / "labels"])
    assert_one_error(rc, err, "distill", "posts.csv:1", "text")


def test_splits_check_reports_each_bad_line_as_file_line(bad, capsys):
    rc, out, err = run_cli(capsys, ["splits", "check", bad["splits"]])
    assert rc == 1 and "Traceback" not in err
    train = bad["splits"] / "test1" / "train.txt"
    assert f"{train}:2: " in out  # malformed line
    assert f"{train}:3: label 2 of x3 is not 0 or 1" in out
    assert f"{train}:4: duplicate id x1 (first at line 1)" in out
    assert "problem(s) in" in err


def test_corrupt_jpeg_is_skipped_by_name_and_line(bad, tmp_path, capsys):
    db = tmp_path / "db"
    rc, _, err = run_cli(
        capsys,
        ["convert_imageset", "--quiet", "--workers", "1", f"{bad['images']}/", bad["list_corrupt"], db],
    )
    assert rc == 0 and "Traceback" not in err
    assert "skipped unreadable image corrupt.jpg (" in err and "list_corrupt.txt:2)" in err
    from pixsent.formats.lmdb_io import LMDBReader

    with LMDBReader(db) as reader:  # the two good images, keys keep Caffe's line index (a gap at 1)
        assert [k.decode() for k in reader.keys()]  # noqa: SIM118 (a list, not a dict) == ["00000000_img0.jpg", "00000002_img1.jpg"]


def test_strict_failure_leaves_no_database(bad, tmp_path, capsys):
    db = tmp_path / "db"
    rc, _, _ = run_cli(
        capsys, ["convert_imageset", "--quiet", "--strict", f"{bad['images']}/", bad["list_corrupt"], db]
    )
    assert rc != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither db nor its hidden build folder


# ------------------------------------------------------------------ interrupted writers


def _interrupt_on_call(monkeypatch, target, name: str, n: int) -> None:
    """Make ``target.name`` raise KeyboardInterrupt on its n-th call (1-based); earlier calls run normally."""
    original = getattr(target, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


def _leftovers(folder: Path) -> list[str]:
    """Hidden temporary siblings (`.name.tmp-...`) anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if ".tmp-" in p.name)


def test_interrupted_convert_imageset_keeps_the_old_database(bad, tmp_path, capsys, monkeypatch):
    import pixsent.data.imageset as imageset

    db = tmp_path / "db"
    first = ["convert_imageset", "--quiet", "--workers", "1", f"{bad['images']}/", bad["list_ok"], db]
    assert run_cli(capsys, first)[0] == 0
    before = {p.name: p.read_bytes() for p in db.iterdir() if p.name == "data.mdb"}
    _interrupt_on_call(monkeypatch, imageset, "_work", 2)
    argv = [
        "convert_imageset",
        "--quiet",
        "--workers",
        "1",
        "--overwrite",
        f"{bad['images']}/",
        bad["list_corrupt"],
    ]
    rc, _, err = run_cli(capsys, [*argv, db])
    assert rc == 130 and "interrupted" in err
    assert {p.name: p.read_bytes() for p in db.iterdir() if p.name == "data.mdb"} == before
    _interrupt_on_call(monkeypatch, imageset, "_work", 2)  # a fresh count
    rc, _, _ = run_cli(capsys, [*argv, tmp_path / "new_db"])
    assert rc == 130 and not (tmp_path / "new_db").exists()
    assert _leftovers(tmp_path) == []


def test_interrupted_compute_image_mean_writes_nothing(bad, tmp_path, capsys, monkeypatch):
    _interrupt_on_call(monkeypatch, os, "fsync", 1)  # while the mean file is being written
    rc, _, _ = run_cli(capsys, ["compute_image_mean", "--quiet", bad["lmdb"], tmp_path / "mean.binaryproto"])
    assert rc == 130
    assert list(tmp_path.iterdir()) == []


def test_interrupted_surgery_leaves_no_partial_caffemodel(bad, tmp_path, capsys, monkeypatch):
    weights = tmp_path / "conv.caffemodel"
    weights.write_bytes(bad["conv_good_w"].read_bytes())
    out = tmp_path / "out"
    _interrupt_on_call(monkeypatch, os, "fsync", 2)  # the prototxt is written, the caffemodel is not
    rc, _, _ = run_cli(
        capsys, ["surgery", "--weights", weights, "--model", bad["conv"], "--out", out, "--size", "10"]
    )
    assert rc == 130
    assert [p.name for p in out.iterdir()] == ["conv_fullconv.prototxt"]
    from pixsent.formats.prototxt import read_net

    assert [la.name for la in read_net(out / "conv_fullconv.prototxt").layer][-2:] == ["fc-conv", "prob"]


def test_interrupted_prototxt_leaves_only_complete_files(tmp_path, capsys, monkeypatch):
    from pixsent.formats.prototxt import read_net, read_solver

    _interrupt_on_call(monkeypatch, os, "fsync", 4)
    rc, _, _ = run_cli(capsys, ["prototxt", "--out", tmp_path / "pt"])
    assert rc == 130
    written = sorted((tmp_path / "pt").rglob("*.prototxt"))
    assert len(written) == 3 and _leftovers(tmp_path) == []
    for path in written:  # each one whole: it parses
        (read_solver if path.name == "solver.prototxt" else read_net)(path)


# ------------------------------------------------------------------ real processes


def _process(argv: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("ENGINE", "CAFFE_BIN")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _python() -> str:
    return str(PYTHON) if PYTHON.exists() else sys.executable


def test_python_m_pixsent_prints_no_traceback(bad, tmp_path):
    done = _process([_python(), "-m", "pixsent", "inspect", bad["syntax"]], tmp_path)
    assert_one_error(done.returncode, done.stderr, "inspect", "syntax.prototxt:4:")
    done = _process([_python(), "-m", "pixsent", "splits", "make", bad["labels_dup"], "--out", "s"], tmp_path)
    assert_one_error(done.returncode, done.stderr, "splits", "labels_dup.txt:4")
    assert not (tmp_path / "s").exists()


def test_tools_caffe_prints_no_traceback(bad, tmp_path):
    model = ["-model", bad["net"], "-weights", bad["shape_w"], "-iterations", "1"]
    done = _process([REPO / "tools" / "caffe", "test", *model], tmp_path)
    assert_one_error(done.returncode, done.stderr, "caffe", "shape.caffemodel", "'ip'", "(3, 5)", "(2, 192)")
    done = _process(
        [REPO / "tools" / "caffe", "time", "-model", bad["unknown"], "-iterations", "1"], tmp_path
    )
    assert_one_error(done.returncode, done.stderr, "caffe", "unknown.prototxt", "'weird'", "FancyLayer")
