"""Caffe's net upgrades: V0 -> V1 -> V2, data-transform fields, BatchNorm specs, idempotence."""

from __future__ import annotations

from pixsent.caffe.proto import caffe_pb2
from pixsent.formats.prototxt import parse_message, parse_net, to_text
from pixsent.formats.upgrade import V1_TYPE_NAMES, net_needs_upgrade, upgrade_net

V1_NET = """
name: "old"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layers {
  name: "train_data" type: DATA top: "data" top: "label"
  data_param { source: "lmdb" batch_size: 4 scale: 0.5 mean_file: "m.binaryproto" crop_size: 6 mirror: true }
  include { phase: TRAIN }
}
layers {
  name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 param: "shared_w"
  convolution_param { num_output: 4 kernel_size: 3 }
}
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "fc" type: INNER_PRODUCT bottom: "conv1" top: "fc" inner_product_param { num_output: 2 } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "fc" bottom: "label" top: "loss" loss_weight: 2 }
"""

V0_NET = """
name: "v0"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers {
  layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 2 biasterm: false blobs_lr: 1 }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 2 } bottom: "conv1" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.5 } bottom: "pool1" top: "norm1" }
layers { layer { name: "fc" type: "innerproduct" num_output: 2 } bottom: "norm1" top: "fc" }
"""


def test_v1_prototxt_upgrade():
    net = parse_net(V1_NET)
    assert not net.layers and not net.input
    assert [la.type for la in net.layer] == ["Input", "Data", "Convolution", "ReLU", "InnerProduct",
                                             "SoftmaxWithLoss"]  # fmt: skip
    data = net.layer[1]
    assert data.transform_param.scale == 0.5 and data.transform_param.mean_file == "m.binaryproto"
    assert data.transform_param.crop_size == 6 and data.transform_param.mirror
    assert not data.data_param.HasField("scale") and data.data_param.batch_size == 4
    assert data.include[0].phase == caffe_pb2.TRAIN
    conv = net.layer[2]
    assert [(p.name, p.lr_mult, p.decay_mult) for p in conv.param] == [("shared_w", 1, 1), ("", 2, 0)]
    assert list(net.layer[5].loss_weight) == [2]


def test_v0_prototxt_upgrade_folds_padding_layers():
    net = parse_net(V0_NET)
    assert [la.name for la in net.layer] == ["input", "conv1", "pool1", "norm1", "fc"]
    conv = net.layer[1]
    assert conv.type == "Convolution" and list(conv.bottom) == ["data"]
    cp = conv.convolution_param
    assert (cp.num_output, list(cp.kernel_size), list(cp.stride), list(cp.pad), cp.bias_term) == (
        4, [3], [2], [2], False)  # fmt: skip
    assert conv.param[0].lr_mult == 1
    assert net.layer[2].pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    assert net.layer[3].type == "LRN" and net.layer[3].lrn_param.local_size == 3
    assert net.layer[3].lrn_param.alpha == 0.5
    assert net.layer[4].inner_product_param.num_output == 2


def test_upgrade_is_idempotent_and_in_place():
    net = parse_net(V1_NET)
    text = to_text(net)
    assert net_needs_upgrade(net) == []
    assert upgrade_net(net) is net and to_text(net) == text


def test_batch_norm_param_specs_are_zeroed():
    net = parse_message('layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 } param { lr_mult: 1 } '
                        'param { lr_mult: 1 } }', caffe_pb2.NetParameter(), "bn")  # fmt: skip
    upgrade_net(net)
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[0].param] == [(0, 0)] * 3


def test_every_v1_enum_has_a_type_name():
    assert set(caffe_pb2.V1LayerParameter.LayerType.keys()) == set(V1_TYPE_NAMES)
