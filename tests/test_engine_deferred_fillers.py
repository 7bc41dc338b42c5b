"""Fillers of layers a caffemodel overwrites are deferred (CaffeRng.defer): the stream still stands where
Caffe's does whenever it is used or read, values come from the weights, and reseeding drops the draws."""

from __future__ import annotations

import numpy as np
import pytest

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine import rng as caffe_rng
from pixsent.engine.net import Net
from pixsent.errors import NetError

PROTO = """name: "d"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 }
  bias_filler { type: "constant" value: 0.2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "c" top: "y"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "ip2" type: "InnerProduct" bottom: "y" top: "z"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
"""


@pytest.fixture()
def files(tmp_path):
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(PROTO)
    caffe_rng.set_random_seed(99)
    full = tmp_path / "full.caffemodel"
    Net(str(proto), caffe_pb2.TEST).save(full)
    part = caffe_pb2.NetParameter()
    part.ParseFromString(full.read_bytes())
    del part.layer[-1]  # ip2 left out: the net must fill it itself
    partial = tmp_path / "partial.caffemodel"
    partial.write_bytes(part.SerializeToString())
    return proto, full, partial


def _eager(proto, weights) -> tuple[Net, np.ndarray]:
    """What Caffe does: fill every layer, then copy the weights; the stream state right after."""
    caffe_rng.set_random_seed(1701)
    net = Net(str(proto), caffe_pb2.TEST)
    net.copy_trained_layers_from(str(weights))
    return net, caffe_rng.current().get_state()


@pytest.mark.parametrize("which", ["full", "partial"])
def test_deferred_fillers_leave_the_stream_and_values_as_caffe(files, which):
    proto, full, partial = files
    weights = full if which == "full" else partial
    ref, state = _eager(proto, weights)
    caffe_rng.set_random_seed(1701)
    net = Net(str(proto), caffe_pb2.TEST, weights=str(weights))
    for name in ("conv", "ip", "ip2"):
        for a, b in zip(net.params[name], ref.params[name]):
            assert np.array_equal(a.data, b.data), name  # exact: copied or drawn from the same stream
    # read or used afterwards, the stream is where Caffe's filling left it
    assert np.array_equal(caffe_rng.current().get_state(), state)
    caffe_rng.set_random_seed(1701)
    Net(str(proto), caffe_pb2.TEST, weights=str(weights))
    nxt = caffe_rng.current().raw(3)
    _eager(proto, weights)
    assert np.array_equal(nxt, caffe_rng.current().raw(3))


def test_fully_covered_net_draws_nothing_until_the_stream_is_used(files):
    proto, full, _ = files
    caffe_rng.set_random_seed(1701)
    Net(str(proto), caffe_pb2.TEST, weights=str(full))
    g = caffe_rng.current()
    assert g._deferred, "the fillers of a net loaded from weights should wait"
    caffe_rng.set_random_seed(5)  # a reseed makes them moot: they never run
    assert not g._deferred
    assert np.array_equal(g.raw(4), caffe_rng.CaffeRng(5).raw(4))


def test_unknown_filler_is_still_an_error_at_construction(files, tmp_path):
    proto, full, _ = files
    bad = tmp_path / "bad.prototxt"
    bad.write_text(PROTO.replace('type: "xavier"', 'type: "zigzag"'))
    with pytest.raises(NetError, match="zigzag"):
        Net(str(bad), caffe_pb2.TEST, weights=str(full))


@pytest.mark.parametrize(
    "filler",
    [
        dict(type="gaussian", std=0.01),
        dict(type="xavier"),
        dict(type="msra"),
        dict(type="uniform", min=-1, max=2),
        dict(type="positive_unitball"),
        dict(type="gaussian", std=0.01, sparse=3),
        dict(type="constant", value=2),
    ],
)
def test_advance_moves_the_stream_as_far_as_the_fill(filler):
    """What a shared or overwritten parameter draws, chunk by chunk (fc6's 37.7 M values span 36 chunks)."""
    from pixsent.engine.fillers import advance, fill
    from pixsent.engine.rng import CaffeRng

    p = caffe_pb2.FillerParameter(**filler)
    for shape in ((4096, 9216), (7, 5, 3, 3)):
        a, b = CaffeRng(1701), CaffeRng(1701)
        fill(shape, p, a)
        advance(shape, p, b)
        assert np.array_equal(a.get_state(), b.get_state()), shape
