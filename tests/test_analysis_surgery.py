"""Net surgery against the golden fully convolutional mini CaffeNet (pycaffe net surgery in real Caffe)."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from pixsent.analysis import surgery as surg
from pixsent.caffe.proto import caffe_pb2
from pixsent.cli import main
from pixsent.formats.blob import blob_to_array
from pixsent.formats.caffemodel import read_caffemodel
from pixsent.formats.prototxt import read_net


@pytest.fixture(scope="module")
def mini(golden):
    return golden / "mini_caffenet"


def _layers(path):
    net = caffe_pb2.NetParameter()
    text_format.Parse(path.read_text(), net)
    return net.layer


def test_surgery_weights_equal_golden(mini, tmp_path):
    res = surg.surgery(mini / "deploy.prototxt", mini / "weights.caffemodel", tmp_path, size=451)
    ours = read_caffemodel(res.caffemodel)
    gold = read_caffemodel(mini / "fullconv.caffemodel")
    assert [(l.name, l.type) for l in ours.layer] == [(l.name, l.type) for l in gold.layer]
    for a, b in zip(ours.layer, gold.layer):
        assert len(a.blobs) == len(b.blobs), a.name
        for x, y in zip(a.blobs, b.blobs):
            assert list(x.shape.dim) == list(y.shape.dim), a.name
            np.testing.assert_array_equal(blob_to_array(x), blob_to_array(y))  # tolerance 0
    # the whole file is byte for byte what pycaffe's net.save wrote
    assert res.caffemodel.read_bytes() == (mini / "fullconv.caffemodel").read_bytes()


def test_surgery_prototxt_matches_golden(mini, tmp_path):
    res = surg.surgery(mini / "deploy.prototxt", mini / "weights.caffemodel", tmp_path, size=451)
    ours, gold = _layers(res.prototxt), _layers(mini / "fullconv.prototxt")
    assert [l.name for l in ours] == [l.name for l in gold]
    for a, b in zip(ours, gold):
        assert (a.type, list(a.bottom), list(a.top)) == (b.type, list(b.bottom), list(b.top)), a.name
        if a.type == "Convolution":
            assert a.convolution_param.num_output == b.convolution_param.num_output
            assert list(a.convolution_param.kernel_size) == list(b.convolution_param.kernel_size)
        if a.type == "Input":
            assert list(a.input_param.shape[0].dim) == [1, 3, 451, 451]
    assert [c.new_name for c in res.conversions.values()] == ["fc6-conv", "fc7-conv", "fc8-conv"]


def test_surgery_from_v1_weights(mini, tmp_path):
    """Old-format weights (V1 layers, legacy 4-d blobs) give the same current-format caffemodel."""
    res = surg.surgery(mini / "deploy.prototxt", mini / "weights_v1.caffemodel", tmp_path, size=451)
    assert res.caffemodel.read_bytes() == (mini / "fullconv.caffemodel").read_bytes()


def test_shapes_give_8x8_map_at_451(mini):
    full = surg.fully_convolutional(read_net(mini / "deploy.prototxt"), size=451)
    shapes = surg.blob_shapes(surg.deploy_layers(full.net))
    assert shapes["pool5"] == (1, 32, 13, 13)
    assert shapes["prob"] == (1, 3, 8, 8)
    at227 = surg.blob_shapes(surg.deploy_layers(read_net(mini / "deploy.prototxt")))
    assert at227["pool5"] == (2, 32, 6, 6) and at227["prob"] == (2, 3)


def test_non_square_and_ceil_pooling_shapes():
    net = caffe_pb2.NetParameter()
    text_format.Parse(
        'layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 dim: 3 dim: 36 dim: 50 } } }\n'
        'layer { name: "p" type: "Pooling" bottom: "d" top: "p"\n'
        "  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }\n"
        'layer { name: "ip" type: "InnerProduct" bottom: "p" top: "ip"\n'
        "  inner_product_param { num_output: 4 } }",
        net,
    )
    full = surg.fully_convolutional(net)
    conv = full.net.layer[-1]
    assert conv.name == "ip-conv" and (conv.convolution_param.kernel_h, conv.convolution_param.kernel_w) == (
        18,
        25,
    )


def test_cli_surgery(mini, tmp_path, capsys):
    rc = main(
        [
            "surgery",
            "--weights",
            str(mini / "weights.caffemodel"),
            "--model",
            str(mini / "deploy.prototxt"),
            "--out",
            str(tmp_path),
            "--size",
            "451",
        ]
    )
    assert rc == 0
    assert "fc6 -> fc6-conv: 64x32x6x6" in capsys.readouterr().out
    assert (tmp_path / "weights_conv.caffemodel").is_file()


def test_missing_weights_is_a_net_error(mini, tmp_path):
    from pixsent.errors import NetError

    other = caffe_pb2.NetParameter()
    other.layer.add(name="unrelated", type="InnerProduct").blobs.add().shape.dim.extend([0])
    path = tmp_path / "other.caffemodel"
    path.write_bytes(other.SerializeToString())  # a valid caffemodel without the net's layers
    with pytest.raises(NetError, match="conv1"):
        surg.surgery(mini / "deploy.prototxt", path, tmp_path)


# ------------------------------------------------------------------------------- needs the engine


@pytest.fixture(scope="module")
def caffe_mod():
    pytest.importorskip("pixsent.engine.net", reason="engine Net not available")
    import pixsent.caffe as caffe

    return caffe


def test_conv_net_at_227_equals_fc_net(caffe_mod, mini, tmp_path):
    """At the original size the fully convolutional twin outputs the fc net's prob (tolerance 1e-5 abs)."""
    res = surg.surgery(mini / "deploy.prototxt", mini / "weights.caffemodel", tmp_path, size=227)
    x = np.load(mini / "input.npy")
    net = caffe_mod.Net(str(res.prototxt), caffe_mod.TEST, weights=str(res.caffemodel))
    out = net.forward_all(data=x)["prob"]
    assert out.shape == (2, 3, 1, 1)
    gold = np.load(mini / "blobs.npz")["prob"]
    np.testing.assert_allclose(out[:, :, 0, 0], gold, atol=1e-5)


def test_fullconv_map_equals_golden(caffe_mod, mini, tmp_path):
    """Our surgery + engine on input_451.npy vs Caffe's fullconv_prob.npy (tolerance 1e-5 abs)."""
    res = surg.surgery(mini / "deploy.prototxt", mini / "weights.caffemodel", tmp_path, size=451)
    net = caffe_mod.Net(str(res.prototxt), caffe_mod.TEST, weights=str(res.caffemodel))
    out = net.forward_all(data=np.load(mini / "input_451.npy"))["prob"]
    np.testing.assert_allclose(out, np.load(mini / "fullconv_prob.npy"), atol=1e-5)


GLOBAL_POOL_IP = """
name: "gp"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 5 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc9" type: "InnerProduct" bottom: "pool" top: "fc9"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "constant" value: 0.25 } } }
"""


def test_global_average_pool_before_inner_product_moves_after_it(caffe_mod, tmp_path):
    """fc9 over a global average pooling becomes a 1x1 convolution over the unpooled map, the pooling is
    dropped, and the map's mean equals the original net's scores (1e-5 relative, float32 sums)."""
    (tmp_path / "gp.prototxt").write_text(GLOBAL_POOL_IP)
    net = caffe_mod.Net(str(tmp_path / "gp.prototxt"), caffe_mod.TEST)
    net.save(str(tmp_path / "gp.caffemodel"))
    res = surg.surgery(tmp_path / "gp.prototxt", tmp_path / "gp.caffemodel", tmp_path, size=12)
    full = read_net(res.prototxt)
    assert [lay.name for lay in full.layer] == ["data", "conv", "relu", "fc9-conv"]
    assert res.conversions["fc9"].kernel == (1, 1)
    x = np.random.RandomState(3).uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32)
    net.blobs["data"].data[...] = x
    scores = net.forward()["fc9"].reshape(2)
    twin = caffe_mod.Net(str(res.prototxt), caffe_mod.TEST, weights=str(res.caffemodel))
    twin.blobs["data"].data[...] = x
    score_map = twin.forward()["fc9-conv"][0]
    assert score_map.shape == (2, 10, 10)
    np.testing.assert_allclose(score_map.mean(axis=(1, 2)), scores, rtol=1e-5, atol=1e-6)


def test_moved_global_pool_reports_the_padding_ring_of_its_convolution():
    """SqueezeNet v1.0's conv_final (kernel 1, pad 1): the ring of its map sees only zero padding."""
    net = text_format.Parse(GLOBAL_POOL_IP, caffe_pb2.NetParameter())
    assert surg.fully_convolutional(net).border == 0
    conv = net.layer[1].convolution_param
    conv.kernel_size[0], conv.pad[:] = 1, [1]
    full = surg.fully_convolutional(net, size=12)
    assert full.border == 1 and [lay.name for lay in full.net.layer][-1] == "fc9-conv"
