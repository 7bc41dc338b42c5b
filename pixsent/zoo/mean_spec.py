"""The ``--mean`` option of predict, maps and layers: "B,G,R" values, a .npy or a .binaryproto mean.

One parser, so every command rejects a malformed mean the same way (naming the option or the file and
what is wrong) before any image is processed, instead of failing later in a numpy broadcast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pixsent.errors import DataError, FormatError

CHANNELS = (1, 3)  # gray or BGR
NPY_MAGIC = b"\x93NUMPY"


def _values(spec: str) -> np.ndarray:
    """'B,G,R' -> float32 (3,) (or one value for gray input)."""
    try:
        values = np.array([float(v) for v in spec.split(",")], dtype=np.float32)
    except ValueError:
        raise DataError(
            f"--mean {spec!r}: expected numbers B,G,R (e.g. 104,117,123) or a mean file"
        ) from None
    if values.size not in CHANNELS:
        raise DataError(f"--mean {spec!r}: expected 3 numbers B,G,R, got {values.size}")
    return values


def parse_mean(spec: str) -> np.ndarray:
    """float32 (C,) per-channel values or a (C, H, W) mean image, C in 1 or 3, from a --mean value."""
    if "," in spec:
        return _values(spec)
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"{spec}: mean file not found")
    with open(path, "rb") as fh:
        is_npy = fh.read(len(NPY_MAGIC)) == NPY_MAGIC
    if is_npy:
        from pixsent.formats.binaryproto import load_npy

        mean = load_npy(path).astype(np.float32, copy=False)
    elif path.suffix.lower() == ".npy":
        raise FormatError(f"{path}: not a .npy file (no NUMPY header)")
    else:  # .binaryproto, or any other name holding a BlobProto
        from pixsent.formats.binaryproto import read_mean

        mean = read_mean(path)
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim not in (1, 3) or mean.shape[0] not in CHANNELS:
        raise FormatError(
            f"{path}: a mean must be C x H x W or C values (C = 3, BGR), found shape {mean.shape}"
        )
    return mean


def channel_mean(spec: str) -> np.ndarray:
    """float32 (C,) per-channel values of a --mean (a mean image averaged per channel, as pycaffe does)."""
    mean = parse_mean(spec)
    return mean.reshape(mean.shape[0], -1).mean(1).astype(np.float32) if mean.ndim == 3 else mean
