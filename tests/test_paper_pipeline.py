"""The paper pipeline end to end on generated data with the engine: train, cache, resume, evaluate, data
parallel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pixsent.engine.net", reason="engine Net not available yet")

from pixsent.recipes.demo import DemoConfig, fold_config, generate_dataset, run_demo  # noqa: E402
from pixsent.workflow import evaluate as ev  # noqa: E402
from pixsent.workflow.pipeline import run_fold  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY = dict(n_images=40, epochs=4, batch=8, widths=(8, 8, 8, 8, 8, 16, 16), progress=False)


def test_oversampled_evaluation_equals_classifier(golden):
    """Our 10-crop evaluation == pixsent caffe.Classifier.predict(oversample=True) == golden pycaffe,
    1e-5 abs."""
    import pixsent.caffe as caffe

    over = golden / "oversample"
    ref = np.load(over / "predictions.npz")
    deploy, weights = over / "deploy_batch10.prototxt", golden / "mini_caffenet/weights.caffemodel"
    cfg = ev.EvalConfig(image_dims=(256, 256), mean=ref["mean_bgr"])
    net = ev.open_net(deploy, weights)
    clf = caffe.Classifier(
        str(deploy),
        str(weights),
        image_dims=(256, 256),
        mean=ref["mean_bgr"],
        raw_scale=255,
        channel_swap=(2, 1, 0),
    )
    paths = [golden / "images" / p for p in (over / "images.txt").read_text().split()]
    crops = ev.predict_arrays(net, [ev.load_resized(p, (256, 256)) for p in paths], cfg)
    for k, p in enumerate(paths):
        img = caffe.io.load_image(str(p))
        np.testing.assert_allclose(crops[k].mean(0), clf.predict([img], oversample=True)[0], atol=1e-5)
        np.testing.assert_allclose(
            crops[k, ev.CENTRE_CROP], clf.predict([img], oversample=False)[0], atol=1e-5
        )
        np.testing.assert_allclose(crops[k], ref[f"{p.stem}/oversample_crops"], atol=1e-5)


class _Stop(Exception):
    pass


def test_fold_trains_resumes_after_interrupt_then_reuses_everything(tmp_path):
    dcfg = DemoConfig(out=tmp_path, **TINY)
    root = generate_dataset(dcfg)
    seen = []

    def interrupt(line: str) -> None:
        """Stop training at the first log line after a snapshot was written (the line is logged before)."""
        if seen and "Iteration" in line:
            raise _Stop
        if "Snapshotting solver state" in line:
            seen.append(line)

    cfg = fold_config(dcfg, root, fold=2, on_log_line=interrupt)
    with pytest.raises(_Stop):
        run_fold(cfg)
    run = cfg.run_paths()
    first = run.newest_solverstate()
    assert first is not None and not run.metrics.exists()

    cfg.on_log_line = None
    metrics = run_fold(cfg)
    log = run.log.read_text()
    assert f"-snapshot {first.relative_to(run.dir)}" in log  # continued from the snapshot, not from scratch
    assert 0.0 <= metrics["accuracy_oversample"] <= 1.0 and metrics["n_images"] == 8
    assert run.predictions_csv.exists() and run.predictions_npz.exists()

    stamps = {p.name: json.loads(p.read_text())["finished"] for p in run.stamps.glob("*.json")}
    mtimes = {p.name: p.stat().st_mtime_ns for p in run.snapshots.iterdir()}
    run_fold(cfg)  # everything cached: no training, no evaluation
    assert {p.name: json.loads(p.read_text())["finished"] for p in run.stamps.glob("*.json")} == stamps
    assert {p.name: p.stat().st_mtime_ns for p in run.snapshots.iterdir()} == mtimes
    assert run.log.read_text() == log


def test_changed_solver_retrains_and_keeps_old_snapshots_aside(tmp_path):
    dcfg = DemoConfig(out=tmp_path, **TINY)
    root = generate_dataset(dcfg)
    run = fold_config(dcfg, root, fold=1).run_paths()
    run_fold(fold_config(dcfg, root, fold=1))
    first = sorted(p.name for p in run.snapshots.iterdir())
    changed = DemoConfig(out=tmp_path, **(TINY | {"base_lr": 0.002}))  # a new solver.prototxt
    run_fold(fold_config(changed, root, fold=1))
    stale = list(run.dir.glob("snapshots.stale-*"))
    assert len(stale) == 1 and sorted(p.name for p in stale[0].iterdir()) == first
    assert "base_lr: 0.002" in run.solver.read_text() and run.metrics.exists()
    assert sorted(p.name for p in run.snapshots.iterdir()) == first  # trained again to the same iterations


@pytest.mark.slow
def test_demo_end_to_end_reduced(tmp_path):
    out = run_demo(DemoConfig(out=tmp_path, run_folds=1, **TINY))
    assert Path(out["table"]).read_text().startswith("**DEMONSTRATION")
    assert Path(out["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "runs/demo/fc8_twitter-scratch/fold1/metrics.json").exists()


TINY_NET = """name: "tiny"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ scale: 0.0078125 mean_file: "{mean}" }}
  data_param {{ source: "{lmdb}" batch_size: 8 backend: LMDB }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 3 stride: 2 weight_filler {{ type: "gaussian" std: 0.1
  }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
  inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""

SOLVER = """net: "net.prototxt" base_lr: 0.05 momentum: 0.9 weight_decay: 0.0005 lr_policy: "fixed"
max_iter: 4 display: 1 snapshot_prefix: "snap" random_seed: 1 solver_mode: CPU type: "SGD"
"""


def test_two_process_gloo_equals_one_process(golden, tmp_path):
    """2 gloo processes with half the batch each reach the weights of 1 process with the whole batch
    (1e-5 rel)."""
    from pixsent.engine.net import Net
    from pixsent.formats.caffemodel import read_weights

    dirs = {}
    for name in ("one", "two"):
        d = tmp_path / name
        d.mkdir()
        (d / "net.prototxt").write_text(
            TINY_NET.format(mean=golden / "mean.binaryproto", lmdb=golden / "lmdb/train_raw")
        )
        (d / "solver.prototxt").write_text(SOLVER)
        dirs[name] = d
    init = tmp_path / "init.caffemodel"
    Net(str(dirs["one"] / "net.prototxt"), 0).save(str(init))
    env = {"PYTHONPATH": str(REPO)}
    import os

    env = dict(os.environ, **env)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pixsent",
            "caffe",
            "train",
            "-solver",
            "solver.prototxt",
            "-weights",
            str(init),
        ],
        cwd=dirs["one"],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pixsent.workflow.parallel",
            "--solver",
            "solver.prototxt",
            "--devices",
            "cpu:2",
            "--weights",
            str(init),
        ],
        cwd=dirs["two"],
        env=env,
        check=True,
        capture_output=True,
    )
    one = read_weights(dirs["one"] / "snap_iter_4.caffemodel")
    two = read_weights(dirs["two"] / "snap_iter_4.caffemodel")
    init_w = read_weights(init)
    for layer in one:
        for a, b, w0 in zip(one[layer], two[layer], init_w[layer]):
            assert np.abs(a - w0).max() > 0  # training moved the weights
            assert np.abs(a - b).max() / np.abs(a).max() < 1e-5, layer
