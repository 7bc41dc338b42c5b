"""Model files that are not caffemodels, turned into caffemodels after download (registry field ``decode``).

``deep_compression``: a Deep Compression ``.net`` file (pixsent.formats.deep_compression) plus the deploy
prototxt it belongs to. The deploy net is set up once (fillers only: the shapes of every weight blob follow
from the net), its parameters are overwritten by the decoded ones, and it is saved as Caffe does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pixsent.errors import FormatError

Decoder = Callable[[Path, Path, Path], Path]
DECODERS: dict[str, Decoder] = {}


def register_decoder(name: str) -> Callable[[Decoder], Decoder]:
    def decorate(fn: Decoder) -> Decoder:
        DECODERS[name] = fn
        return fn

    return decorate


@register_decoder("deep_compression")
def deep_compression_to_caffemodel(
    compressed: str | os.PathLike[str], deploy: str | os.PathLike[str], out: str | os.PathLike[str]
) -> Path:
    """Decode ``compressed`` for the net of ``deploy`` and write the caffemodel ``out`` (atomically)."""
    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine.net import Net
    from pixsent.formats.deep_compression import CompressedLayer, decode

    net = Net(Path(deploy), caffe_pb2.TEST)
    layers = [
        CompressedLayer(layer.name, layer.type_name, tuple(net.params[layer.name][0].shape))
        for layer in net.layers
        if layer.type_name in ("Convolution", "InnerProduct") and net.params.get(layer.name)
    ]
    decoded = decode(Path(compressed).read_bytes(), layers, source=str(compressed))
    for name, (weights, bias) in decoded.items():
        blobs = net.params[name]
        if len(blobs) != 2:
            raise FormatError(
                f"{deploy}: layer {name!r} has {len(blobs)} blobs; a compressed layer has a bias"
            )
        blobs[0].data[...] = weights
        blobs[1].data[...] = bias.reshape(blobs[1].shape)
    saved = net.save(out)
    net.close()
    return saved


def decoded_blobs_equal(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when two caffemodels hold the same layers with bit-identical blobs (for checks and tests)."""
    from pixsent.formats.caffemodel import read_weights

    wa, wb = read_weights(a), read_weights(b)
    if wa.keys() != wb.keys():
        return False
    return all(
        len(wa[k]) == len(wb[k])
        and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(wa[k], wb[k]))
        for k in wa
    )
