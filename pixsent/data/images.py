"""Decode and resize images exactly as Caffe's ReadImageToCVMat / ReadImageToDatum do, with OpenCV.

Facts from BVLC Caffe (src/caffe/util/io.cpp): images are read with cv::imread in COLOR (3-channel BGR)
or GRAYSCALE mode; they are resized with cv::resize to (width, height) using the default bilinear
interpolation only when BOTH resize sizes are positive; a raw Datum stores the pixels channel-major
(C x H x W, BGR) as bytes. With an encoding requested, the ORIGINAL file bytes are stored unchanged
when no resize is asked, the decoded channel count matches the colour mode and the file extension
matches the encoding (`jpg` also matches `.jpeg`); otherwise the decoded (resized) image is re-encoded
with cv::imencode('.<encoding>'). Encoded Datums carry only data, label and encoded=true.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pixsent.caffe.proto import caffe_pb2


@dataclass(frozen=True)
class ImageOptions:
    """How convert_imageset turns a file into a Datum (Caffe's flags)."""

    height: int = 0
    width: int = 0
    gray: bool = False
    encoding: str = ""  # '' = raw pixels; else the cv2.imencode type ('png', 'jpg', ...)

    @property
    def resizes(self) -> bool:
        return self.height > 0 and self.width > 0


def read_image(path: str | Path, height: int = 0, width: int = 0, gray: bool = False) -> np.ndarray | None:
    """Return H x W x 3 BGR (or H x W gray) uint8, resized when both sizes > 0; None if unreadable."""
    flag = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    return _resized(cv2.imread(str(path), flag), height, width)


def decode_image(data: bytes, height: int = 0, width: int = 0, gray: bool = False) -> np.ndarray | None:
    """read_image for a file's bytes already in memory (cv::imdecode: the same decoders and flags)."""
    flag = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    return _resized(cv2.imdecode(np.frombuffer(data, np.uint8), flag), height, width)


def _resized(img: np.ndarray | None, height: int, width: int) -> np.ndarray | None:
    if img is not None and height > 0 and width > 0:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    return img


def to_chw(img: np.ndarray) -> np.ndarray:
    """H x W x C (or H x W) -> C x H x W uint8 view, Caffe's Datum pixel order (``tobytes`` copies it once,
    in that order)."""
    if img.ndim == 2:
        img = img[:, :, None]
    return img.transpose(2, 0, 1)


def unreadable_reason(path: str | Path) -> str:
    """Why ``image_to_datum`` gave nothing for ``path``: missing, a truncated JPEG, or not decodable."""
    from pixsent.data.jpeg import truncated_jpeg

    if not Path(path).is_file():
        return "file not found"
    if truncated_jpeg(path):
        return "truncated JPEG (the data ends before its end-of-image marker)"
    return "OpenCV cannot decode it"


def extension_matches(filename: str, encoding: str) -> bool:
    """Caffe's matchExt: the file's extension equals the encoding ('jpg' also accepts 'jpeg')."""
    ext = Path(filename).suffix.lower().lstrip(".")
    enc = encoding.lower().lstrip(".")
    return ext == enc or (enc == "jpg" and ext == "jpeg")


def guess_encoding(filename: str) -> str:
    """convert_imageset's fallback when --encoded is given without --encode_type: the file's extension."""
    return Path(filename).suffix.lower().lstrip(".")


def image_to_datum(path: str | Path, label: int, opts: ImageOptions) -> caffe_pb2.Datum | None:
    """ReadImageToDatum: a Datum for one image file, or None when it cannot be read, OpenCV cannot decode
    it or it is a JPEG cut short (which OpenCV would decode with grey rows; see pixsent.data.jpeg). The
    file is read once: the truncation check, the decoder and an encoded Datum share its bytes."""
    from pixsent.data.jpeg import is_jpeg, jpeg_complete

    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if is_jpeg(data) and not jpeg_complete(data):
        return None
    img = decode_image(data, opts.height, opts.width, opts.gray)
    if img is None:
        return None
    datum = caffe_pb2.Datum()
    if opts.encoding:
        channels = 1 if img.ndim == 2 else img.shape[2]
        if (
            (channels == 3) == (not opts.gray)
            and not opts.resizes
            and extension_matches(str(path), opts.encoding)
        ):
            datum.data = data
        else:
            ok, buf = cv2.imencode("." + opts.encoding.lstrip("."), img)
            if not ok:
                return None
            datum.data = buf.tobytes()
        datum.label = label
        datum.encoded = True
        return datum
    chw = to_chw(img)
    datum.channels, datum.height, datum.width = chw.shape
    datum.data = chw.tobytes()
    datum.label = label
    datum.encoded = False
    return datum
