"""Caffemodel reading (current and V1), natural weight shapes, lossless write-back, errors, large files."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import FormatError
from pixsent.formats.blob import array_to_blob
from pixsent.formats.caffemodel import (
    read_caffemodel,
    read_net_binary_or_text,
    read_weights,
    weights_of,
    write_caffemodel,
)
from pixsent.formats.prototxt import read_net


def expected_param_shapes(net: caffe_pb2.NetParameter) -> dict[str, list[tuple[int, ...]]]:
    """Parameter shapes implied by a prototxt: propagate blob shapes through Input/Conv/Pool/IP layers."""
    shapes: dict[str, tuple[int, ...]] = {}
    params: dict[str, list[tuple[int, ...]]] = {}
    for layer in net.layer:
        if layer.type == "Input":
            for top, shape in zip(layer.top, layer.input_param.shape):
                shapes[top] = tuple(shape.dim)
            continue
        n, c, *spatial = shapes[layer.bottom[0]]
        if layer.type == "Convolution":
            p = layer.convolution_param
            k, s, pad = p.kernel_size[0], (p.stride or [1])[0], (p.pad or [0])[0]
            params[layer.name] = [(p.num_output, c // p.group, k, k), (p.num_output,)]
            out = (n, p.num_output, *[(d + 2 * pad - k) // s + 1 for d in spatial])
        elif layer.type == "Pooling":
            p = layer.pooling_param
            out = (n, c, *[math.ceil((d + 2 * p.pad - p.kernel_size) / p.stride) + 1 for d in spatial])
        elif layer.type == "InnerProduct":
            p = layer.inner_product_param
            params[layer.name] = [(p.num_output, c * math.prod(spatial)), (p.num_output,)]
            out = (n, p.num_output)
        else:  # ReLU, LRN, Dropout, Softmax keep the shape
            out = (n, c, *spatial)
        shapes[layer.top[0]] = out
    return params


def test_current_and_v1_caffemodels_read_identically(golden):
    current = read_weights(golden / "mini_caffenet/weights.caffemodel")
    v1 = read_weights(golden / "mini_caffenet/weights_v1.caffemodel")
    assert list(current) == list(v1) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    for name in current:
        assert len(current[name]) == len(v1[name]) == 2
        for a, b in zip(current[name], v1[name]):
            assert a.dtype == b.dtype == np.float32
            assert a.shape == b.shape
            np.testing.assert_array_equal(a, b)  # exact: same float32 values


def test_weight_shapes_match_the_deploy_prototxt(golden):
    expected = expected_param_shapes(read_net(golden / "mini_caffenet/deploy.prototxt"))
    assert expected["conv2"][0] == (32, 8, 5, 5) and expected["fc6"][0] == (64, 32 * 6 * 6)
    for model in ("weights.caffemodel", "weights_v1.caffemodel"):
        weights = read_weights(golden / "mini_caffenet" / model)
        assert {k: [w.shape for w in v] for k, v in weights.items()} == expected


def test_v1_model_is_upgraded_to_layer_form(golden):
    net = read_caffemodel(golden / "mini_caffenet/weights_v1.caffemodel")
    assert len(net.layers) == 0 and not net.input and not net.input_dim
    assert net.layer[0].type == "Input" and list(net.layer[0].input_param.shape[0].dim) == [2, 3, 227, 227]
    types = {la.name: la.type for la in net.layer}
    assert types["conv1"] == "Convolution" and types["fc6"] == "InnerProduct" and types["norm1"] == "LRN"
    assert types["prob"] == "Softmax" and types["drop6"] == "Dropout" and types["pool1"] == "Pooling"
    conv1 = next(la for la in net.layer if la.name == "conv1")
    assert [(p.lr_mult, p.decay_mult) for p in conv1.param] == [(1, 1), (2, 0)]
    assert conv1.convolution_param.num_output == 16
    for layer in net.layer:
        for blob in layer.blobs:
            assert blob.HasField("shape") and not blob.HasField("num")


@pytest.mark.parametrize("model", ["weights.caffemodel", "weights_v1.caffemodel"])
def test_write_back_is_lossless(golden, tmp_path, model):
    net = read_caffemodel(golden / "mini_caffenet" / model)
    out = write_caffemodel(net, tmp_path / "out.caffemodel")
    again = read_caffemodel(out)
    assert again == net
    ref = read_weights(golden / "mini_caffenet/weights.caffemodel")
    for name, arrays in weights_of(again).items():
        for a, b in zip(arrays, ref[name]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "name",
    [
        "mini_caffenet/weights.caffemodel",
        "mini_caffenet/weights_v1.caffemodel",
        "mini_caffenet/fullconv.caffemodel",
        "solver_run/init.caffemodel",
        "solver_run/snap_iter_10.caffemodel",
        "solver_run/snap_iter_20.caffemodel",
        "solver_types/Adam_iter_10.caffemodel",
    ],
)
def test_golden_caffemodels_round_trip_byte_identical(golden, name):
    data = (golden / name).read_bytes()
    net = caffe_pb2.NetParameter()
    net.ParseFromString(data)
    assert net.SerializeToString() == data


def test_truncated_caffemodel_is_a_one_line_format_error(golden, tmp_path):
    data = (golden / "mini_caffenet/weights.caffemodel").read_bytes()
    bad = tmp_path / "cut.caffemodel"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError) as err:
        read_caffemodel(bad)
    msg = str(err.value)
    assert msg.startswith(f"{bad}: truncated or not a caffemodel") and "\n" not in msg


def test_not_a_caffemodel_and_missing_file(golden, tmp_path):
    with pytest.raises(FormatError, match="not a caffemodel"):
        read_caffemodel(golden / "mean.binaryproto")
    with pytest.raises(FormatError, match="file not found"):
        read_caffemodel(tmp_path / "absent.caffemodel")


def test_binary_or_text_detection(golden):
    text = read_net_binary_or_text(golden / "mini_caffenet/deploy.prototxt")
    binary = read_net_binary_or_text(golden / "mini_caffenet/weights.caffemodel")
    assert [la.name for la in text.layer] == [la.name for la in binary.layer]
    assert len(binary.layer[1].blobs) == 2 and len(text.layer[1].blobs) == 0


READ_AND_MEASURE = """
import sys
from pixsent.formats.caffemodel import read_weights

def high_water_kib():  # VmHWM is per address space (reset by exec), unlike ru_maxrss which children inherit
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

base = high_water_kib()
weights = read_weights(sys.argv[1])
w = weights["fc_big"][0]
print((high_water_kib() - base) * 1024, w.shape, float(w[4999, 4999]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for peak memory")
def test_caffemodel_larger_than_64mb_loads_with_modest_memory(tmp_path):
    """A 100 MB model (over the classic 64 MB protobuf limit) loads in a fresh process; peak RSS < 3x file."""
    net = caffe_pb2.NetParameter(name="big")
    layer = net.layer.add(name="fc_big", type="InnerProduct")
    weights = np.arange(25_000_000, dtype=np.float32).reshape(5000, 5000) * np.float32(1e-3)
    layer.blobs.add().CopyFrom(array_to_blob(weights))
    layer.blobs.add().CopyFrom(array_to_blob(np.ones(5000, np.float32)))
    path = write_caffemodel(net, tmp_path / "big.caffemodel")
    size = path.stat().st_size
    assert size > 64 << 20
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run(
        [sys.executable, "-c", READ_AND_MEASURE, str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.split(maxsplit=1)
    growth = int(out[0])
    assert out[1].strip() == f"(5000, 5000) {float(weights[4999, 4999])}"
    assert growth < 3 * size, f"peak memory grew by {growth / size:.2f}x the file size"
