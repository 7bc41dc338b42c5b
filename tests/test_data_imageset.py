"""convert_imageset / compute_image_mean against LMDBs and the mean written by real BVLC Caffe."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lmdb
import numpy as np
import pytest

from pixsent.caffe.proto import caffe_pb2
from pixsent.cli import main
from pixsent.data import imageset
from pixsent.data.image_mean import compute_image_mean, datum_pixels
from pixsent.data.imageset import convert_imageset
from pixsent.errors import DataError


def _items(path: Path) -> list[tuple[bytes, bytes]]:
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = list(txn.cursor())
    env.close()
    return items


def _pixels(value: bytes) -> np.ndarray:
    datum = caffe_pb2.Datum()
    datum.ParseFromString(value)
    return datum_pixels(datum).astype(np.int16)


@pytest.mark.parametrize(
    ("name", "listfile", "workers"), [("train_raw", "train.txt", 2), ("test_raw", "test.txt", 1)]
)
def test_raw_lmdb_equals_caffe_byte_for_byte(golden, tmp_path, name, listfile, workers):
    ours = convert_imageset(
        f"{golden}/images/",
        golden / listfile,
        tmp_path / name,
        resize=(36, 36),
        workers=workers,
        progress=False,
    )
    mine, theirs = _items(tmp_path / name), _items(golden / "lmdb" / name)
    assert [k for k, _ in mine] == [k for k, _ in theirs]
    diffs = [int(np.abs(_pixels(a) - _pixels(b)).max()) for (_, a), (_, b) in zip(mine, theirs)]
    assert max(diffs) == 0, f"max pixel difference {max(diffs)}"
    assert [v for _, v in mine] == [v for _, v in theirs]  # serialized Datums identical (tolerance: 0 bytes)
    assert ours.written == len(theirs) and not ours.skipped


def test_encoded_png_decodes_to_caffe_pixels(golden, tmp_path):
    convert_imageset(
        golden / "images",
        golden / "train.txt",
        tmp_path / "enc",
        resize=(36, 36),
        encoded=True,
        encode_type="png",
        workers=2,
        progress=False,
    )
    mine, theirs = _items(tmp_path / "enc"), _items(golden / "lmdb" / "train_encoded")
    assert [k for k, _ in mine] == [k for k, _ in theirs]
    for (_, a), (_, b) in zip(mine, theirs):
        da, db = caffe_pb2.Datum(), caffe_pb2.Datum()
        da.ParseFromString(a)
        db.ParseFromString(b)
        assert da.encoded and da.data[:4] == b"\x89PNG" and da.label == db.label
        assert (da.channels, da.height, da.width) == (0, 0, 0)
        assert np.array_equal(_pixels(a), _pixels(b))  # tolerance: exact


def test_encoded_without_resize_stores_file_bytes(golden, tmp_path):
    convert_imageset(
        golden / "images", golden / "test.txt", tmp_path / "jpg", encoded=True, workers=1, progress=False
    )
    key, value = _items(tmp_path / "jpg")[0]
    datum = caffe_pb2.Datum()
    datum.ParseFromString(value)
    path = key.decode().split("_", 1)[1]
    assert datum.data == (golden / "images" / path).read_bytes()


def test_mean_equals_caffe_binaryproto(golden, tmp_path):
    convert_imageset(
        golden / "images", golden / "train.txt", tmp_path / "db", resize=(36, 36), workers=2, progress=False
    )
    out = tmp_path / "mean.binaryproto"
    assert (
        main(
            [
                "compute_image_mean",
                str(tmp_path / "db"),
                str(out),
                "--npy",
                str(tmp_path / "m.npy"),
                "--quiet",
            ]
        )
        == 0
    )
    assert out.read_bytes() == (golden / "mean.binaryproto").read_bytes()
    assert np.array_equal(np.load(tmp_path / "m.npy"), np.load(golden / "mean.npy"))
    # the mean of Caffe's own LMDB, read by pixsent, is the same (exact)
    assert np.array_equal(
        compute_image_mean(golden / "lmdb" / "train_raw", progress=False), np.load(golden / "mean.npy")
    )


def test_cli_accepts_gflags_spellings(golden, tmp_path):
    rc = main(
        [
            "convert_imageset",
            "-resize_height=36",
            "--resize_width=36",
            "-shuffle=false",
            "--quiet",
            f"{golden}/images/",
            str(golden / "test.txt"),
            str(tmp_path / "db"),
        ]
    )
    assert rc == 0
    assert _items(tmp_path / "db") == _items(golden / "lmdb" / "test_raw")
    # Caffe refuses an existing database; so do we, unless --overwrite
    assert (
        main(
            [
                "convert_imageset",
                "--quiet",
                f"{golden}/images/",
                str(golden / "test.txt"),
                str(tmp_path / "db"),
            ]
        )
        == 1
    )
    assert (
        main(
            [
                "convert_imageset",
                "--quiet",
                "--overwrite",
                "--gray",
                f"{golden}/images/",
                str(golden / "test.txt"),
                str(tmp_path / "db"),
            ]
        )
        == 0
    )
    datum = caffe_pb2.Datum()
    datum.ParseFromString(_items(tmp_path / "db")[0][1])
    assert datum.channels == 1


def test_shuffle_is_seeded_and_keys_follow_shuffled_order(golden, tmp_path):
    a = convert_imageset(
        golden / "images",
        golden / "train.txt",
        tmp_path / "a",
        resize=(8, 8),
        shuffle=True,
        seed=5,
        workers=1,
        progress=False,
    )
    convert_imageset(
        golden / "images",
        golden / "train.txt",
        tmp_path / "b",
        resize=(8, 8),
        shuffle=True,
        seed=5,
        workers=2,
        progress=False,
    )
    keys = [k for k, _ in _items(tmp_path / "a")]
    assert keys == [k for k, _ in _items(tmp_path / "b")] and a.written == 32
    names = [k.decode()[9:] for k in keys]
    assert names != sorted(names)
    assert [k.decode()[:8] for k in keys] == [f"{i:08d}" for i in range(32)]


def _small_set(tmp_path: Path, golden: Path) -> Path:
    root = tmp_path / "imgs"
    shutil.copytree(golden / "images" / "test", root / "test")
    return root


def test_corrupt_and_missing_images_are_named_and_skipped(golden, tmp_path):
    root = _small_set(tmp_path, golden)
    (root / "test" / "img33_c1.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "test" / "img35_c1.jpg").unlink()
    listfile = tmp_path / "list.txt"
    shutil.copy(golden / "test.txt", listfile)
    report = convert_imageset(root, listfile, tmp_path / "db", resize=(16, 16), workers=2, progress=False)
    assert report.written == 14
    assert report.skipped == [f"{listfile}:2: test/img33_c1.jpg", f"{listfile}:4: test/img35_c1.jpg"]
    keys = [k.decode() for k, _ in _items(tmp_path / "db")]
    assert (
        "00000001_test/img33_c1.jpg" not in keys and keys[1] == "00000002_test/img34_c0.jpg"
    )  # Caffe's gaps
    with pytest.raises(DataError, match=r"list.txt:2: cannot read image .*img33_c1.jpg"):
        convert_imageset(root, listfile, tmp_path / "strict", workers=2, strict=True, progress=False)
    assert not (tmp_path / "strict").exists()


def test_malformed_list_line_names_file_and_line(golden, tmp_path):
    listfile = tmp_path / "list.txt"
    listfile.write_text("test/img32_c0.jpg 0\ntest/img33_c1.jpg\n")
    with pytest.raises(DataError, match=r"list.txt:2: .*no label"):
        convert_imageset(golden / "images", listfile, tmp_path / "db", progress=False)
    listfile.write_text("test/img32_c0.jpg zero\n")
    with pytest.raises(DataError, match=r"list.txt:1: label 'zero'"):
        convert_imageset(golden / "images", listfile, tmp_path / "db", progress=False)
    assert not (tmp_path / "db").exists()


def _boom(job, *rest):
    if job.index == 5:
        raise RuntimeError("worker died")
    return _real_work(job, *rest)


_real_work = imageset._work


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_build_leaves_nothing_under_final_name(golden, tmp_path, monkeypatch, workers):
    monkeypatch.setattr(imageset, "_work", _boom)
    with pytest.raises(RuntimeError, match="worker died"):
        convert_imageset(
            golden / "images", golden / "train.txt", tmp_path / "db", workers=workers, progress=False
        )
    assert os.listdir(tmp_path) == []  # neither the final name nor a temporary sibling is left


def _interrupt(job, *rest):
    if job.index == 3:
        raise KeyboardInterrupt  # Ctrl-C while a decode thread works
    return _real_work(job, *rest)


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_in_a_decode_thread_leaves_nothing_and_restores_opencv_threads(
    golden, tmp_path, monkeypatch, workers
):
    import cv2

    before = cv2.getNumThreads()
    monkeypatch.setattr(imageset, "_work", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        convert_imageset(
            golden / "images", golden / "train.txt", tmp_path / "db", workers=workers, progress=False
        )
    assert cv2.getNumThreads() == before
    assert os.listdir(tmp_path) == []


def _entropy_walk(data: bytes, pos: int) -> int:
    """The marker search spelled out byte by byte: skip FF 00 and FF D0..D7, step over fill FFs."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return -1
        nxt = data[pos + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
            pos += 2
        elif nxt == 0xFF:
            pos += 1
        else:
            return pos


def test_entropy_scan_finds_the_marker_the_byte_walk_finds():
    """The regex scan of entropy-coded data equals the byte walk on 3000 random strings rich in FF runs,
    stuffed bytes and restart markers, from every start position of the short ones."""
    from pixsent.data.jpeg import _skip_entropy

    rng = np.random.RandomState(7)
    alphabet = np.array([0xFF, 0x00, 0xD0, 0xD7, 0xD8, 0xD9, 0xDA, 0x12, 0xFE], np.uint8)
    for n in range(3000):
        data = alphabet[rng.randint(0, len(alphabet), rng.randint(0, 40))].tobytes()
        starts = range(len(data) + 1) if n < 500 else [0]
        for pos in starts:
            assert _skip_entropy(data, pos) == _entropy_walk(data, pos), (data.hex(), pos)


def test_raw_datums_of_real_twitter_images_equal_the_per_file_decoder(shared_data, tmp_path):
    """convert_imageset (2 decode threads, one read per file) stores for 40 real Twitter JPEGs the pixels
    cv2.imread + cv2.resize give, byte for byte."""
    import cv2

    from pixsent.formats.lmdb_io import LMDBReader

    images = shared_data / "twitter" / "images"
    names = sorted(p.name for p in images.glob("*.jpg"))[::32][:40]
    (tmp_path / "list.txt").write_text("".join(f"{n} {i % 2}\n" for i, n in enumerate(names)))
    convert_imageset(
        images, tmp_path / "list.txt", tmp_path / "db", resize=(256, 256), workers=2, progress=False
    )
    with LMDBReader(tmp_path / "db") as db:
        datums = [d for _, d in db.datums()]
    assert len(datums) == len(names)
    for name, datum in zip(names, datums, strict=True):
        img = cv2.resize(
            cv2.imread(str(images / name), cv2.IMREAD_COLOR), (256, 256), interpolation=cv2.INTER_LINEAR
        )
        assert datum.data == img.transpose(2, 0, 1).tobytes(), name
