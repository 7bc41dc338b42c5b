"""A capped fold of INIT=squeezenet-dc on real Twitter images, then its sentiment maps and layer probes.

The fold (24 real five-agree images of fold 1: 16 to train, 8 to test; batch 8, 2 iterations) goes through
LMDB building, training from the decoded Deep Compression SqueezeNet, centre and 10-crop evaluation. Then
`pixsent maps --run` maps 4 of its test images with the score map before global pooling (13 x 13 cells at
227 x 227 once the padding ring is left out), and `pixsent layers --run` probes four of the fine-tuned net's
layers (Table 3's name conv_final finding conv_final_twitter; a fire concat, whose name holds a slash) on the
same split, reading the mean from the run's train_val. The default layer lists are tested on the deploy nets
in test_analysis_layersets.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import small_real_split

from pixsent.cli import main
from pixsent.workflow.runs import RunPaths

pytest.importorskip("pixsent.engine.net", reason="engine Net not available")
pytestmark = pytest.mark.slow  # about a minute on 2 cores

N_TRAIN, N_TEST = 16, 8
PROBED = ["pool1", "fire9/concat", "conv_final", "pool_final"]


@pytest.fixture(scope="module")
def fold(tmp_path_factory, shared_data, squeezenet_dir) -> dict[str, Path]:
    """The capped fold's run folder, trained once for the module."""
    root = tmp_path_factory.mktemp("squeezenet_e2e")
    small_real_split(shared_data, root, N_TRAIN, N_TEST)
    images = shared_data / "twitter" / "images"
    argv = [
        "fold", "1", "--init", "squeezenet-dc", "--data", str(shared_data / "twitter"),
        "--splits", str(root / "splits"), "--mirror", str(squeezenet_dir), "--models", str(root / "models"),
        "--runs", str(root / "runs"), "--lmdb", str(root / "lmdb"), "--batch", "8", "--max-iter", "2",
        "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    run = RunPaths(root / "runs", "five", "fc8_twitter", "squeezenet-dc", 1)
    return {"root": root, "run": run.dir, "images": images, "splits": root / "splits", "paths": run}


def test_capped_fold_trains_and_evaluates(fold):
    run = fold["paths"]
    metrics = json.loads(run.metrics.read_text())
    assert metrics["capped"] is True and metrics["max_iter"] == 2 and metrics["n_images"] == N_TEST
    assert 0.0 <= metrics["accuracy_center"] <= 1.0 and 0.0 <= metrics["accuracy_oversample"] <= 1.0
    assert (run.snapshots / "fc8_twitter_iter_2.caffemodel").is_file()


def test_maps_of_test_images_from_the_run_folder(fold, capsys):
    out = fold["root"] / "maps"
    argv = ["maps", "--run", str(fold["run"]), "--test-images", "4", "--image-dir", str(fold["images"])]
    assert main([*argv, "--out", str(out), "--grid", str(out / "grid.png")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "P(positive)=" in line]
    assert len(lines) == 4
    for line in lines:
        stem, p, _ = line.split("\t")
        m = np.load(out / f"{stem}_map.npy")
        assert m.shape == (2, 13, 13)  # the 15 x 15 score map at 227 without its padding ring
        np.testing.assert_allclose(m.sum(0), 1.0, atol=1e-5)
        over = cv2.imread(str(out / f"{stem}_overlay.png"))
        assert over.shape[:2] == cv2.imread(str(fold["images"] / f"{stem}.jpg")).shape[:2]
        assert 0.0 <= float(p.split("=")[1]) <= 1.0
    assert (out / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_layer_probes_of_the_fine_tuned_net(fold, tmp_path):
    argv = [
        "layers", "--run", str(fold["root"] / "runs" / "five" / "fc8_twitter-squeezenet-dc"),
        "--splits", str(fold["splits"]), "--images", str(fold["images"]), "--cache", str(tmp_path / "cache"),
        "--json", str(tmp_path / "t3.json"), "--md", str(tmp_path / "t3.md"), "--drop-cache",
        "--layers", ",".join(PROBED),
    ]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads((tmp_path / "t3.json").read_text())
    assert doc["layer_set"] == "squeezenet" and doc["mean"] == "104,117,123" and doc["fine_tuned"] is True
    assert doc["layers"] == PROBED and doc["blobs"]["conv_final"] == "conv_final_twitter"
    assert {(r["layer"], r["classifier"]) for r in doc["results"]} == {
        (layer, c) for layer in doc["layers"] for c in ("svm", "softmax")
    }
    assert doc["command"].startswith("pixsent layers --run") and doc["commit"]
    assert "| fire9/concat |" in (tmp_path / "t3.md").read_text()
    assert not any((tmp_path / "cache").iterdir())  # --drop-cache: the fold's features are gone
