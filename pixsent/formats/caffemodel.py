"""Binary NetParameter files (.caffemodel): read (upgraded to V2, ``shape`` blobs), write, weights as numpy.

Python protobuf (upb backend) parses messages of any size, so the 217-550 MB models of the paper load
without the 64 MB CodedInputStream limit that Caffe itself had to lift with SetTotalBytesLimit.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import FormatError
from pixsent.formats.atomic import atomic_write_bytes
from pixsent.formats.blob import blob_to_array, to_shape_form
from pixsent.formats.prototxt import parse_net
from pixsent.formats.upgrade import upgrade_net


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    """File contents; a missing file is a FormatError naming it."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise FormatError(f"{path}: file not found") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror})") from None


def upgrade_blobs(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """In place: legacy num/channels/height/width blobs -> ``shape`` blobs with their natural shapes."""
    for layer in net.layer:
        for index, blob in enumerate(layer.blobs):
            to_shape_form(blob, layer.type, index)
    return net


def parse_caffemodel(data: bytes, source: str = "<bytes>") -> caffe_pb2.NetParameter:
    """A NetParameter from binary bytes, upgraded (layers and blobs) to the current format."""
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise FormatError(f"{source}: truncated or not a caffemodel ({exc})") from None
    if not net.layer and not net.layers:
        raise FormatError(f"{source}: truncated or not a caffemodel (no layers in {len(data)} bytes)")
    return upgrade_blobs(upgrade_net(net, source))


def read_caffemodel(path: str | os.PathLike[str]) -> caffe_pb2.NetParameter:
    """Read a .caffemodel (V0, V1 or current) as a current-format NetParameter."""
    return parse_caffemodel(_read_bytes(path), str(path))


def write_caffemodel(net_param: caffe_pb2.NetParameter, path: str | os.PathLike[str]) -> Path:
    """Write ``net_param`` as a binary .caffemodel, atomically."""
    return atomic_write_bytes(path, net_param.SerializeToString())


def weights_of(net: caffe_pb2.NetParameter, source: str = "<net>") -> dict[str, list[np.ndarray]]:
    """Layer name -> float32 parameter arrays (Caffe's order: weights, bias) of layers that have blobs."""
    return {
        layer.name: [blob_to_array(b, source=f"{source}: layer {layer.name!r}") for b in layer.blobs]
        for layer in net.layer
        if len(layer.blobs)
    }


def read_weights(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """The parameters of a .caffemodel by layer name, in natural (current Caffe) shapes."""
    return weights_of(read_caffemodel(path), str(path))


def _looks_binary(data: bytes) -> bool:
    """Heuristic: prototxt is UTF-8 text without NUL bytes; a caffemodel practically never is."""
    head = data[:65536]
    if b"\x00" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(head) - 4  # a multi-byte char cut by the slice is not evidence
    return False


def read_net_binary_or_text(path: str | os.PathLike[str]) -> caffe_pb2.NetParameter:
    """A NetParameter from either a prototxt or a binary caffemodel, chosen by the file's content."""
    data = _read_bytes(path)
    if _looks_binary(data):
        return parse_caffemodel(data, str(path))
    return parse_net(data.decode("utf-8"), str(path))
