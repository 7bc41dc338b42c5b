"""Sentiment map overlays and the grid figure; with the engine, maps of the golden mini CaffeNet."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pixsent.analysis import maps


def _prob(h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=(h, w))
    return np.stack([1 - p, p]).astype(np.float32)  # class 0 negative, class 1 positive


def test_overlay_colour_rule_and_size():
    rng = np.random.default_rng(1)
    image = rng.uniform(size=(37, 53, 3))  # RGB in [0, 1], not square, not a multiple of 8
    prob = _prob()
    out = maps.overlay(image, prob)
    assert out.shape == (37, 53, 3) and out.dtype == np.uint8
    for y, x in [(0, 0), (20, 30), (36, 52), (5, 44)]:
        # nearest neighbour: OpenCV maps destination pixel y to source row floor(y * 8 / 37)
        i, j = int(y * 8 / 37), int(x * 8 / 53)
        expected = 0.5 * image[y, x] * 255 + 0.5 * np.array([prob[0, i, j] * 255, prob[1, i, j] * 255, 0.0])
        np.testing.assert_allclose(out[y, x], expected, atol=0.5 + 1e-6)  # rounding to uint8


def test_overlay_pure_positive_is_green():
    image = np.zeros((16, 16, 3))
    prob = np.zeros((2, 2, 2), np.float32)
    prob[1] = 1.0
    out = maps.overlay(image, prob)
    assert (out[..., 0] == 0).all() and (out[..., 1] == 128).all() and (out[..., 2] == 0).all()


def test_global_prediction_is_map_mean():
    prob = _prob()
    assert maps.global_positive(prob) == pytest.approx(float(prob[1].mean()))


def test_grid_figure_is_png(tmp_path):
    items = []
    for k in range(3):
        rng = np.random.default_rng(k)
        img = (rng.uniform(size=(30 + k, 40, 3)) * 255).astype(np.uint8)
        prob = _prob(seed=k)
        items.append(maps.MapItem(f"img{k}", img, maps.overlay(img, prob), maps.global_positive(prob)))
    path = tmp_path / "grid.png"
    maps.grid_figure(items, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = cv2.imread(str(path))
    assert fig is not None and fig.shape[0] > 100 and fig.shape[1] > 200


# ------------------------------------------------------------------------------- needs the engine


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("pixsent.engine.net", reason="engine Net not available")


def test_mapnet_on_golden_input(engine, golden, tmp_path):
    """Surgery on the fly from the fc weights, then the map of input_451.npy vs Caffe's (1e-5 abs)."""
    mini = golden / "mini_caffenet"
    cfg = maps.MapConfig(size=451, work_dir=tmp_path)
    net = maps.MapNet.open(mini / "weights.caffemodel", mini / "deploy.prototxt", cfg)
    prob = net.forward(np.load(mini / "input_451.npy")[0])
    np.testing.assert_allclose(prob[None], np.load(mini / "fullconv_prob.npy"), atol=1e-5)


def test_run_maps_writes_npy_overlay_and_grid(engine, golden, tmp_path):
    mini = golden / "mini_caffenet"
    images = sorted((golden / "images" / "test").glob("*.jpg"))[:3]
    out = tmp_path / "maps"
    items = maps.run_maps(
        images, mini / "fullconv.caffemodel", None, out, maps.MapConfig(size=451), grid=out / "grid.png"
    )
    assert len(items) == 3
    for path in images:
        m = np.load(out / f"{path.stem}_map.npy")
        assert m.shape == (3, 8, 8)
        np.testing.assert_allclose(m.sum(0), 1.0, atol=1e-5)
        over = cv2.imread(str(out / f"{path.stem}_overlay.png"))
        assert over.shape[:2] == cv2.imread(str(path)).shape[:2]
    assert (out / "grid.png").read_bytes()[:4] == b"\x89PNG"
