"""Paper pipeline pieces that need no engine: crops, stamps, cv statistics, tables, plots, demo data,
solvers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pixsent.recipes.paper import results, tables
from pixsent.workflow import evaluate as ev
from pixsent.workflow.runs import RunPaths, is_done, mark_done, write_json


def test_ten_crops_match_pycaffe_oversample():
    from pixsent.caffe import io as caffe_io

    img = np.random.RandomState(0).rand(256, 256, 3).astype(np.float32)
    ours = ten_crops = ev.ten_crops(img, (227, 227))
    theirs = caffe_io.oversample([img], (227, 227))
    assert ten_crops.shape == (10, 227, 227, 3)
    np.testing.assert_array_equal(ours, theirs)  # exact: same pixels, same order
    assert ev.crop_offsets((256, 256), (227, 227))[4] == (14, 14)  # Caffe's centre offset (256-227)//2


def test_cv_summary_population_std():
    folds = {
        k: {"accuracy_center": a, "accuracy_oversample": a + 0.01} for k, a in enumerate([0.8, 0.9, 0.7], 1)
    }
    s = ev.cv_summary(folds)
    assert s["center"]["mean"] == pytest.approx(0.8, abs=1e-12)
    assert s["center"]["std"] == pytest.approx(np.std([0.8, 0.9, 0.7]), abs=1e-12)  # ddof=0
    assert s["center"]["std_sample"] == pytest.approx(0.1, abs=1e-12)  # ddof=1
    assert "population" in s["std"]


def test_stamps_skip_and_invalidate(tmp_path):
    run = RunPaths(tmp_path, "five", "fc8_twitter", "caffenet", 1)
    run.dir.mkdir(parents=True)
    (run.dir / "out.txt").write_text("x")
    inputs = {"a": 1}
    assert not is_done(run, "step", inputs)
    mark_done(run, "step", inputs, ["out.txt"])
    assert is_done(run, "step", inputs)
    assert not is_done(run, "step", {"a": 2})  # other inputs: redo
    (run.dir / "out.txt").unlink()
    assert not is_done(run, "step", inputs)  # output gone: redo


def test_newest_solverstate_needs_its_caffemodel(tmp_path):
    run = RunPaths(tmp_path, "five", "fc7-2", "caffenet", 3)
    run.snapshots.mkdir(parents=True)
    for it in (10, 20, 30):
        (run.snapshots / f"fc7-2_iter_{it}.solverstate").write_bytes(b"")
    for it in (10, 20):
        (run.snapshots / f"fc7-2_iter_{it}.caffemodel").write_bytes(b"")
    assert run.newest_solverstate().name == "fc7-2_iter_20.solverstate"


def _fake_metrics(root: Path, subset: str, variant: str, init: str, accs: dict[int, float]) -> None:
    for k, a in accs.items():
        write_json(
            RunPaths(root, subset, variant, init, k).metrics,
            {"accuracy_center": a, "accuracy_oversample": a + 0.01},
        )


def test_table_marks_missing_folds(tmp_path):
    _fake_metrics(tmp_path, "five", "fc7-2", "caffenet", {1: 0.78, 2: 0.80})
    _fake_metrics(tmp_path, "five", "fc6-2", "caffenet", {k: 0.65 for k in range(1, 6)})
    rows = {r["run"]: r for r in tables.table_rows("4", tmp_path)}
    assert rows["fc8_twitter-caffenet"]["ours_center"] == "not run"
    assert rows["fc7-2-caffenet"]["ours_center"] == "0.790 ± 0.010 (2/5 folds)"
    assert rows["fc7-2-caffenet"]["diff_center"] == "+0.006"  # 0.790 - 0.784
    assert rows["fc6-2-caffenet"]["ours_oversample"] == "0.660 ± 0.000"
    md = tables.render(["2", "4", "5", "6"], tmp_path, "md")
    assert "PCNN" in md and "majority class" in md and "0.658" in md
    csv_text = tables.render(["4"], tmp_path, "csv")
    assert csv_text.splitlines()[0].startswith("table,model")
    assert len(csv_text.splitlines()) == 1 + len(results.rows("4"))


def test_table_skips_capped_smoke_runs(tmp_path):
    _fake_metrics(tmp_path, "five", "fc7-2", "caffenet", {1: 0.78, 2: 0.80})
    path = RunPaths(tmp_path, "five", "fc7-2", "caffenet", 3).metrics
    write_json(path, {"accuracy_center": 0.1, "accuracy_oversample": 0.1, "capped": True})
    rows = {r["run"]: r for r in tables.table_rows("4", tmp_path)}
    expect = "0.790 ± 0.010 (2/5 folds) (1 capped smoke-run folds skipped)"
    assert rows["fc7-2-caffenet"]["ours_center"] == expect


def test_published_numbers_match_spec():
    pub = {(p.table, p.subset, p.variant, p.init): p for p in results.PUBLISHED}
    assert pub[("2", "five", "fc8_twitter", "caffenet")].oversample == (0.830, 0.034)
    assert pub[("4", "five", "fc6-2", "caffenet")].center == (0.651, 0.044)
    assert pub[("6", "five", "fc9_twitter", "caffenet")].oversample == (0.803, 0.034)
    assert results.majority_accuracy("five") == pytest.approx(0.658, abs=5e-4)


def test_plot_from_golden_caffe_log(golden, tmp_path):
    from pixsent.workflow.plots import plot_logs, read_curves

    log = golden / "solver_run" / "train.log"
    c = read_curves(log)
    assert list(c.iters) == list(range(21)) and c.loss[0] == pytest.approx(0.693377, abs=1e-6)
    assert list(c.test_iters) == [0, 5, 10, 15, 20] and c.test_accuracy[1] == pytest.approx(0.9375)
    out = plot_logs([log, log], tmp_path / "fig6.png", ["caffe", "again"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_cli_table_and_plot(golden, tmp_path, capsys):
    from pixsent.cli import main

    assert main(["table", "--runs", str(tmp_path), "--tables", "6", "--format", "csv"]) == 0
    assert "fc9_twitter-caffenet" in capsys.readouterr().out
    out = tmp_path / "f.png"
    assert main(["plot", str(golden / "solver_run/train.log"), "--labels", "caffe", "--out", str(out)]) == 0
    assert out.exists()


def test_demo_dataset_deterministic_and_in_paper_layout(tmp_path):
    from pixsent.recipes.demo import DemoConfig, generate_dataset

    a = generate_dataset(DemoConfig(out=tmp_path / "a", n_images=20))
    b = generate_dataset(DemoConfig(out=tmp_path / "b", n_images=20))
    assert (a / "images/img0000_c0.jpg").read_bytes() == (b / "images/img0000_c0.jpg").read_bytes()
    for k in range(1, 6):
        test = (a / f"splits/demo_agrees/test{k}/test.txt").read_text().split("\n")
        train = (a / f"splits/demo_agrees/test{k}/train.txt").read_text().split("\n")
        assert len([t for t in test if t]) == 4 and len([t for t in train if t]) == 16


def test_demo_net_is_caffenet_shaped():
    from pixsent.recipes.demo import DemoConfig, deploy_net, solver

    names = [layer.name for layer in deploy_net(DemoConfig(), "fc8_twitter").layer]
    assert names == [
        "data",
        "conv1",
        "relu1",
        "pool1",
        "norm1",
        "conv2",
        "relu2",
        "pool2",
        "norm2",
        "conv3",
        "relu3",
        "conv4",
        "relu4",
        "conv5",
        "relu5",
        "pool5",
        "fc6",
        "relu6",
        "drop6",
        "fc7",
        "relu7",
        "drop7",
        "fc8_twitter",
        "prob",
    ]
    net = deploy_net(DemoConfig(), "fc7-2")
    head = next(layer for layer in net.layer if layer.name == "fc7_twitter")
    assert [p.lr_mult for p in head.param] == [
        10,
        20,
    ] and head.inner_product_param.weight_filler.std == pytest.approx(0.01)
    s = solver(
        DemoConfig(epochs=10, batch=32), train_size=160, test_size=40, test_batch=40, prefix="snapshots/x"
    )
    assert s.max_iter == 50 and s.test_iter == [1] and s.stepsize == 38 and s.momentum == pytest.approx(0.9)


def _write_paper_files(tmp_path: Path, variant: str, subset: str, train_size: int, test_size: int):
    pytest.importorskip("pixsent.zoo.registry")
    from pixsent.formats.prototxt import read_net, read_solver
    from pixsent.recipes.paper.recipe import PaperRecipe
    from pixsent.workflow.pipeline import FoldConfig

    cfg = FoldConfig(variant=variant, subset=subset, runs=tmp_path)
    run = cfg.run_paths()
    run.dir.mkdir(parents=True)
    PaperRecipe().write_files(
        cfg,
        run,
        train_source=tmp_path / "tr",
        test_source=tmp_path / "te",
        mean_file=tmp_path / "mean.binaryproto",
        train_size=train_size,
        test_size=test_size,
    )
    return read_solver(run.solver), read_net(run.train_val)


@pytest.mark.parametrize(
    ("variant", "new_layer", "base_lr"),
    [
        ("fc8_twitter", "fc8_twitter", 0.001),
        ("fc7-2", "fc7_twitter", 0.001),
        ("fc6-2", "fc6_twitter", 0.0001),
        ("fc9_twitter", "fc9_twitter", 0.001),
    ],
)
def test_generated_solver_matches_spec(tmp_path, variant, new_layer, base_lr):
    solver, net = _write_paper_files(tmp_path, variant, "five", 704, 176)
    assert solver.max_iter == 180  # 65 epochs of 704 images at batch 256 (the released _iter_180)
    assert (
        solver.base_lr == pytest.approx(base_lr)
        and solver.lr_policy == "step"
        and solver.gamma == pytest.approx(0.1)
    )
    assert 16 <= solver.stepsize <= 17  # 6 epochs = 16.5 iterations
    assert solver.momentum == pytest.approx(0.9) and solver.weight_decay == pytest.approx(0.0005)
    assert solver.snapshot_prefix == f"snapshots/{variant}"
    layer = next(layer for layer in net.layer if layer.name == new_layer)
    assert [p.lr_mult for p in layer.param] == [10, 20]


def test_generated_solver_scales_with_fold_size(tmp_path):
    s_four, _ = _write_paper_files(tmp_path / "4", "fc8_twitter", "four", 892, 223)
    assert s_four.max_iter > 180  # more images per epoch, same 65 epochs
    # >= 65 epochs of 892 images at batch 256 (226.5 iterations), rounded up as five-agree's 178.75 -> 180
    assert 65 * 892 / 256 <= s_four.max_iter < 65 * 892 / 256 + 10


def test_iter_size_keeps_the_solver_of_the_effective_batch(tmp_path):
    """BATCH=64 ITER_SIZE=4 gets the max_iter, stepsize, test interval and rates of batch 256 (Caffe's
    iter_size averages 4 passes per update); the default writes no iter_size at all."""
    from pixsent.recipes.paper.solver_config import SolverConfig

    full = SolverConfig("n", "p", 704, 176)
    split = SolverConfig("n", "p", 704, 176, batch_size=64, iter_size=4)
    keys = ("max_iter", "stepsize", "test_interval", "base_lr", "gamma", "snapshot", "test_iter")
    assert {k: getattr(split.to_proto(), k) for k in keys} == {k: getattr(full.to_proto(), k) for k in keys}
    assert split.to_proto().iter_size == 4 and split.max_iter == 180 and split.stepsize == 17
    assert "iter_size" not in full.to_text() and "iter_size: 4" in split.to_text()
    assert "effective batch 256" in split.to_text()
    assert SolverConfig("n", "p", 704, 176, batch_size=64).max_iter == 720  # no iter_size: 4x the updates

    from pixsent.workflow.pipeline import FoldConfig

    with pytest.raises(Exception, match="iter_size must be"):
        FoldConfig(iter_size=0)


def _paper_prototxt_step(tmp_path: Path, variant: str = "fc7-2", **over):
    """Run the splits and prototxt steps of the paper recipe on a 10/2-image fold (no images, no weights)."""
    from pixsent.workflow.pipeline import FoldConfig, step_prototxt, step_splits

    fold = tmp_path / "splits/five_agrees/test1"
    fold.mkdir(parents=True, exist_ok=True)
    (fold / "train.txt").write_text("".join(f"a{k}.jpg {k % 2}\n" for k in range(10)))
    (fold / "test.txt").write_text("b0.jpg 0\nb1.jpg 1\n")
    cfg = FoldConfig(
        variant=variant,
        runs=tmp_path / "runs",
        splits=tmp_path / "splits",
        lmdb_root=tmp_path / "lmdb",
        extra={"mean_file": str(tmp_path / "mean.binaryproto")},
        progress=False,
        **over,
    )
    run = cfg.run_paths()
    step_splits(cfg, run)
    status = step_prototxt(cfg, run)
    info = json.loads((run.stamps / "prototxt.json").read_text())["info"]
    return run, status, info


def test_max_iter_cap_is_written_recorded_and_lifted(tmp_path):
    from pixsent.formats.prototxt import read_net, read_solver

    # 10 images / (batch 2 x iter_size 5) = 1 iteration an epoch: 65 epochs -> 70 iterations
    run, status, info = _paper_prototxt_step(tmp_path, batch=2, iter_size=5, max_iter_cap=3)
    solver = read_solver(run.solver)
    assert status == "done" and solver.max_iter == 3 and solver.iter_size == 5 and solver.stepsize == 6
    assert "CAPPED by --max-iter 3" in run.solver.read_text()
    assert info == {"max_iter": 3, "full_max_iter": 70, "capped": True}
    assert [d.data_param.batch_size for d in read_net(run.train_val).layer if d.type == "Data"] == [2, 2]
    assert _paper_prototxt_step(tmp_path, batch=2, iter_size=5, max_iter_cap=3)[1] == "cached"

    run, status, info = _paper_prototxt_step(tmp_path, batch=2, iter_size=5)  # no cap: the full solver
    assert (
        status == "done" and read_solver(run.solver).max_iter == 70 and "CAPPED" not in run.solver.read_text()
    )
    assert info == {"max_iter": 70, "full_max_iter": 70, "capped": False}
    run, status, info = _paper_prototxt_step(tmp_path, batch=2, iter_size=5, max_iter_cap=500)
    assert read_solver(run.solver).max_iter == 70 and info["capped"] is False  # a cap above max_iter: none


def test_newest_solverstate_before_an_iteration(tmp_path):
    run = RunPaths(tmp_path, "five", "fc7-2", "caffenet", 1)
    run.snapshots.mkdir(parents=True)
    for it in (2, 90, 180):
        for ext in ("solverstate", "caffemodel"):
            (run.snapshots / f"fc7-2_iter_{it}.{ext}").write_bytes(b"")
    assert run.newest_solverstate().name == "fc7-2_iter_180.solverstate"
    assert run.newest_solverstate(before=100).name == "fc7-2_iter_90.solverstate"
    assert run.newest_solverstate(before=2) is None  # MAX_ITER=2 after a full run: nothing to resume


def test_image_root_finds_the_folder_holding_the_listed_images(tmp_path):
    from pixsent.workflow.pipeline import FoldConfig, image_root

    (tmp_path / "twitter/images").mkdir(parents=True)
    (tmp_path / "twitter/images/x.jpg").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text("x.jpg 1\n")
    for data in (tmp_path, tmp_path / "twitter", tmp_path / "twitter/images"):
        assert image_root(FoldConfig(images=data), listing) == tmp_path / "twitter/images", data


def test_cli_batch_iter_size_max_iter(tmp_path):
    from pixsent.cli import build_parser
    from pixsent.cli.paper import _fold_config

    parser = build_parser()
    args = parser.parse_args(
        ["fold", "3", "--variant", "fc7-2", "--batch", "64", "--iter-size", "4", "--max-iter", "5"]
    )
    cfg = _fold_config(args, args.fold)
    assert (cfg.batch, cfg.iter_size, cfg.max_iter_cap, cfg.fold) == (64, 4, 5, 3)
    cfg = _fold_config(parser.parse_args(["cv"]))
    assert (cfg.batch, cfg.iter_size, cfg.max_iter_cap) == (256, 1, None)  # the paper's
    for bad in (["--batch", "0"], ["--iter-size", "-1"], ["--max-iter", "x"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["fold", "1", *bad])


def _tiny_caffemodel(path: Path, fc8_width: int) -> Path:
    """A caffemodel holding only an fc8 layer of the given width (what fc9_twitter needs to know)."""
    from pixsent.caffe.proto import caffe_pb2
    from pixsent.formats.blob import array_to_blob
    from pixsent.formats.caffemodel import write_caffemodel

    net = caffe_pb2.NetParameter(name="fake")
    layer = net.layer.add(name="fc8", type="InnerProduct")
    layer.blobs.append(array_to_blob(np.zeros((fc8_width, 3), np.float32)))
    layer.blobs.append(array_to_blob(np.zeros(fc8_width, np.float32)))
    return write_caffemodel(net, path)


def test_fc9_twitter_keeps_the_fc8_width_of_its_init_caffemodel(tmp_path):
    """mvso-es has no published width: it is read from the caffemodel (it was a NetError before)."""
    from pixsent.formats.prototxt import read_net

    models = tmp_path / "models"
    models.mkdir()
    _tiny_caffemodel(models / "mvso_es.caffemodel", 1234)
    run, _, _ = _paper_prototxt_step(tmp_path, init="mvso-es", models=models, variant="fc9_twitter")
    fc8 = next(layer for layer in read_net(run.train_val).layer if layer.name == "fc8")
    assert fc8.inner_product_param.num_output == 1234


def test_paper_recipe_uses_the_init_models_mean(tmp_path, monkeypatch):
    """PlacesCNN fine-tunes with the Places205 mean from its archive, not the ILSVRC mean."""
    from pixsent.errors import DataError
    from pixsent.recipes.paper.recipe import PaperRecipe
    from pixsent.workflow.pipeline import FoldConfig

    monkeypatch.chdir(tmp_path)
    cfg = FoldConfig(init="places", models=tmp_path / "models")
    with pytest.raises(DataError, match="places205CNN_mean.binaryproto"):
        PaperRecipe().train_mean(cfg, tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/places205CNN_mean.binaryproto").write_bytes(b"")
    assert PaperRecipe().train_mean(cfg, tmp_path) == (tmp_path / "models/places205CNN_mean.binaryproto")


def test_snapshot_knob_sets_the_interval_and_keeps_the_default_half_way():
    from pixsent.recipes.paper.solver_config import SolverConfig
    from pixsent.workflow.pipeline import FoldConfig

    assert SolverConfig("n", "p", 704, 176).snapshot == 90
    every = SolverConfig("n", "p", 704, 176, snapshot_every=10)
    assert every.snapshot == 10 and "snapshot: 10" in every.to_text("h")
    assert FoldConfig().solver_knobs() == {}  # stamps of default runs keep their digests
    assert FoldConfig(snapshot_every=10).solver_knobs() == {"snapshot_every": 10}
    with pytest.raises(Exception, match="snapshot_every must be a whole number"):
        FoldConfig(snapshot_every=0)
