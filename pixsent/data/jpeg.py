"""Is a JPEG file complete? A walk over its markers to the end-of-image marker (EOI, FF D9).

libjpeg decodes a file cut short without an error: it warns "Premature end of JPEG file" (on stderr,
without the file's name), fills the missing rows grey and cv::imread returns the image, so Caffe's
convert_imageset would store it. The walk below finds the same condition: the data ends before EOI.
Segments are skipped by their length (so an EXIF thumbnail inside APP1 is not mistaken for the image),
entropy-coded data after each SOS is scanned for the next marker (FF 00 is a stuffed byte, FF D0..D7 a
restart marker), and whatever follows EOI is ignored, as libjpeg ignores it.
"""

from __future__ import annotations

import os
import re

SOI, EOI, SOS = 0xD8, 0xD9, 0xDA
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RST0..RST7 carry no length


def is_jpeg(head: bytes) -> bool:
    """True when the bytes start with a JPEG start-of-image marker."""
    return head[:3] == b"\xff\xd8\xff"


# In entropy-coded data a marker is FF followed by anything but 00 (a stuffed byte), D0..D7 (a restart
# marker) or another FF (a fill byte; the marker starts at the last FF): one C-level regex search per scan.
_MARKER_AFTER_ENTROPY = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _skip_entropy(data: bytes, pos: int) -> int:
    """Index of the FF of the first marker after entropy-coded data starting at ``pos`` (-1 at the end)."""
    found = _MARKER_AFTER_ENTROPY.search(data, pos)
    return -1 if found is None else found.start()


def jpeg_complete(data: bytes) -> bool:
    """True when the JPEG ``data`` reaches its EOI marker (a file cut short does not)."""
    n = len(data)
    pos = 2
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0:
            return False
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            return False
        marker = data[pos]
        pos += 1
        if marker == EOI:
            return True
        if marker in _STANDALONE or marker == 0x00:
            continue
        if pos + 2 > n:
            return False
        pos += int.from_bytes(data[pos : pos + 2], "big")
        if pos > n:
            return False
        if marker == SOS:
            pos = _skip_entropy(data, pos)
            if pos < 0:
                return False


def truncated_jpeg(path: str | os.PathLike[str]) -> bool:
    """True for a JPEG file (by its first bytes, whatever its name) that ends before its EOI marker."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return False  # unreadable files are reported by the decoder
    return is_jpeg(data) and not jpeg_complete(data)
