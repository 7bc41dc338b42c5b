"""Layer probes: exactness of the dual projection, memmapped feature caches, and the whole `layers` pipeline
on a generated two-class image set whose answer is known.

The known answer: class 1 images carry sinusoidal stripes of random orientation and phase over the same
colour noise as class 0. A tiny fixed random net (conv1: 8 random 5x5 filters, stride 2, ReLU; "pool": the
global average of conv1) sees the stripes' energy in every pooled unit regardless of phase, while conv1's
raw responses move with the phase, so a linear probe separates "pool" near perfectly and conv1 worse. The
test fails if the pipeline mixes up rows and labels (shuffled-label control must fall to chance), if the
pooled layer does not reach 0.9 mean accuracy, or if it is not at least 0.05 better than conv1.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pixsent.analysis import features, probes
from pixsent.analysis.phases import PhaseLog
from pixsent.errors import DataError

N_IMAGES, N_FOLDS = 60, 3


def _dataset(root, shuffle_labels: bool = False):
    rng = np.random.default_rng(1604)
    (root / "img").mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(N_IMAGES):
        c = i % 2
        h, w = rng.integers(40, 60, 2)
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.ones((h, w, 3)) * rng.normal(120, 25, 3) + rng.normal(0, 20, (h, w, 3))
        if c:
            th, ph = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
            img += 50 * np.sin((np.cos(th) * xx + np.sin(th) * yy) * 1.3 + ph)[..., None]
        name = f"i{i:03d}.png"
        cv2.imwrite(str(root / "img" / name), np.clip(img, 0, 255).astype(np.uint8))
        items.append((name, c))
    labels = [c for _, c in items]
    if shuffle_labels:
        labels = list(np.random.default_rng(7).permutation(labels))
    splits = root / "splits"
    for k in range(1, N_FOLDS + 1):
        d = splits / f"test{k}"
        d.mkdir(parents=True)
        test = [(n, lab) for i, ((n, _), lab) in enumerate(zip(items, labels)) if i % N_FOLDS == k - 1]
        train = [(n, lab) for i, ((n, _), lab) in enumerate(zip(items, labels)) if i % N_FOLDS != k - 1]
        (d / "test.txt").write_text("".join(f"{n} {lab}\n" for n, lab in test))
        (d / "train.txt").write_text("".join(f"{n} {lab}\n" for n, lab in train))
    return splits


def _tiny_forward_factory(model, weights, layers):
    import torch

    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 3, 5, 5, generator=g) * 0.05

    def forward(x):
        c1 = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x), w, stride=2))
        return {"conv1": c1.numpy(), "pool": torch.nn.functional.adaptive_avg_pool2d(c1, 1).numpy()}

    return forward


def _spec(root, splits):
    model = root / "deploy.prototxt"
    model.write_text(
        'layer { name: "data" type: "Input" top: "data"\n'
        "  input_param { shape { dim: 1 dim: 3 dim: 40 dim: 40 } } }\n"
    )
    weights = root / "w.caffemodel"
    weights.write_bytes(b"")
    return probes.LayerAnalysis(
        splits=splits,
        images=root / "img",
        models={k: (model, weights) for k in range(1, N_FOLDS + 1)},
        layers=("conv1", "pool"),
        cache=root / "cache",
        mean=np.array([120.0, 120.0, 120.0]),
        resize=48,
        progress=False,
    )


def test_layers_pipeline_recovers_known_signal(tmp_path):
    spec = _spec(tmp_path, _dataset(tmp_path))
    spec.log = PhaseLog()
    table = probes.layer_analysis(spec, _tiny_forward_factory)
    conv1 = [table.summary("conv1", c)[0] for c in ("svm", "softmax")]
    pool = [table.summary("pool", c)[0] for c in ("svm", "softmax")]
    assert min(pool) >= 0.9, table.to_markdown()
    assert np.mean(pool) >= np.mean(conv1) + 0.05, table.to_markdown()
    assert table.summary("pool", "svm")[2] == N_FOLDS
    assert {r.form for r in table.results if r.layer == "conv1"} == {"dual"}  # 2592 features > 40 rows
    phases = [(e["phase"], e.get("layer"), e.get("classifier")) for e in spec.log.events]
    assert phases[0] == ("extract", None, None) and phases.count(("fit", "pool", "svm")) == N_FOLDS
    assert phases.count(("standardise", "conv1", None)) == N_FOLDS
    # deterministic for a fixed seed: a second run (features now from the cache) gives identical results
    again = probes.layer_analysis(spec, lambda *a: pytest.fail("cache was not reused"))
    assert [(r.layer, r.fold, r.classifier, r.accuracy, r.c) for r in again.results] == [
        (r.layer, r.fold, r.classifier, r.accuracy, r.c) for r in table.results
    ]
    assert "| pool |" in table.to_markdown()


def test_shuffled_labels_fall_to_chance(tmp_path):
    spec = _spec(tmp_path, _dataset(tmp_path, shuffle_labels=True))
    spec.layers = ("pool",)
    table = probes.layer_analysis(spec, _tiny_forward_factory)
    assert max(table.summary("pool", c)[0] for c in ("svm", "softmax")) <= 0.8, table.to_markdown()


@pytest.mark.parametrize("classifier", ["svm", "softmax"])
def test_dual_projection_is_exact(classifier):
    """d > n: the projected problem gives the same decision values as the standardised primal (1e-6 rel)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(70, 400)).astype(np.float32)
    y = (x[:, :3].sum(1) + rng.normal(0, 1, 70) > 0).astype(int)
    x[:, 5] = 2.0  # a constant feature (dead unit)
    tr, te = x[:50], x[50:]
    ztr, zte, form = probes.standardised_views(tr, te, chunk=128)
    assert form == "dual" and ztr.shape[0] == 50 and ztr.shape[1] <= 50
    mean, std = probes.column_stats(tr)
    ptr, pte = (tr - mean) / std, (te - mean) / std
    cfg = probes.ProbeConfig(max_iter=100000)
    a = probes.CLASSIFIERS[classifier](0.1, cfg).set_params(tol=1e-10).fit(ptr, y[:50])
    b = probes.CLASSIFIERS[classifier](0.1, cfg).set_params(tol=1e-10).fit(ztr, y[:50])
    da, db = a.decision_function(pte), b.decision_function(zte)
    assert np.abs(da - db).max() <= 1e-6 * np.abs(da).max()


def test_feature_cache_memmap_and_atomic(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
        paths.append(p)
    cfg = features.CropConfig(resize=32, crop=28, mean=np.zeros((3, 32, 32), np.float32))
    seen = []

    def forward(x):
        seen.append(len(x))
        return {"a": x * 2, "b": x.mean(axis=(2, 3))}

    cache = features.extract(forward, paths, ["a", "b"], tmp_path / "c", cfg, batch=2, progress=False)
    assert seen == [2, 2, 1] and cache.shapes == {"a": (3, 28, 28), "b": (3,)}
    arr = cache["a"]
    assert isinstance(arr, np.memmap) and arr.shape == (5, 3 * 28 * 28) and arr.dtype == np.float32
    img = cv2.resize(cv2.imread(str(paths[3])), (32, 32), interpolation=cv2.INTER_LINEAR)[2:30, 2:30]
    np.testing.assert_array_equal(arr[3], (img.transpose(2, 0, 1).astype(np.float32) * 2).ravel())
    assert not list((tmp_path / "c").glob(".*tmp"))
    assert features.load_cache(tmp_path / "c", ["a", "b"], 5) is not None
    assert features.load_cache(tmp_path / "c", ["a", "zzz"], 5) is None


def test_rows_reads_subsets_without_copy():
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    r = probes.Rows(x, np.array([7, 2, 5]))
    assert r.shape == (3, 4)
    np.testing.assert_array_equal(r[0:2], x[[7, 2]])
    np.testing.assert_array_equal(r[:, 1:3], x[[7, 2, 5], 1:3])


def test_column_stats_and_primal_standardisation():
    """Column-block statistics equal numpy's over the whole matrix; d <= n gives the standardised matrix."""
    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 2.0, size=(40, 30))
    x[:, 4] = 7.0
    mean, std = probes.column_stats(probes.Rows(x, np.arange(25)), chunk=7)
    np.testing.assert_allclose(mean, x[:25].mean(0), rtol=1e-12)
    ref = x[:25].std(0)
    assert std[4] == np.inf
    np.testing.assert_allclose(np.delete(std, 4), np.delete(ref, 4), rtol=1e-12)
    ztr, zte, form = probes.standardised_views(x[:35, :20], x[35:, :20], chunk=6)
    m, s = x[:35, :20].mean(0), x[:35, :20].std(0)
    s[4] = np.inf
    assert form == "primal"
    np.testing.assert_allclose(ztr, (x[:35, :20] - m) / s, atol=1e-12)
    np.testing.assert_allclose(zte, (x[35:, :20] - m) / s, atol=1e-12)


def test_npy_row_writer_counts_rows(tmp_path):
    w = features.NpyRowWriter(tmp_path / "a.npy", 3, 2)
    w.write(np.arange(4).reshape(2, 2))
    w.write(np.array([[7, 8]]))
    w.close()
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy", mmap_mode="r"), [[0, 1], [2, 3], [7, 8]])
    short = features.NpyRowWriter(tmp_path / "b.npy", 3, 2)
    short.write(np.zeros((2, 2)))
    with pytest.raises(DataError, match="2 rows written, 3 expected"):
        short.close()


def test_feature_cache_refuses_a_disk_too_small_before_writing(tmp_path, monkeypatch):
    """The cache's size is known after the first batch; a disk that cannot hold it stops the run there."""
    import shutil

    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), np.full((30, 40, 3), 9 * i, np.uint8))
        paths.append(p)
    cfg = features.CropConfig(resize=32, crop=28, mean=np.zeros((3, 32, 32), np.float32))
    calls = []

    def forward(x):
        calls.append(len(x))
        return {"a": x, "b": x[:, :1]}

    need = 4 * 3 * (3 * 28 * 28 + 28 * 28)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=need - 1))
    with pytest.raises(DataError, match=r"c: the features need 0\.0 GiB and the disk has 0\.0 GiB free"):
        features.extract(forward, paths, ["a", "b"], tmp_path / "c", cfg, batch=2, progress=False)
    assert calls == [2] and not list((tmp_path / "c").iterdir())
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=need))
    cache = features.extract(forward, paths, ["a", "b"], tmp_path / "c", cfg, batch=2, progress=False)
    assert cache["b"].shape == (3, 28 * 28)


def test_npy_row_writer_names_its_file_when_the_disk_is_full(tmp_path):
    import errno

    class Full:
        def write(self, _b):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    w = features.NpyRowWriter(tmp_path / "a.npy", 2, 2)
    w.file.close()
    w.file = Full()
    with pytest.raises(OSError, match="No space left on device") as info:
        w.write(np.zeros((1, 2)))
    assert info.value.filename == str(tmp_path / "a.npy") and info.value.errno == errno.ENOSPC


def test_table3_names_resolve_to_deploy_blobs():
    blobs = ["data", "conv1", "fc7", "fc8_twitter", "prob"]
    assert features.resolve_blobs(["conv1", "fc8"], blobs, "d.prototxt") == {
        "conv1": "conv1",
        "fc8": "fc8_twitter",
    }
    with pytest.raises(DataError, match="d.prototxt: no blob named fc9"):
        features.resolve_blobs(["fc9"], blobs, "d.prototxt")
    with pytest.raises(DataError, match="several named fc8_"):
        features.resolve_blobs(["fc8"], blobs + ["fc8_b"], "d.prototxt")


def test_net_forward_takes_any_batch_and_the_fc8_alias(tmp_path):
    """A deploy net of batch 10 run on 3 images gives each image's outputs (as a batch of 1 does)."""
    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine.net import Net

    model = tmp_path / "deploy.prototxt"
    model.write_text(
        'layer { name: "data" type: "Input" top: "data"\n'
        "  input_param { shape { dim: 10 dim: 3 dim: 9 dim: 9 } } }\n"
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"\n'
        "  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: 'gaussian' std: 0.1 } } }\n"
        'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
        'layer { name: "fc8_x" type: "InnerProduct" bottom: "conv1" top: "fc8_x"\n'
        "  inner_product_param { num_output: 2 weight_filler { type: 'gaussian' std: 0.1 } } }\n"
    )
    weights = tmp_path / "w.caffemodel"
    Net(str(model), caffe_pb2.TEST).save(weights)
    forward = features.net_forward(model, weights, ["conv1", "fc8"])
    x = np.random.default_rng(0).normal(size=(3, 3, 9, 9)).astype(np.float32)
    out = forward(x)
    assert out["conv1"].shape == (3, 4, 7, 7) and out["fc8"].shape == (3, 2)
    assert out["conv1"].min() == 0.0  # post-ReLU
    one = forward(x[1:2])
    np.testing.assert_allclose(out["fc8"][1:2], one["fc8"], rtol=1e-5, atol=1e-6)


def test_a_layer_constant_on_the_training_fold_answers_the_majority_class():
    """A dead ReLU layer (all zeros) cannot be fitted: it scores as the training fold's majority class."""
    ytr, yte = np.array([1, 1, 1, 0, 0]), np.array([1, 0, 0, 0])
    for width in (3, 50):  # primal and dual forms
        out = probes.probe_layer(
            "dead", 1, np.zeros((5, width), np.float32), ytr, np.ones((4, width)), yte, probes.ProbeConfig()
        )
        assert [(r.classifier, r.form, r.accuracy) for r in out] == [
            ("svm", "constant", 0.25),
            ("softmax", "constant", 0.25),
        ]
        assert all(np.isnan(r.c) for r in out)
    table = probes.Table3(out)
    assert table.to_json()[0]["c"] is None


def test_c_search_extends_past_a_grid_edge_that_is_strictly_best(monkeypatch):
    """A stub classifier whose accuracy peaks at C = 1e-6: the search walks down from the grid's 1e-3 a decade
    at a time, stops one decade past the peak, and picks the peak; the grid alone would have said 1e-3."""
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Peaked(ClassifierMixin, BaseEstimator):
        def __init__(self, C=1.0):
            self.C = C

        def fit(self, x, y):
            self.classes_ = np.array([0, 1])
            return self

        def predict(self, x):  # column 0 is the label, column 1 a uniform draw: right with probability q(C)
            q = 1.0 / (1.0 + (np.log10(self.C) + 6.0) ** 2 / 10.0)
            return np.where(x[:, 1] < q, x[:, 0], 1 - x[:, 0]).astype(int)

    monkeypatch.setitem(probes.CLASSIFIERS, "peaked", lambda c, cfg: Peaked(C=c))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 3000)
    x = np.stack([y, rng.uniform(size=3000)], axis=1)
    c, scores = probes.choose_c("peaked", x, y, probes.ProbeConfig())
    assert c == pytest.approx(1e-6)
    assert sorted(scores) == pytest.approx([1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0])
    c, scores = probes.choose_c("peaked", x, y, probes.ProbeConfig(extend=0))
    assert c == pytest.approx(1e-3) and len(scores) == 5
    # an edge that only ties with its neighbour is not extended
    assert probes._edges_to_extend({1e-3: 0.7, 1e-2: 0.7, 1e-1: 0.6}) == []
    assert probes._edges_to_extend({1e-3: 0.6, 1e-2: 0.7, 1e-1: 0.8}) == [pytest.approx(1.0)]
