"""Choosing a configuration on inner validation splits of the training folds: the outer test fold unread."""

from __future__ import annotations

import json

import pytest

from pixsent.data.imagelist import read_image_list
from pixsent.errors import DataError
from pixsent.workflow.selection import Candidate, inner_split, select


def _list(path, labels):
    path.write_text("".join(f"img{i:03d}.jpg {lab}\n" for i, lab in enumerate(labels)))
    return path


def test_inner_split_is_stratified_disjoint_and_seeded(tmp_path):
    labels = [1] * 60 + [0] * 40
    src = _list(tmp_path / "train.txt", labels)
    a_train, a_val = inner_split(src, tmp_path / "a", val_fraction=0.2, seed=7)
    b_train, b_val = inner_split(src, tmp_path / "b", val_fraction=0.2, seed=7)
    _, c_val = inner_split(src, tmp_path / "c", val_fraction=0.2, seed=8)
    train, val = read_image_list(a_train), read_image_list(a_val)
    assert {e.path for e in train}.isdisjoint({e.path for e in val})
    assert len(train) + len(val) == 100
    assert sorted(e.label for e in val).count(1) == 12 and sorted(e.label for e in val).count(0) == 8
    assert a_val.read_text() == b_val.read_text() and b_train.read_text() == a_train.read_text()
    assert c_val.read_text() != a_val.read_text()
    # lines keep the source's order and text
    assert [e.path for e in train] == sorted(e.path for e in train)


def test_inner_split_refuses_a_tiny_list(tmp_path):
    with pytest.raises(DataError, match="too few"):
        inner_split(_list(tmp_path / "t.txt", [0, 1]), tmp_path / "x")


@pytest.mark.slow
def test_select_trains_on_inner_splits_and_never_reads_the_test_fold(tmp_path):
    pytest.importorskip("pixsent.engine.net")
    from pixsent.recipes.demo import DemoConfig, fold_config, generate_dataset

    dcfg = DemoConfig(
        out=tmp_path,
        n_images=40,
        epochs=2,
        batch=8,
        widths=(8, 8, 8, 8, 8, 16, 16),
        progress=False,
        echo=False,
    )
    root = generate_dataset(dcfg)
    cfg = fold_config(dcfg, root, fold=1)
    outer_test = {e.path for e in read_image_list(root / "splits" / "demo_agrees" / "test1" / "test.txt")}
    result = select(cfg, [Candidate("fc8_twitter"), Candidate("fc7-2")], [1], tmp_path / "sel")
    assert result["chosen"] in ("fc8_twitter", "fc7-2")
    assert set(result["inner_accuracy"]) == {"fc8_twitter", "fc7-2"}
    written = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert written["chosen"] == result["chosen"]
    for name in ("train.txt", "test.txt"):
        inner = {e.path for e in read_image_list(tmp_path / "sel/splits/demo_agrees/test1" / name)}
        assert inner.isdisjoint(outer_test)
    for run in (tmp_path / "sel" / "runs").rglob("test.txt"):
        assert {e.path for e in read_image_list(run)}.isdisjoint(outer_test)


def _fake_folds(monkeypatch, tmp_path, diverging):
    """select() on stubbed folds: inner accuracy by variant, DivergedError for those in ``diverging``."""
    import pixsent.workflow.selection as selection
    from pixsent.errors import DivergedError

    outer = _list(tmp_path / "outer_train.txt", [1] * 12 + [0] * 8)
    monkeypatch.setattr(selection, "find_split_files", lambda cfg: (outer, tmp_path / "never_read.txt"))
    accuracy = {"a": 0.70, "b": 0.80, "c": 0.75}
    trained = []

    def run_fold(cfg):
        trained.append((cfg.variant, cfg.fold))
        if cfg.variant in diverging:
            raise DivergedError(f"{cfg.variant}/train.log: training diverged: loss is nan at iteration 17")
        return {"accuracy_center": accuracy[cfg.variant] - 0.01, "accuracy_oversample": accuracy[cfg.variant]}

    monkeypatch.setattr(selection, "run_fold", run_fold)
    return trained


def test_a_diverged_candidate_is_recorded_and_the_others_still_compete(tmp_path, monkeypatch):
    from pixsent.workflow.pipeline import FoldConfig

    trained = _fake_folds(monkeypatch, tmp_path, diverging={"b"})
    result = select(FoldConfig(), [Candidate("a"), Candidate("b"), Candidate("c")], [1, 2], tmp_path / "sel")
    assert result["chosen"] == "c" and result["diverged"] == ["b"]
    assert result["mean_inner_accuracy_oversample"] == {"a": 0.70, "b": None, "c": 0.75}
    assert "iteration 17" in result["inner_accuracy"]["b"]["1"]["diverged"]
    assert ("b", 2) not in trained and ("c", 2) in trained  # a diverged candidate's other folds are skipped
    written = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert written["chosen"] == "c" and written["mean_inner_accuracy_oversample"]["b"] is None


def test_select_fails_clearly_when_every_candidate_diverges(tmp_path, monkeypatch):
    from pixsent.errors import NetError
    from pixsent.workflow.pipeline import FoldConfig

    _fake_folds(monkeypatch, tmp_path, diverging={"a", "b"})
    with pytest.raises(NetError, match=r"every candidate diverged \(a, b\)"):
        select(FoldConfig(), [Candidate("a"), Candidate("b")], [1], tmp_path / "sel")
    assert not (tmp_path / "sel" / "selection.json").exists()


@pytest.mark.parametrize(("status", "diverged"), [(3, True), (1, False)])
def test_a_trainer_exiting_with_the_divergence_status_raises_diverged(tmp_path, status, diverged):
    """The fold workflow tells a diverged training (the trainer's exit status 3) from a broken one."""
    import sys

    from pixsent.errors import DivergedError, NetError
    from pixsent.workflow.pipeline import FoldConfig, _run_logged
    from pixsent.workflow.runs import RunPaths

    run = RunPaths(tmp_path, "five", "fc8_twitter", "x", 1)
    run.dir.mkdir(parents=True)
    said = "pixsent caffe: error: solver.prototxt: training loss is nan at iteration 17"
    cmd = [sys.executable, "-c", f"import sys; print({said!r}); sys.exit({status})"]
    with pytest.raises(NetError, match="iteration 17") as info:
        _run_logged(cmd, run, {}, FoldConfig(echo=False))
    assert isinstance(info.value, DivergedError) is diverged
    assert said in run.log.read_text()


def test_a_diverged_training_is_remembered_until_its_inputs_change(tmp_path, monkeypatch):
    """A restarted `select` does not retrain a candidate that diverged with the same solver, net and weights:
    the fold's train step raises DivergedError at once; another solver trains again."""
    from pixsent.errors import DivergedError
    from pixsent.workflow import pipeline
    from pixsent.workflow.pipeline import FoldConfig, step_train
    from pixsent.workflow.runs import RunPaths

    run = RunPaths(tmp_path, "five", "fc8_twitter-norelu", "squeezenet-dc", 1)
    run.dir.mkdir(parents=True)
    run.solver.write_text('net: "train_val.prototxt"\nmax_iter: 20\n')
    run.train_val.write_text('name: "x"\n')
    weights = tmp_path / "init.caffemodel"
    weights.write_bytes(b"")
    calls = []

    def diverging(cmd, run_, env, cfg):
        calls.append(cmd)
        raise DivergedError(f"{run_.log}: training diverged: loss is nan at iteration 17")

    monkeypatch.setattr(pipeline, "_run_logged", diverging)
    cfg = FoldConfig(weights=weights, echo=False)
    for _ in range(2):
        with pytest.raises(DivergedError, match="iteration 17"):
            step_train(cfg, run)
    assert len(calls) == 1
    assert "diverged.json" in str(pytest.raises(DivergedError, step_train, cfg, run).value)
    run.solver.write_text('net: "train_val.prototxt"\nmax_iter: 20\nbase_lr: 0.0001\n')
    with pytest.raises(DivergedError):
        step_train(cfg, run)
    assert len(calls) == 2
