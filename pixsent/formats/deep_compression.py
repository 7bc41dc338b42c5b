"""Deep Compression weight files (Han et al.): pruned, codebook-quantised weights of a Caffe net.

The format, as the SqueezeNet v1.0 file (``compressed_SqueezeNet.net``) shows it when every byte is used:
the layers with weights are the net's Convolution and InnerProduct layers in prototxt order. The file starts
with one little-endian uint32 per such layer: n, the number of stored entries. Then, per layer in order:
the codebook (2**b float32, b = 8 for Convolution, 4 for InnerProduct), the bias (num_output float32), the
n codes (b = 8: one byte each; b = 4: two per byte, low nibble first) and ceil(n / 2) bytes of 4-bit gaps
(low nibble first). Entry j sits at flat position p_j = p_(j-1) + gap_j + 1 (p_(-1) = -1) of the weight
blob in C order and takes codebook[code_j]; every other position takes codebook[0]. SqueezeNet has no
InnerProduct layer, so the 4-bit code order is the one part no real file has confirmed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pixsent.errors import FormatError

CODE_BITS = {"Convolution": 8, "InnerProduct": 4}


@dataclass(frozen=True)
class CompressedLayer:
    """What the decoder must know of one layer with weights: its name, type and weight blob shape."""

    name: str
    type: str
    weight_shape: tuple[int, ...]

    @property
    def num_output(self) -> int:
        return int(self.weight_shape[0])


def _nibbles(packed: np.ndarray, count: int) -> np.ndarray:
    """``count`` 4-bit values from bytes, low nibble first."""
    out = np.empty(packed.size * 2, dtype=np.uint8)
    out[0::2] = packed & 0x0F
    out[1::2] = packed >> 4
    return out[:count]


def decode(
    data: bytes, layers: Sequence[CompressedLayer], source: str = "<bytes>"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{layer name: (weights, bias)} as float32 arrays; FormatError naming ``source`` if sizes disagree."""
    for layer in layers:
        if layer.type not in CODE_BITS:
            raise FormatError(f"{source}: layer {layer.name!r} of type {layer.type} has no compressed form")
    header = 4 * len(layers)
    if len(data) < header:
        raise FormatError(f"{source}: {len(data)} bytes, too short for {len(layers)} layer counts")
    counts = np.frombuffer(data, dtype="<u4", count=len(layers))
    pos = header
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for layer, n in zip(layers, counts.tolist()):
        bits = CODE_BITS[layer.type]
        size = int(np.prod(layer.weight_shape))
        code_bytes = n if bits == 8 else math.ceil(n / 2)
        need = 4 * (2**bits) + 4 * layer.num_output + code_bytes + math.ceil(n / 2)
        if pos + need > len(data):
            raise FormatError(
                f"{source}: layer {layer.name!r} needs {need} bytes at offset {pos}, "
                f"the file has {len(data) - pos} left"
            )
        codebook = np.frombuffer(data, dtype="<f4", count=2**bits, offset=pos)
        pos += 4 * (2**bits)
        bias = np.frombuffer(data, dtype="<f4", count=layer.num_output, offset=pos).astype(np.float32)
        pos += 4 * layer.num_output
        raw_codes = np.frombuffer(data, dtype=np.uint8, count=code_bytes, offset=pos)
        codes = raw_codes if bits == 8 else _nibbles(raw_codes, n)
        pos += code_bytes
        gaps = _nibbles(np.frombuffer(data, dtype=np.uint8, count=math.ceil(n / 2), offset=pos), n)
        pos += math.ceil(n / 2)
        positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
        if n and positions[-1] >= size:
            raise FormatError(
                f"{source}: layer {layer.name!r}: entry at position {int(positions[-1])} "
                f"outside its {size} weights {layer.weight_shape}"
            )
        weights = np.full(size, codebook[0], dtype=np.float32)
        weights[positions] = codebook[codes]
        out[layer.name] = (weights.reshape(layer.weight_shape), bias)
    if pos != len(data):
        raise FormatError(f"{source}: {len(data) - pos} bytes left over after the last layer")
    return out
