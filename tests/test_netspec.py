"""net_spec builder: generated NetParameters equal hand-written prototxt (exact message equality)."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from pixsent.caffe.net_spec import TEST, TRAIN, Function, NetSpec, to_proto
from pixsent.caffe.net_spec import layers as L
from pixsent.caffe.net_spec import params as P
from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError


def net(text: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(text, caffe_pb2.NetParameter())


def test_convolution_options_params_and_fillers():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 227, 227]))
    n.conv1 = L.Convolution(
        n.data,
        kernel_size=11,
        stride=4,
        num_output=96,
        param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
        weight_filler=dict(type="gaussian", std=0.01),
    )
    expected = net(
        """
        layer { name: "data" type: "Input" top: "data"
          input_param { shape { dim: 1 dim: 3 dim: 227 dim: 227 } } }
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
          param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
          convolution_param { num_output: 96 kernel_size: 11 stride: 4
                              weight_filler { type: "gaussian" std: 0.01 } } }
        """
    )
    assert n.to_proto() == expected


def test_in_place_enum_lrn_inner_product_and_loss_routing():
    n = NetSpec()
    n.data, n.label = L.DummyData(ntop=2, shape=[dict(dim=[2, 3, 8, 8]), dict(dim=[2])])
    n.relu = L.ReLU(n.data, in_place=True)
    n.pool = L.Pooling(n.relu, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.norm = L.LRN(n.pool, local_size=5, alpha=1e-4, beta=0.75)
    n.fc = L.InnerProduct(n.norm, num_output=2)
    n.loss = L.SoftmaxWithLoss(n.fc, n.label, normalization="VALID", axis=1, loss_weight=1)
    n.acc = L.Accuracy(n.fc, n.label, include=dict(phase=TEST), top_k=1)
    expected = net(
        """
        layer { name: "data" type: "DummyData" top: "data" top: "label"
          dummy_data_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
        layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }
        layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
          pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
        layer { name: "norm" type: "LRN" bottom: "pool" top: "norm"
          lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
        layer { name: "fc" type: "InnerProduct" bottom: "norm" top: "fc"
          inner_product_param { num_output: 2 } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" loss_weight: 1
          loss_param { normalization: VALID } softmax_param { axis: 1 } }
        layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc"
          include { phase: TEST } accuracy_param { top_k: 1 } }
        """
    )
    assert n.to_proto() == expected


def test_phase_twins_share_names_and_come_first():
    n = NetSpec()
    train = L.Data(
        ntop=2,
        source="tr",
        batch_size=4,
        backend="LMDB",
        include=dict(phase=TRAIN),
        transform_param=dict(mirror=True, crop_size=227, mean_file="m.binaryproto"),
    )
    test = L.Data(ntop=2, source="te", batch_size=2, backend=P.Data.LMDB, include=dict(phase=TEST))
    n.data = [train[0], test[0]]
    n.label = [train[1], test[1]]
    n.ip = L.InnerProduct(n.data, num_output=2)
    proto = n.to_proto(name="twins")
    assert proto.name == "twins"
    assert [(lay.name, list(lay.top)) for lay in proto.layer] == [
        ("data", ["data", "label"]),
        ("data", ["data", "label"]),
        ("ip", ["ip"]),
    ]
    assert [lay.include[0].phase for lay in proto.layer[:2]] == [TRAIN, TEST]
    assert proto.layer[0].transform_param.mean_file == "m.binaryproto"
    assert proto.layer[0].data_param.backend == caffe_pb2.DataParameter.LMDB
    assert list(proto.layer[2].bottom) == ["data"]


def test_auto_names_explicit_name_and_module_to_proto():
    data = L.Input(shape=dict(dim=[1, 4]))
    ip = L.InnerProduct(data, num_output=3, name="custom")
    proto = to_proto(L.Softmax(ip))
    assert [lay.name for lay in proto.layer] == ["Input1", "custom", "Softmax1"]
    assert list(proto.layer[1].top) == ["InnerProduct1"]
    assert list(proto.layer[2].bottom) == ["InnerProduct1"]


def test_repeated_scalar_becomes_list_and_to_prototxt_parses_back():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 5, 5]))
    n.conv = L.Convolution(n.data, kernel_size=3, num_output=1, pad=1)
    assert list(n.to_proto().layer[1].convolution_param.pad) == [1]
    text = n.to_prototxt()
    assert text_format.Parse(text, caffe_pb2.NetParameter()) == n.to_proto()


def test_errors_name_the_layer():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3]))
    n.ip = L.InnerProduct(n.data, num_outputs=2)
    with pytest.raises(NetError, match="'ip'.*num_outputs"):
        n.to_proto()
    m = NetSpec()
    m.data = L.Input(shape=dict(dim=[1, 3]))
    m.pool = L.Pooling(m.data, pool="MAXX")
    with pytest.raises(NetError, match="MAXX"):
        m.to_proto()


def test_params_enums_and_ntop_zero():
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    assert P.Pooling.AVE == caffe_pb2.PoolingParameter.AVE
    with pytest.raises(AttributeError):
        _ = P.Pooling.MEDIAN
    assert isinstance(L.Silence(L.Input(shape=dict(dim=[1])), ntop=0), Function)
    n = NetSpec()
    assert "x" not in n
    with pytest.raises(AttributeError):
        _ = n.x
