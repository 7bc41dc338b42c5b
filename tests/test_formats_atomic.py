"""Atomic writes of files and folders: nothing under the final name unless complete."""

from __future__ import annotations

import pytest

from pixsent.formats.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def test_file_write_and_replace(tmp_path):
    target = tmp_path / "sub/out.txt"
    atomic_write_text(target, "one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failure_leaves_old_content_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise ValueError
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_directory_replace(tmp_path):
    target = tmp_path / "dir"
    target.mkdir()
    (target / "old").write_text("x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("y")
    assert [p.name for p in target.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["dir"]


def test_nothing_written_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "x"):
        pass
    assert list(tmp_path.iterdir()) == []
