"""compute_image_mean: the per-pixel mean of every Datum in an LMDB, as Caffe's tool computes it.

Caffe facts (BVLC tools/compute_image_mean.cpp): every datum is decoded first when encoded (imdecode
with the image's own channel count, i.e. IMREAD_UNCHANGED), then its uint8 bytes (or float_data) are
added into a float32 sum, one datum after another; the mean is that sum divided by the count in float32;
all datums must have the size of the first. The result is saved as a BlobProto with the legacy
num=1/channels/height/width fields.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import DataError, FormatError


def datum_pixels(datum: caffe_pb2.Datum, *, where: str = "datum") -> np.ndarray:
    """C x H x W array of a Datum: uint8 for raw/encoded bytes, float32 for float_data."""
    if datum.encoded:
        import cv2

        img = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise FormatError(f"{where}: encoded Datum cannot be decoded")
        from pixsent.data.images import to_chw

        return np.ascontiguousarray(to_chw(img))
    shape = (datum.channels, datum.height, datum.width)
    if datum.data:
        if len(datum.data) != int(np.prod(shape)):
            raise FormatError(f"{where}: Datum has {len(datum.data)} bytes but shape {shape}")
        return np.frombuffer(datum.data, np.uint8).reshape(shape)
    values = np.asarray(datum.float_data, np.float32)
    if values.size != int(np.prod(shape)):
        raise FormatError(f"{where}: Datum has {values.size} floats but shape {shape}")
    return values.reshape(shape)


def _values(db: str | Path):
    """(count, iterator of (key, value)) in key order."""
    from pixsent.formats.lmdb_io import LMDBReader

    reader = LMDBReader(db)
    return len(reader), iter(reader)


def compute_image_mean(db: str | Path, *, progress: bool = True) -> np.ndarray:
    """Mean image (C, H, W) float32 of the LMDB at DB, summed and divided in float32 like Caffe."""
    from tqdm import tqdm

    total, items = _values(db)
    if total == 0:
        raise DataError(f"{db}: database is empty, no mean to compute")
    acc: np.ndarray | None = None
    count = 0
    for key, value in tqdm(
        items, total=total, desc="compute_image_mean", unit="img", disable=not progress, file=sys.stderr
    ):
        datum = caffe_pb2.Datum()
        datum.ParseFromString(value)
        where = f"{db}: key {key.decode(errors='replace')}"
        pixels = datum_pixels(datum, where=where)
        if acc is None:
            acc = np.zeros(pixels.shape, np.float32)
        elif pixels.shape != acc.shape:
            raise DataError(f"{where}: size {pixels.shape} differs from the first datum's {acc.shape}")
        acc += pixels.astype(np.float32)
        count += 1
    assert acc is not None
    return acc / np.float32(count)


def save_mean(mean: np.ndarray, binaryproto: str | Path | None = None, npy: str | Path | None = None) -> None:
    """Write the mean as a legacy-dims BlobProto and/or a float32 .npy (both atomically)."""
    if binaryproto is not None:
        from pixsent.formats.binaryproto import write_mean

        write_mean(mean, binaryproto)
    if npy is not None:
        from pixsent.formats.atomic import atomic_path

        with atomic_path(npy, size=mean.astype(np.float32).nbytes + 128) as tmp, open(tmp, "wb") as fh:
            np.save(fh, mean.astype(np.float32))


def channel_means(mean: np.ndarray) -> list[float]:
    """Per-channel averages (what Caffe logs as mean_value channel [c])."""
    return [float(mean[c].mean(dtype=np.float64)) for c in range(mean.shape[0])]
