"""Data layers: LMDB order and wrap-around with prefetching, transform, data-parallel slices, ImageData."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.net import Net


def data_net(source: str, batch: int, transform: str = "", phase: int = caffe_pb2.TEST, **kw) -> Net:
    text = (
        f'layer {{ name: "d" type: "Data" top: "data" top: "label" transform_param {{ {transform} }} '
        f'data_param {{ source: "{source}" batch_size: {batch} backend: LMDB prefetch: 2 }} }}'
    )
    return Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase, **kw)


@pytest.fixture(scope="module")
def raw(golden):
    """The 16 test datums in key order: (images uint8 N x 3 x 36 x 36, labels)."""
    from pixsent.formats.datum import datum_to_array
    from pixsent.formats.lmdb_io import LMDBReader

    with LMDBReader(golden / "lmdb" / "test_raw") as reader:
        items = [(datum_to_array(d), d.label) for _, d in reader.datums()]
    return np.stack([i for i, _ in items]), np.array([lab for _, lab in items], np.float32)


def test_prefetching_data_layer_wraps_around_in_key_order(golden, raw):
    net = data_net(str(golden / "lmdb" / "test_raw"), 6)
    try:
        seen_x, seen_y = [], []
        for _ in range(4):  # 24 items from 16: wraps once
            net.forward()
            seen_x.append(net.blobs["data"].data.copy())
            seen_y.append(net.blobs["label"].data.copy())
        idx = np.arange(24) % 16
        assert np.array_equal(np.concatenate(seen_x), raw[0][idx].astype(np.float32))
        assert np.array_equal(np.concatenate(seen_y), raw[1][idx])
    finally:
        net.close()


def test_test_phase_centre_crop_and_mean_value(golden, raw):
    transform = "crop_size: 30 mean_value: 100 mean_value: 110 mean_value: 120 scale: 0.5"
    net = data_net(str(golden / "lmdb" / "test_raw"), 4, transform)
    try:
        net.forward()
        mean = np.array([100, 110, 120], np.float32)[:, None, None]
        expect = (raw[0][:4, :, 3:33, 3:33].astype(np.float32) - mean) * np.float32(0.5)
        assert np.array_equal(net.blobs["data"].data, expect)
    finally:
        net.close()


def test_train_phase_random_crop_and_mirror_are_seeded(golden, raw):
    src = str(golden / "lmdb" / "test_raw")
    outs = []
    for _ in range(2):
        net = data_net(src, 16, "crop_size: 30 mirror: true", caffe_pb2.TRAIN, seed=5)
        try:
            net.forward()
            outs.append(net.blobs["data"].data.copy())
        finally:
            net.close()
    assert np.array_equal(outs[0], outs[1])
    # every output is some 30x30 window of its image, possibly mirrored
    mirrored = 0
    for k in range(16):
        img = raw[0][k].astype(np.float32)
        found = None
        for h in range(7):
            for w in range(7):
                win = img[:, h : h + 30, w : w + 30]
                if np.array_equal(win, outs[0][k]):
                    found = "plain"
                elif np.array_equal(win[:, :, ::-1], outs[0][k]):
                    found = "mirror"
        assert found is not None
        mirrored += found == "mirror"
    assert 0 < mirrored < 16


def test_data_parallel_ranks_reproduce_one_process(golden):
    src = str(golden / "lmdb" / "test_raw")
    single = data_net(src, 8, "crop_size: 30 mirror: true", caffe_pb2.TRAIN, seed=11)
    ranks = [
        data_net(src, 8, "crop_size: 30 mirror: true", caffe_pb2.TRAIN, seed=11, rank=r, world_size=2)
        for r in (0, 1)
    ]
    try:
        for _ in range(3):
            single.forward()
            parts = []
            for n in ranks:
                n.forward()
                assert n.blobs["data"].shape[0] == 4
                parts.append(n.blobs["data"].data.copy())
            assert np.array_equal(np.concatenate(parts), single.blobs["data"].data)
    finally:
        for n in [single, *ranks]:
            n.close()


def test_image_data_layer_reads_list_and_resizes(golden, tmp_path):
    import cv2

    lines = (golden / "test.txt").read_text().splitlines()[:3]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    text = (
        'layer { name: "d" type: "ImageData" top: "data" top: "label" '
        f'image_data_param {{ source: "{tmp_path / "list.txt"}" root_folder: "{golden / "images"}/" '
        "batch_size: 2 new_height: 20 new_width: 24 } }"
    )
    net = Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe_pb2.TEST)
    try:
        net.forward()
        net.forward()  # items 3, 1: wraps
        path, label = lines[0].rsplit(" ", 1)
        img = cv2.resize(cv2.imread(str(golden / "images" / path)), (24, 20), interpolation=cv2.INTER_LINEAR)
        assert net.blobs["data"].shape == (2, 3, 20, 24)
        assert np.array_equal(net.blobs["data"].data[1], img.transpose(2, 0, 1).astype(np.float32))
        assert net.blobs["label"].data[1] == float(label)
    finally:
        net.close()


def test_dummy_data_and_net_reshape():
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
    layer { name: "c" type: "Convolution" bottom: "x" top: "c"
            convolution_param { num_output: 2 kernel_size: 3 } }
    layer { name: "dd" type: "DummyData" top: "z"
            dummy_data_param { shape { dim: 2 dim: 2 } data_filler { type: "constant" value: 3 } } }
    """
    net = Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe_pb2.TEST)
    net.forward()
    assert (net.blobs["z"].data == 3).all() and net.blobs["c"].shape == (1, 2, 6, 6)
    net.blobs["x"].reshape(2, 3, 10, 12)
    net.reshape()
    assert net.blobs["c"].shape == (2, 2, 8, 10)
    net.blobs["x"].data[...] = 1.0
    net.forward()
    assert net.blobs["c"].data.shape == (2, 2, 8, 10)
