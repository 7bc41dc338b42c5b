"""Mean .binaryproto files: golden mean equals mean.npy, byte-exact rewrite, ILSVRC npy round trip, errors."""

from __future__ import annotations

import numpy as np
import pytest

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import FormatError
from pixsent.formats.binaryproto import (
    binaryproto_to_npy,
    npy_to_binaryproto,
    read_blobproto_vector,
    read_mean,
    write_blobproto_vector,
    write_mean,
)


def test_golden_mean_equals_npy_exactly(golden):
    mean = read_mean(golden / "mean.binaryproto", expected_shape=(3, 36, 36))
    ref = np.load(golden / "mean.npy")
    assert mean.dtype == np.float32 and mean.shape == (3, 36, 36)
    np.testing.assert_array_equal(mean, ref)
    np.testing.assert_allclose(mean.mean(axis=(1, 2)), [72.8933, 114.2624, 124.4304], atol=1e-4)


def test_golden_mean_round_trips_byte_identically(golden, tmp_path):
    data = (golden / "mean.binaryproto").read_bytes()
    blob = caffe_pb2.BlobProto()
    blob.ParseFromString(data)
    assert blob.SerializeToString() == data
    out = write_mean(read_mean(golden / "mean.binaryproto"), tmp_path / "m.binaryproto")
    assert out.read_bytes() == data  # same legacy num/channels/height/width form as compute_image_mean


def test_ilsvrc_mean_npy_binaryproto_npy(shared_data, tmp_path):
    src = shared_data / "ilsvrc_2012_mean.npy"
    bp = npy_to_binaryproto(src, tmp_path / "ilsvrc.binaryproto")
    back = np.load(binaryproto_to_npy(bp, tmp_path / "back.npy"))
    orig = np.load(src)
    assert back.dtype == np.float32 and back.shape == orig.shape == (3, 256, 256)
    np.testing.assert_array_equal(back, orig.astype(np.float32))  # exact at float32 precision
    np.testing.assert_allclose(back.mean(axis=(1, 2)), [104.0, 116.7, 122.7], atol=0.05)


def test_wrong_shape_names_file_and_both_shapes(golden):
    with pytest.raises(FormatError) as err:
        read_mean(golden / "mean.binaryproto", expected_shape=(3, 256, 256))
    msg = str(err.value)
    assert str(golden / "mean.binaryproto") in msg and "(3, 36, 36)" in msg and "(3, 256, 256)" in msg
    assert "\n" not in msg


def test_mean_with_several_images_is_rejected(tmp_path):
    blob = caffe_pb2.BlobProto(num=2, channels=1, height=1, width=2)
    blob.data.extend([1, 2, 3, 4])
    path = tmp_path / "two.binaryproto"
    path.write_bytes(blob.SerializeToString())
    with pytest.raises(FormatError, match="num=2"):
        read_mean(path)


def test_blobproto_vector_round_trip(tmp_path):
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((1, 2, 2, 2), np.float32)]
    path = write_blobproto_vector(arrays, tmp_path / "v.binaryproto")
    back = read_blobproto_vector(path)
    assert [b.shape for b in back] == [(2, 3), (1, 2, 2, 2)]
    for a, b in zip(arrays, back):
        np.testing.assert_array_equal(a, b)
