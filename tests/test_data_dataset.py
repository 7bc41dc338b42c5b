"""The paper dataset helpers: per-fold LMDB cache, ILSVRC mean (the images: tests/test_data_twitter.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pixsent.cli import main
from pixsent.data.splits import make_splits
from pixsent.recipes.paper import dataset


def _tiny_dataset(tmp_path: Path, n: int = 20) -> tuple[Path, Path]:
    """N small JPEGs and a five_agrees split folder made from them."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.RandomState(0)
    lines = []
    for i in range(n):
        cv2.imwrite(str(images / f"im{i:02d}.jpg"), rng.randint(0, 255, (30 + i, 40, 3), np.uint8))
        lines.append(f"im{i:02d}.jpg {i % 2}\n")
    (tmp_path / "labels.txt").write_text("".join(lines))
    splits = tmp_path / "splits"
    make_splits(tmp_path / "labels.txt", splits / "five_agrees", folds=5, seed=0)
    return images, splits


def test_fold_lmdbs_are_cached(tmp_path, capsys):
    images, splits = _tiny_dataset(tmp_path)
    out = tmp_path / "lmdb"
    first = dataset.ensure_fold_lmdbs(
        "five", 3, images=images, splits=splits, out=out, size=16, workers=1, progress=False
    )
    assert first.built and first.train_lmdb.is_dir() and first.mean_binaryproto.is_file()
    from pixsent.formats.lmdb_io import LMDBReader

    assert len(LMDBReader(first.train_lmdb)) == 16 and len(LMDBReader(first.test_lmdb)) == 4
    mtime = first.train_lmdb.stat().st_mtime_ns
    again = dataset.ensure_fold_lmdbs(
        "five", 3, images=images, splits=splits, out=out, size=16, workers=1, progress=False
    )
    assert not again.built and first.train_lmdb.stat().st_mtime_ns == mtime
    rc = main(
        [
            "data",
            "lmdb",
            "--subset",
            "five",
            "--fold",
            "3",
            "--images",
            str(images),
            "--splits",
            str(splits),
            "--out",
            str(out),
            "--size",
            "16",
            "--workers",
            "1",
        ]
    )
    assert rc == 0 and "nothing to do" in capsys.readouterr().out
    # an input change (an image rewritten) triggers a rebuild
    cv2.imwrite(str(images / "im00.jpg"), np.zeros((20, 20, 3), np.uint8))
    assert dataset.ensure_fold_lmdbs(
        "five", 3, images=images, splits=splits, out=out, size=16, workers=1, progress=False
    ).built


def test_ilsvrc_mean_binaryproto(shared_data, tmp_path):
    assert main(["data", "mean", "--dest", str(tmp_path), "--mirror", str(shared_data)]) == 0
    from pixsent.formats.binaryproto import read_mean

    mean = read_mean(tmp_path / "ilsvrc_2012_mean.binaryproto")
    ref = np.load(shared_data / "ilsvrc_2012_mean.npy")
    assert mean.shape == (3, 256, 256)
    assert np.abs(mean - ref).max() < 1e-4  # float64 -> float32 rounding only
    assert np.allclose(mean.mean(axis=(1, 2)), [104.0, 116.7, 122.7], atol=0.1)
