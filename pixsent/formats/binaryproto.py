"""Mean images and blob vectors in binary BlobProto files (.binaryproto), and conversion to/from .npy.

Caffe's compute_image_mean writes a BlobProto with the legacy fields num=1, channels, height, width
and the float per-pixel mean; the data transformer reads it back as one C x H x W image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import FormatError
from pixsent.formats.atomic import atomic_path, atomic_write_bytes
from pixsent.formats.blob import array_to_blob, blob_shape, blob_to_array


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    """File contents; a missing file is a FormatError naming it."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise FormatError(f"{path}: file not found") from None


def read_blobproto(path: str | os.PathLike[str]) -> caffe_pb2.BlobProto:
    """One BlobProto from a binary file."""
    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(_read_bytes(path))
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise FormatError(f"{path}: truncated or not a binaryproto ({exc})") from None
    return blob


def read_mean(path: str | os.PathLike[str], expected_shape: Sequence[int] | None = None) -> np.ndarray:
    """The mean image of a .binaryproto as float32 (C, H, W); checks num == 1 and ``expected_shape``."""
    blob = read_blobproto(path)
    array = blob_to_array(blob, source=str(path))
    stored = blob_shape(blob)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise FormatError(f"{path}: a mean must hold one image (num=1), found num={array.shape[0]}")
        array = array[0]
    elif array.ndim != 3:
        raise FormatError(f"{path}: a mean must be 1 x C x H x W or C x H x W, found shape {stored}")
    if expected_shape is not None and tuple(array.shape) != tuple(int(d) for d in expected_shape):
        raise FormatError(
            f"{path}: mean shape {tuple(array.shape)} does not match the expected {tuple(expected_shape)}"
        )
    return array


def mean_to_blob(array_chw: np.ndarray) -> caffe_pb2.BlobProto:
    """A mean BlobProto in compute_image_mean's legacy form (num=1, channels, height, width)."""
    array = np.asarray(array_chw, dtype=np.float32)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"a mean image must be C x H x W, got shape {array.shape}")
    return array_to_blob(array, legacy=True)


def write_mean(array_chw: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a C x H x W mean image as Caffe's compute_image_mean does (legacy dims), atomically."""
    return atomic_write_bytes(path, mean_to_blob(array_chw).SerializeToString())


def load_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """np.load without pickles, with a FormatError for missing, truncated or malformed files."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FormatError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise FormatError(f"{path}: not a .npy array ({exc})") from None


def npy_to_binaryproto(npy: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Convert a (C, H, W) or (1, C, H, W) .npy mean to a .binaryproto."""
    array = load_npy(npy)
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[0] == 1)):
        raise FormatError(f"{npy}: a mean must be C x H x W, found shape {array.shape}")
    return write_mean(array, out)


def binaryproto_to_npy(bp: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Convert a .binaryproto mean to a float32 (C, H, W) .npy, as pycaffe's blobproto_to_array(b)[0]."""
    array = read_mean(bp)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)
    return Path(out)


def read_blobproto_vector(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """The blobs of a BlobProtoVector file as float32 arrays in their stored shapes."""
    vector = caffe_pb2.BlobProtoVector()
    try:
        vector.ParseFromString(_read_bytes(path))
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise FormatError(f"{path}: truncated or not a BlobProtoVector ({exc})") from None
    return [blob_to_array(b, source=f"{path}: blob {i}") for i, b in enumerate(vector.blobs)]


def write_blobproto_vector(
    arrays: Sequence[np.ndarray], path: str | os.PathLike[str], *, legacy=False
) -> Path:
    """Write arrays as a BlobProtoVector, atomically."""
    vector = caffe_pb2.BlobProtoVector()
    for array in arrays:
        vector.blobs.add().CopyFrom(array_to_blob(array, legacy=legacy))
    return atomic_write_bytes(path, vector.SerializeToString())
