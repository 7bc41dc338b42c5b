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
