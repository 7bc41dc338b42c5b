"""The PAPER recipe end to end with real CaffeNet shapes: 227 crops of 256 LMDBs, the ILSVRC mean binaryproto,
a (fake) pre-trained 1000-way CaffeNet, the generated solver capped by --max-iter, caching and resuming.

The Twitter images and the BVLC weights cannot be downloaded here, so the images are small random JPEGs
named like the paper's (ids from the five-agree split files) and the "pre-trained" CaffeNet is the reference
net with random fillers and recognisable biases, saved as a caffemodel.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pixsent.engine.net", reason="engine Net not available yet")

from pixsent.caffe.proto import caffe_pb2  # noqa: E402
from pixsent.formats.blob import blob_to_array  # noqa: E402
from pixsent.formats.caffemodel import read_caffemodel  # noqa: E402
from pixsent.formats.prototxt import read_net, read_solver  # noqa: E402
from pixsent.workflow.runs import RunPaths  # noqa: E402

pytestmark = pytest.mark.slow  # about 40 s on 2 cores: real CaffeNet weights are ~240 MB

N_TRAIN, N_TEST = 8, 4
TRUNK = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6")


def _blobs(path: Path) -> dict[str, list[np.ndarray]]:
    """{layer: [weights, bias]} of a caffemodel."""
    return {layer.name: [blob_to_array(b) for b in layer.blobs] for layer in read_caffemodel(path).layer}


def fake_caffenet(path: Path, num_outputs: int, seed: int) -> dict[str, list[np.ndarray]]:
    """CaffeNet from the generated reference deploy net with random fillers; every bias set to a value no
    filler gives (0.1 + 0.001 x layer index), so copied weights are recognisable after training."""
    from pixsent.engine.net import Net
    from pixsent.zoo.caffenet import reference_deploy

    net = Net(reference_deploy(num_outputs), caffe_pb2.TEST, seed=seed)
    for k, name in enumerate(net.layer_names):
        if name in net.params:
            net.params[name][1].data[...] = 0.1 + 0.001 * k
    net.save(path)
    return _blobs(path)


def _drop_weights(folder: Path) -> None:
    """Delete the caffemodels/solverstates (160-300 MB each) so kept pytest folders do not fill the disk."""
    for pattern in ("*.caffemodel", "*.solverstate"):
        for path in folder.rglob(pattern):
            path.unlink()


@pytest.fixture(autouse=True)
def _free_disk(tmp_path) -> Iterator[None]:
    yield
    _drop_weights(tmp_path)


@pytest.fixture(scope="module")
def twitter(tmp_path_factory, shared_data) -> Iterator[dict[str, Path]]:
    """Fold 1 of a tiny five-agree set (real image ids, random JPEGs) and a fake CaffeNet in models/."""
    import cv2

    root = tmp_path_factory.mktemp("paper_e2e")
    rng = np.random.RandomState(2017)
    images = root / "twitter" / "images"
    images.mkdir(parents=True)
    fold = root / "splits" / "five_agrees" / "test1"
    fold.mkdir(parents=True)
    src = shared_data / "splits" / "five_agrees" / "test1"
    for name, count in (("train", N_TRAIN), ("test", N_TEST)):
        lines = (src / f"{name}.txt").read_text().splitlines()[:count]
        (fold / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
        for line in lines:
            h, w = rng.randint(40, 90, size=2)
            img = rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8)
            cv2.imwrite(str(images / line.split()[0]), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    models = root / "models"
    models.mkdir()
    blobs = fake_caffenet(models / "bvlc_reference_caffenet.caffemodel", 1000, seed=7)
    yield {
        "root": root,
        "models": models,
        "splits": root / "splits",
        "data": root / "twitter",
        "blobs": blobs,
    }
    _drop_weights(root)


def _argv(twitter: dict, runs: Path, *extra: str) -> list[str]:
    t = twitter
    return [
        "fold", "1", "--variant", "fc7-2", "--data", str(t["data"]), "--splits", str(t["splits"]),
        "--runs", str(runs), "--lmdb", str(t["root"] / "lmdb"), "--models", str(t["models"]),
        "--quiet", *extra,
    ]  # fmt: skip


def _state(run: RunPaths) -> dict:
    """What a re-run would change: stamp times, snapshot files, the log."""
    return {
        "stamps": {p.name: json.loads(p.read_text())["finished"] for p in run.stamps.glob("*.json")},
        "snapshots": {p.name: p.stat().st_mtime_ns for p in run.snapshots.iterdir()},
        "log": run.log.read_text(),
        "metrics": run.metrics.stat().st_mtime_ns,
    }


class _Stop(Exception):
    pass


def test_paper_fc7_2_capped_then_cached_then_trains_on(twitter, tmp_path, monkeypatch):
    from pixsent.cli import main
    from pixsent.engine.logparse import parse_log
    from pixsent.workflow.pipeline import FoldConfig, run_fold

    monkeypatch.chdir(tmp_path)  # data/ilsvrc_2012_mean.binaryproto is made here from the shared .npy
    runs = tmp_path / "runs"
    assert main(_argv(twitter, runs, "--batch", "4", "--max-iter", "2")) == 0
    run = RunPaths(runs.resolve(), "five", "fc7-2", "caffenet", 1)

    # the run folder holds everything the paper's workflow produces, in Caffe's formats
    for path in (run.train_val, run.deploy, run.solver, run.log, run.predictions_csv, run.predictions_npz):
        assert path.is_file(), path
    solver = read_solver(run.solver)
    assert solver.max_iter == 2 and "CAPPED by --max-iter 2" in run.solver.read_text()
    # 8 images / batch 4 = 2 iterations an epoch: 65 epochs -> 130; 6 epochs -> stepsize 12
    assert solver.stepsize == 12 and solver.test_interval == 2 and solver.base_lr == pytest.approx(0.001)
    net = read_net(run.train_val)
    data = [layer for layer in net.layer if layer.type == "Data"]
    assert [d.data_param.batch_size for d in data] == [4, 4]
    assert {d.transform_param.crop_size for d in data} == {227}
    mean_file = Path(data[0].transform_param.mean_file)
    assert mean_file == (tmp_path / "data/ilsvrc_2012_mean.binaryproto").resolve() and mean_file.is_file()
    head = next(layer for layer in net.layer if layer.name == "fc7_twitter")
    assert [p.lr_mult for p in head.param] == [10, 20]
    assert head.inner_product_param.weight_filler.type == "gaussian"
    assert head.inner_product_param.weight_filler.std == pytest.approx(0.01)
    assert head.inner_product_param.bias_filler.value == 0.0
    assert "fc7" not in [layer.name for layer in net.layer]

    log = parse_log(run.log)
    assert list(log.iters) == [0, 1, 2] and np.isfinite(log.loss).all()
    assert list(log.test_iters) == [0, 2] and set(log.test_outputs) == {"accuracy", "loss"}
    assert sorted(p.name for p in run.snapshots.iterdir()) == [
        "fc7-2_iter_2.caffemodel",
        "fc7-2_iter_2.solverstate",
        "fc7-2_iter_2.solverstate.pixsent",  # the exact-resume sidecar
    ]

    metrics = json.loads(run.metrics.read_text())
    assert metrics["capped"] is True and metrics["max_iter"] == 2 and metrics["full_max_iter"] == 130
    assert metrics["n_images"] == N_TEST and 0.0 <= metrics["accuracy_oversample"] <= 1.0
    stamps = {s: json.loads((run.stamps / f"{s}.json").read_text())["info"] for s in ("prototxt", "train")}
    assert stamps["train"] == {"max_iter": 2, "full_max_iter": 130, "capped": True}
    with np.load(run.predictions_npz) as z:
        assert z["crops"].shape == (N_TEST, 10, 2)
        np.testing.assert_allclose(z["oversample"], z["crops"].mean(1), rtol=1e-6)

    # conv1..fc6 start from the pre-trained caffemodel: two SGD steps at lr 0.001 move them by < 1 % of
    # their range (relative error = max|a-b| / max|b|), while fresh fillers would differ by ~100 %;
    # the biases keep the fake's values, which no filler gives
    trained = _blobs(run.snapshot_model(2))
    for name in TRUNK:
        w, b = trained[name]
        w0, b0 = twitter["blobs"][name]
        assert np.abs(w - w0).max() / np.abs(w0).max() < 1e-2, name
        assert np.abs(b - b0).max() < 1e-3, name
    w, b = trained["fc7_twitter"]  # the new layer: gaussian 0.01 from its filler, 2 x 4096
    assert w.shape == (2, 4096) and 0.009 < w.std() < 0.011 and np.abs(b).max() < 0.05

    # the same call again: every step cached, nothing re-run or rewritten
    before = _state(run)
    assert main(_argv(twitter, runs, "--batch", "4", "--max-iter", "2")) == 0
    assert _state(run) == before

    # without the cap: the capped result is not reused; training resumes from the iteration-2 snapshot
    seen: list[str] = []

    def stop_after_resumed_iteration(line: str) -> None:
        seen.append(line)
        if "Iteration 3 (" in line:
            raise _Stop

    cfg = FoldConfig(
        variant="fc7-2",
        fold=1,
        runs=runs,
        images=twitter["data"],
        splits=twitter["splits"],
        lmdb_root=twitter["root"] / "lmdb",
        models=twitter["models"],
        batch=4,
        echo=False,
        progress=False,
        on_log_line=stop_after_resumed_iteration,
    )
    with pytest.raises(_Stop):
        run_fold(cfg)
    assert read_solver(run.solver).max_iter == 130 and "CAPPED" not in run.solver.read_text()
    assert "-snapshot snapshots/fc7-2_iter_2.solverstate" in run.log.read_text()
    assert not any("Iteration 0 (" in line or "Iteration 1 (" in line for line in seen)  # no restart
    assert not run.metrics.exists() and not (run.stamps / "evaluate.json").exists()  # capped result dropped
    info = json.loads((run.stamps / "prototxt.json").read_text())["info"]
    assert info == {"max_iter": 130, "full_max_iter": 130, "capped": False}


def test_fc9_twitter_from_mvso_en_keeps_its_4342_way_fc8(twitter, tmp_path, monkeypatch):
    """fc9_twitter initialised from MVSO-EN (models/mvso_en.caffemodel): the generated net keeps the init
    model's 4342-way fc8, which the caffemodel fills exactly, and adds fc9_twitter from its filler."""
    from pixsent.engine.net import Net
    from pixsent.workflow.pipeline import FoldConfig, get_recipe, step_lmdb, step_prototxt, step_splits

    monkeypatch.chdir(tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    blobs = fake_caffenet(models / "mvso_en.caffemodel", 4342, seed=11)
    cfg = FoldConfig(
        variant="fc9_twitter",
        init="mvso-en",
        runs=tmp_path / "runs",
        images=twitter["data"],
        splits=twitter["splits"],
        lmdb_root=twitter["root"] / "lmdb",
        models=models,
        batch=2,
        iter_size=2,
        progress=False,
        echo=False,
    )
    run = cfg.run_paths()
    for step in (step_splits, step_lmdb, step_prototxt):
        step(cfg, run)
    solver = read_solver(run.solver)
    assert solver.iter_size == 2 and solver.max_iter == 130  # 8 images / (2 x 2) = 2 iterations an epoch
    layers = {layer.name: layer for layer in read_net(run.train_val).layer}
    assert layers["fc8"].inner_product_param.num_output == 4342
    assert [p.lr_mult for p in layers["fc8"].param] == [1, 2]  # an existing layer: fine-tuned at 1x / 2x
    assert [p.lr_mult for p in layers["fc9_twitter"].param] == [10, 20]
    assert {"relu8", "drop8"} <= set(layers)  # the documented default: fc8 becomes a hidden layer

    net = Net(run.train_val, caffe_pb2.TEST, weights=get_recipe("paper").init_weights(cfg), seed=3)
    try:
        for name in (*TRUNK, "fc7", "fc8"):
            for mine, theirs in zip(net.params[name], blobs[name]):
                np.testing.assert_array_equal(mine.data, theirs)  # copied bit for bit
        w, b = (p.data for p in net.params["fc9_twitter"])
        assert w.shape == (2, 4342) and 0.009 < w.std() < 0.011 and not b.any()
        assert np.isfinite(net.forward())
        assert net.blobs["data"].data.shape == (4, 3, 227, 227)  # the whole 4-image test fold in one batch
    finally:
        net.close()
