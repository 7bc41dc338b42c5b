"""BlobProto <-> numpy: shape and legacy forms, double_data, ShapeEquals, natural shapes."""

from __future__ import annotations

import numpy as np
import pytest

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import FormatError
from pixsent.formats.blob import array_to_blob, blob_to_array, legacy_shape_equals, natural_shape


def test_shape_and_legacy_round_trip():
    arr = np.random.default_rng(0).standard_normal((4, 3, 2)).astype(np.float32)
    blob = array_to_blob(arr)
    assert list(blob.shape.dim) == [4, 3, 2] and not blob.HasField("num")
    np.testing.assert_array_equal(blob_to_array(blob), arr)
    legacy = array_to_blob(arr, legacy=True)
    assert (legacy.num, legacy.channels, legacy.height, legacy.width) == (1, 4, 3, 2)
    assert not legacy.HasField("shape")
    np.testing.assert_array_equal(blob_to_array(legacy)[0], arr)


def test_fast_packed_encoding_matches_protobuf_extend():
    arr = np.linspace(-1, 1, 1000, dtype=np.float32)
    slow = caffe_pb2.BlobProto()
    slow.shape.dim.append(1000)
    slow.data.extend(arr.tolist())
    assert array_to_blob(arr).SerializeToString() == slow.SerializeToString()


def test_double_data_and_count_mismatch():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2])
    blob.double_data.extend([0.5, 1.5])
    out = blob_to_array(blob)
    assert out.dtype == np.float32 and out.tolist() == [0.5, 1.5]
    blob.shape.dim[0] = 3
    with pytest.raises(FormatError, match="expected 3"):
        blob_to_array(blob)


def test_legacy_shape_equals():
    legacy = caffe_pb2.BlobProto(num=1, channels=1, height=10, width=20)
    assert legacy_shape_equals(legacy, (10, 20)) and legacy_shape_equals(legacy, (1, 10, 20))
    assert not legacy_shape_equals(legacy, (20, 10)) and not legacy_shape_equals(legacy, (1, 1, 1, 10, 20))
    shaped = array_to_blob(np.zeros((10, 20)))
    assert legacy_shape_equals(shaped, (10, 20)) and not legacy_shape_equals(shaped, (1, 10, 20))


def test_natural_shapes():
    ip_w = caffe_pb2.BlobProto(num=1, channels=1, height=5, width=7)
    bias = caffe_pb2.BlobProto(num=1, channels=1, height=1, width=5)
    conv_w = caffe_pb2.BlobProto(num=1, channels=3, height=3, width=3)
    assert natural_shape(ip_w, "InnerProduct", 0) == (5, 7)
    assert natural_shape(bias, "InnerProduct", 1) == (5,)
    assert natural_shape(bias, "Convolution", 1) == (5,)
    assert natural_shape(conv_w, "Convolution", 0) == (1, 3, 3, 3)
    assert natural_shape(array_to_blob(np.zeros((1, 1, 5))), "InnerProduct", 1) == (1, 1, 5)
