"""splits check / make / fetch on the paper's real split files and on broken copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pixsent.cli import main
from pixsent.data.splits import check_splits, make_splits, summarize
from pixsent.recipes.paper.dataset import fetch_splits


def test_real_splits_pass_with_paper_counts(shared_data, capsys):
    assert check_splits(shared_data / "splits") == []
    counts = summarize(shared_data / "splits")
    assert counts["five_agrees"] == {"images": 880, "label0": 301, "label1": 579}
    assert counts["four_agrees"]["images"] == 1115 and counts["three_agrees"]["images"] == 1265
    assert main(["splits", "check", str(shared_data / "splits")]) == 0


@pytest.fixture
def five(shared_data, tmp_path) -> Path:
    dest = tmp_path / "five_agrees"
    shutil.copytree(shared_data / "splits" / "five_agrees", dest)
    return dest


def _edit(path: Path, line: int, text: str | None) -> None:
    lines = path.read_text().splitlines(keepends=True)
    if text is None:
        del lines[line - 1]
    else:
        lines[line - 1] = text
    path.write_text("".join(lines))


def _messages(root: Path) -> list[str]:
    return [str(p) for p in check_splits(root)]


def test_malformed_line_and_bad_label(five):
    _edit(five / "test2" / "test.txt", 3, "no_label_here.jpg\n")
    _edit(five / "test2" / "test.txt", 5, "x.jpg 7\n")
    msgs = _messages(five)
    assert any(m.startswith(f"{five}/test2/test.txt:3: ") and "no label" in m for m in msgs)
    assert any(m.startswith(f"{five}/test2/test.txt:5: ") and "not 0 or 1" in m for m in msgs)


def test_duplicate_and_overlap_and_partition(five):
    test1 = (five / "test1" / "test.txt").read_text().splitlines()
    # duplicate inside a file
    (five / "test3" / "test.txt").write_text((five / "test3" / "test.txt").read_text() + test1[0] + "\n")
    msgs = _messages(five)
    assert any(m.startswith(f"{five}/test3/test.txt:") and "test folds must be disjoint" in m for m in msgs)
    # train/test overlap within fold 1
    _edit(five / "test1" / "train.txt", 1, test1[1] + "\n")
    msgs = _messages(five)
    assert any(
        m.startswith(f"{five}/test1/train.txt:1: ") and "also in this fold's test.txt:2" in m for m in msgs
    )


def test_duplicate_in_one_file(five):
    path = five / "test4" / "train.txt"
    first = path.read_text().splitlines()[0]
    path.write_text(path.read_text() + first + "\n")
    assert f"{path}:705: duplicate id {first.split()[0]} (first at line 1)" in _messages(five)


def test_train_not_complement_and_uncovered(five):
    _edit(five / "test2" / "train.txt", 10, None)  # an id of some other test fold vanishes from train2
    msgs = _messages(five)
    assert any("is missing from test2/train.txt" in m for m in msgs)
    (five / "test5" / "train.txt").write_text((five / "test5" / "train.txt").read_text() + "ghost.jpg 1\n")
    assert any(
        m.startswith(f"{five}/test5/train.txt:705: ") and "in no test fold" in m for m in _messages(five)
    )
    assert main(["splits", "check", str(five)]) == 1


def test_make_stratified_folds_pass_check(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"img{i:03d}.jpg {int(i % 3 == 0)}\n" for i in range(60)))
    assert (
        main(["splits", "make", str(labels), "--folds", "5", "--seed", "3", "--out", str(tmp_path / "mine")])
        == 0
    )
    assert check_splits(tmp_path / "mine") == []
    for k in range(1, 6):
        test = (tmp_path / "mine" / f"test{k}" / "test.txt").read_text().splitlines()
        assert (
            len(test) == 12 and sum(line.endswith(" 1") for line in test) == 4
        )  # stratified: 20/60 positive
    again = make_splits(labels, tmp_path / "again", folds=5, seed=3)
    assert (tmp_path / "again" / "test2" / "test.txt").read_text() == (
        tmp_path / "mine" / "test2" / "test.txt"
    ).read_text() and len(again) == 5


def test_fetch_from_mirror_verifies_sha256(shared_data, tmp_path):
    paths = fetch_splits(("five",), tmp_path / "splits", mirror=shared_data)  # mirror holds splits/...
    assert len(paths) == 10 and check_splits(tmp_path / "splits") == []
    bad = tmp_path / "badmirror"
    shutil.copytree(shared_data / "splits", bad)
    (bad / "four_agrees" / "test1" / "test.txt").write_text("tampered.jpg 1\n")
    from pixsent.errors import DataError

    with pytest.raises(DataError, match="sha256"):
        fetch_splits(("four",), tmp_path / "s2", mirror=bad)
    assert not (tmp_path / "s2" / "four_agrees" / "test1" / "test.txt").exists()
