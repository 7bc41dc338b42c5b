"""Caffe's Datum (an LMDB value): raw C x H x W uint8 BGR pixels, float_data, or encoded image bytes.

Encoded datums (convert_imageset --encoded) hold JPEG/PNG bytes in ``data`` with channels/height/width
left at 0; Caffe decodes them with OpenCV (colour or grayscale by ``is_color``) and transposes HWC to CHW.
"""

from __future__ import annotations

import numpy as np
from google.protobuf.message import DecodeError

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import FormatError


def parse_datum(data: bytes, source: str = "<datum>") -> caffe_pb2.Datum:
    """A Datum from its serialized bytes."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise FormatError(f"{source}: not a serialized Datum ({exc})") from None
    return datum


def decode_image(buf: bytes, is_color: bool = True, source: str = "<datum>") -> np.ndarray:
    """OpenCV-decode image bytes to uint8 C x H x W (BGR for colour, one channel for grayscale)."""
    import cv2

    flag = cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), flag)
    if image is None:
        raise FormatError(f"{source}: encoded datum could not be decoded as an image ({len(buf)} bytes)")
    if image.ndim == 2:
        image = image[:, :, None]
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def datum_to_array(datum: caffe_pb2.Datum, is_color: bool = True, source: str = "<datum>") -> np.ndarray:
    """Pixels of a Datum as (C, H, W): uint8 from ``data`` or encoded bytes, float32 from ``float_data``."""
    if datum.encoded:
        return decode_image(datum.data, is_color, source)
    shape = (datum.channels, datum.height, datum.width)
    count = int(np.prod(shape))
    if datum.data:
        values = np.frombuffer(datum.data, dtype=np.uint8)
    else:
        values = np.asarray(datum.float_data, dtype=np.float32)
    if values.size != count:
        raise FormatError(f"{source}: datum of shape {shape} holds {values.size} values, expected {count}")
    return values.reshape(shape).copy()


def array_to_datum(chw: np.ndarray, label: int = 0) -> caffe_pb2.Datum:
    """A raw Datum from a (C, H, W) array: uint8 goes to ``data``, any other dtype to ``float_data``."""
    arr = np.asarray(chw)
    if arr.ndim != 3:
        raise ValueError(f"a datum holds a C x H x W array, got shape {arr.shape}")
    datum = caffe_pb2.Datum(channels=arr.shape[0], height=arr.shape[1], width=arr.shape[2], label=int(label))
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float32).ravel().tolist())
    return datum


def encoded_datum(image_bytes: bytes, label: int = 0) -> caffe_pb2.Datum:
    """An encoded Datum (file bytes, ``encoded: true``; channels/height/width left unset, as Caffe does)."""
    return caffe_pb2.Datum(data=bytes(image_bytes), label=int(label), encoded=True)
