"""LMDB reader on golden databases, Datum decoding, and the atomic LMDBWriter."""

from __future__ import annotations

import numpy as np
import pytest

from pixsent.errors import DataError, FormatError
from pixsent.formats.datum import array_to_datum, datum_to_array, encoded_datum, parse_datum
from pixsent.formats.lmdb_io import LMDBReader, LMDBWriter


def list_lines(path):
    return [line.split() for line in path.read_text().splitlines()]


def test_train_raw_keys_labels_and_shapes(golden):
    lines = list_lines(golden / "train.txt")
    with LMDBReader(golden / "lmdb/train_raw") as reader:
        assert len(reader) == 32
        assert reader.keys() == [f"{i:08d}_{path}".encode() for i, (path, _) in enumerate(lines)]
        for (_key, datum), (_, label) in zip(reader.datums(), lines):
            assert datum.label == int(label) and not datum.encoded
            pixels = datum_to_array(datum)
            assert pixels.dtype == np.uint8 and pixels.shape == (3, 36, 36)


def test_train_encoded_decodes_to_train_raw(golden):
    with LMDBReader(golden / "lmdb/train_raw") as raw, LMDBReader(golden / "lmdb/train_encoded") as enc:
        assert raw.keys() == enc.keys()
        for (_k1, d1), (_k2, d2) in zip(raw.datums(), enc.datums()):
            assert d2.encoded and (d2.channels, d2.height, d2.width) == (0, 0, 0)
            np.testing.assert_array_equal(datum_to_array(d2), datum_to_array(d1))  # exact, 0 of 3888 differ


def test_mean_of_train_raw_equals_golden_mean(golden):
    with LMDBReader(golden / "lmdb/train_raw") as reader:
        total = sum(datum_to_array(d).astype(np.float32) for _, d in reader.datums())
    np.testing.assert_array_equal(total / np.float32(32), np.load(golden / "mean.npy"))


def test_cycle_wraps_to_the_first_key(golden):
    with LMDBReader(golden / "lmdb/test_raw") as reader:
        stream = reader.cycle()
        keys = [next(stream)[0] for _ in range(40)]
        assert keys[:16] == reader.keys() and keys[16:32] == keys[:16] and keys[32] == keys[0]


def test_missing_and_not_an_lmdb(tmp_path):
    with pytest.raises(DataError, match="LMDB not found"):
        LMDBReader(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="not an LMDB"):
        LMDBReader(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk/data.mdb").write_bytes(b"not lmdb" * 1000)
    with pytest.raises(FormatError, match="not an LMDB"):
        LMDBReader(tmp_path / "junk")


def test_writer_round_trip_and_map_growth(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (3, 64, 64), dtype=np.uint8) for _ in range(30)]
    target = tmp_path / "db"
    with LMDBWriter(target, commit_every=7, map_size=64 << 10) as writer:  # forces several map doublings
        for i, img in enumerate(images):
            writer.put(f"{i:08d}_x".encode(), array_to_datum(img, i % 2).SerializeToString())
        assert not target.exists()
    assert sorted(p.name for p in target.iterdir()) == ["data.mdb", "lock.mdb"]
    with LMDBReader(target) as reader:
        assert len(reader) == 30
        for (key, datum), img, i in zip(reader.datums(), images, range(30)):
            assert key == f"{i:08d}_x".encode() and datum.label == i % 2
            np.testing.assert_array_equal(datum_to_array(datum), img)
    assert [p.name for p in tmp_path.iterdir()] == ["db"]  # no temporary folder left behind


def test_writer_that_fails_leaves_nothing(tmp_path):
    target = tmp_path / "db"
    with pytest.raises(RuntimeError), LMDBWriter(target) as writer:
        writer.put(b"a", b"1")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_to_overwrite_unless_asked(tmp_path):
    target = tmp_path / "db"
    with LMDBWriter(target) as writer:
        writer.put(b"a", b"old")
    with pytest.raises(DataError, match="already exists"):
        LMDBWriter(target)
    with LMDBWriter(target, overwrite=True) as writer:
        writer.put(b"b", b"new")
    with LMDBReader(target) as reader:
        assert list(reader) == [(b"b", b"new")]
    assert [p.name for p in tmp_path.iterdir()] == ["db"]


def test_discard(tmp_path):
    writer = LMDBWriter(tmp_path / "db")
    writer.put(b"a", b"1")
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def test_datum_forms():
    img = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = parse_datum(array_to_datum(img, 7).SerializeToString())
    assert (datum.channels, datum.height, datum.width, datum.label) == (2, 3, 4, 7)
    np.testing.assert_array_equal(datum_to_array(datum), img)
    floats = array_to_datum(img.astype(np.float32) / 2, 1)
    assert not floats.data and datum_to_array(floats).dtype == np.float32
    np.testing.assert_array_equal(datum_to_array(floats), img / 2)


def test_encoded_datum_colour_and_gray():
    import cv2

    bgr = np.random.default_rng(2).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", bgr)
    datum = encoded_datum(png.tobytes(), 1)
    assert datum.encoded and datum.channels == 0
    np.testing.assert_array_equal(datum_to_array(datum), bgr.transpose(2, 0, 1))
    gray = datum_to_array(datum, is_color=False)
    assert gray.shape == (1, 5, 6)
    with pytest.raises(FormatError, match="could not be decoded"):
        datum_to_array(encoded_datum(b"garbage"))
