"""Backbones beyond CaffeNet: the Deep Compression decoder, the registry's fetch+decode, fc8_twitter for any
backbone, and the variants that refuse a backbone without CaffeNet's fully connected layers."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import FormatError, NetError
from pixsent.formats.caffemodel import read_weights
from pixsent.formats.deep_compression import CompressedLayer, decode
from pixsent.formats.prototxt import read_net
from pixsent.recipes.paper import variants
from pixsent.zoo import finetune
from pixsent.zoo import registry as model_zoo
from pixsent.zoo.decoders import deep_compression_to_caffemodel


def test_deep_compression_decoder_gives_caffes_blobs_bit_for_bit(squeezenet_dir, tmp_path):
    out = deep_compression_to_caffemodel(
        squeezenet_dir / "compressed_SqueezeNet.net",
        squeezenet_dir / "SqueezeNet_deploy.prototxt",
        tmp_path / "s",
    )
    ours, ref = read_weights(out), read_weights(squeezenet_dir / "squeezenet_dc.caffemodel")
    assert list(ours) == list(ref) and len(ref) == 26
    assert sum(blobs[0].size for blobs in ref.values()) == 1_244_448
    for name, blobs in ref.items():
        for a, b in zip(ours[name], blobs):
            assert a.shape == b.shape and np.array_equal(a, b), name


def test_decoder_on_a_handmade_file_and_its_errors():
    """One 4-bit InnerProduct layer of 2x3 weights with entries at positions 1 and 5."""
    codebook = np.arange(16, dtype="<f4") * 0.5
    bias = np.array([7.0, 8.0], dtype="<f4")
    codes = bytes([0x3 | (0x9 << 4)])  # code 3 then code 9, low nibble first
    gaps = bytes([0x1 | (0x3 << 4)])  # position 0+1 = 1, then 1+3+1 = 5
    data = struct.pack("<I", 2) + codebook.tobytes() + bias.tobytes() + codes + gaps
    layer = CompressedLayer("ip", "InnerProduct", (2, 3))
    w, b = decode(data, [layer])["ip"]
    assert w.tolist() == [[0.0, 1.5, 0.0], [0.0, 0.0, 4.5]] and b.tolist() == [7.0, 8.0]
    with pytest.raises(FormatError, match="x.net: layer 'ip' needs"):
        decode(data[:-3], [layer], source="x.net")
    with pytest.raises(FormatError, match="left over"):
        decode(data + b"\0", [layer], source="x.net")
    with pytest.raises(FormatError, match="outside its 6 weights"):
        decode(data[:-1] + bytes([0xF | (0xF << 4)]), [layer], source="x.net")


def test_fetch_from_a_mirror_decodes_and_checks(squeezenet_dir, tmp_path):
    path = model_zoo.fetch("squeezenet-dc", mirror=squeezenet_dir, dest=tmp_path, progress=False)
    assert path == tmp_path / "squeezenet_dc.caffemodel"
    assert (tmp_path / "SqueezeNet_deploy.prototxt").is_file()
    ref = read_weights(squeezenet_dir / "squeezenet_dc.caffemodel")
    assert all(np.array_equal(a[0], ref[k][0]) for k, a in read_weights(path).items())
    entry = model_zoo.get("squeezenet-dc")
    assert (
        entry.classifier == "conv_final" and entry.mean.values == (104, 117, 123) and entry.input_size == 227
    )
    assert model_zoo.get("open-nsfw").input_size == 224


def test_fc8_twitter_for_squeezenet_replaces_the_classifier(squeezenet_dir):
    deploy = read_net(squeezenet_dir / "SqueezeNet_deploy.prototxt")
    head = finetune.HeadSpec(classifier="conv_final", new_name="conv_final_twitter")
    net = finetune.train_val(
        deploy,
        head,
        train_source="tr",
        test_source="te",
        train_batch_size=4,
        test_batch_size=2,
        crop=227,
        mean_values=(104, 117, 123),
    )
    layers = {lay.name: lay for lay in net.layer}
    new = layers["conv_final_twitter"]
    assert "conv_final" not in layers and new.convolution_param.num_output == 2
    assert (
        new.convolution_param.weight_filler.type == "gaussian"
        and abs(new.convolution_param.weight_filler.std - 0.01) < 1e-9
    )
    assert [(p.lr_mult, p.decay_mult) for p in new.param] == [(10, 1), (20, 0)]
    assert list(layers["relu_conv_final"].bottom) == ["conv_final_twitter"]
    assert list(layers["pool_final"].bottom) == ["conv_final_twitter"]
    assert list(layers["loss"].bottom) == ["pool_final", "label"]
    assert [lay.type for lay in net.layer[:2]] == ["Data", "Data"]
    assert (
        list(net.layer[0].transform_param.mean_value) == [104, 117, 123]
        and net.layer[0].transform_param.mirror
    )
    adapted = finetune.train_val(
        deploy,
        finetune.HeadSpec("conv_final", "conv_final_twitter", classifier_relu=False),
        train_source="tr",
        test_source="te",
        train_batch_size=4,
        test_batch_size=2,
        crop=227,
        mean_values=(104, 117, 123),
    )
    assert "relu_conv_final" not in {lay.name for lay in adapted.layer}
    with pytest.raises(NetError, match="no classifier layer 'fc8'"):
        finetune.deploy_net(deploy, finetune.HeadSpec("fc8", "fc8_twitter"), crop=227)


def test_squeezenet_fine_tune_net_runs_and_keeps_pretrained_weights(squeezenet_dir, tmp_path):
    from pixsent.engine.net import Net

    cfg = variants.VariantConfig(
        init="squeezenet-dc", backbone_deploy=str(squeezenet_dir / "SqueezeNet_deploy.prototxt")
    )
    net = Net(
        variants.deploy(cfg, batch_size=2),
        caffe_pb2.TEST,
        weights=squeezenet_dir / "squeezenet_dc.caffemodel",
    )
    ref = read_weights(squeezenet_dir / "squeezenet_dc.caffemodel")
    assert np.array_equal(net.params["fire9/conv3x3_2"][0].data, ref["fire9/conv3x3_2"][0])
    w = net.params["conv_final_twitter"][0].data
    assert w.shape == (2, 512, 1, 1) and 0.005 < w.std() < 0.02  # from its gaussian(0.01) filler
    net.blobs["data"].data[...] = np.random.RandomState(0).uniform(-100, 100, (2, 3, 227, 227))
    net.forward()
    prob = net.blobs["prob"].data
    assert prob.shape == (2, 2, 1, 1) and np.allclose(prob.sum(axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("variant", ["fc7-2", "fc6-2"])
def test_variants_needing_caffenet_fc_layers_refuse_other_backbones(variant):
    with pytest.raises(NetError, match=f"variant '{variant}' needs CaffeNet's fc6/fc7.*squeezenet-dc"):
        variants.VariantConfig(variant=variant, init="squeezenet-dc")
    with pytest.raises(NetError, match="for backbones other than CaffeNet"):
        variants.VariantConfig(variant="fc8_twitter-norelu", init="caffenet")


def test_backbone_adaptations_differ_from_the_paper_head_only_where_they_say(squeezenet_dir):
    deploy = str(squeezenet_dir / "SqueezeNet_deploy.prototxt")
    nets = {
        v: {
            lay.name: lay
            for lay in variants.deploy(
                variants.VariantConfig(variant=v, init="squeezenet-dc", backbone_deploy=deploy)
            ).layer
        }
        for v in variants.BACKBONE_VARIANTS
        if v != "fc9_twitter"
    }
    assert "relu_conv_final" in nets["fc8_twitter"]
    assert "relu_conv_final" not in nets["fc8_twitter-norelu"]
    assert [p.lr_mult for p in nets["fc8_twitter-norelu"]["conv_final_twitter"].param] == [10, 20]
    assert [p.lr_mult for p in nets["fc8_twitter-norelu-lr1"]["conv_final_twitter"].param] == [1, 2]
    assert set(nets["fc8_twitter"]) - {"relu_conv_final"} == set(nets["fc8_twitter-norelu-lr1"])
    # the frozen heads at lower rates differ from -frozen only in the new layer's lr_mult
    for variant, rates in (("fc8_twitter-frozen-lr1", [1, 2]), ("fc8_twitter-frozen-lr0.1", [0.1, 0.2])):
        assert [p.lr_mult for p in nets[variant]["conv_final_twitter"].param] == pytest.approx(rates)
        for name, lay in nets["fc8_twitter-frozen"].items():
            if name != "conv_final_twitter":
                assert lay == nets[variant][name], name


def test_fc9_twitter_for_squeezenet_keeps_the_classifier_and_adds_a_layer_on_its_pooled_scores(
    squeezenet_dir, tmp_path
):
    from pixsent.engine.net import Net

    deploy = str(squeezenet_dir / "SqueezeNet_deploy.prototxt")
    cfg = variants.VariantConfig(variant="fc9_twitter", init="squeezenet-dc", backbone_deploy=deploy)
    net = variants.train_val(cfg, train_source="tr", test_source="te", test_batch_size=2)
    names = [lay.name for lay in net.layer]
    assert names[-5:] == ["relu_conv_final", "pool_final", "fc9_twitter", "accuracy", "loss"]
    layers = {lay.name: lay for lay in net.layer}
    assert "conv_final" in layers and layers["conv_final"].convolution_param.num_output == 1000
    new = layers["fc9_twitter"]
    assert new.type == "InnerProduct" and list(new.bottom) == ["pool_final"]
    assert (
        new.inner_product_param.num_output == 2 and new.inner_product_param.weight_filler.type == "gaussian"
    )
    assert [(p.lr_mult, p.decay_mult) for p in new.param] == [(10, 1), (20, 0)]
    deployed = Net(
        variants.deploy(cfg, batch_size=1),
        caffe_pb2.TEST,
        weights=squeezenet_dir / "squeezenet_dc.caffemodel",
    )
    ref = read_weights(squeezenet_dir / "squeezenet_dc.caffemodel")
    assert np.array_equal(deployed.params["conv_final"][0].data, ref["conv_final"][0])  # kept, pre-trained
    assert deployed.params["fc9_twitter"][0].data.shape == (2, 1000)


def test_learnable_blob_counts_follow_caffe():
    def lp(text: str) -> caffe_pb2.LayerParameter:
        from pixsent.formats.prototxt import parse_message

        return parse_message(text, caffe_pb2.LayerParameter())

    count = finetune.learnable_blob_count
    assert count(lp('type: "Convolution" convolution_param { bias_term: false }')) == 1
    assert count(lp('type: "InnerProduct"')) == 2
    assert count(lp('type: "Scale" bottom: "x"')) == 1
    assert count(lp('type: "Scale" bottom: "x" scale_param { bias_term: true }')) == 2
    assert count(lp('type: "Scale" bottom: "x" bottom: "s" scale_param { bias_term: true }')) == 1
    assert count(lp('type: "BatchNorm"')) == 3
    assert count(lp('type: "ReLU"')) == 0


def test_frozen_and_top_heads_freeze_below_their_first_learning_layer(squeezenet_dir):
    """-top: SqueezeNet learns from fire9 on, every blob below has lr_mult 0 and the engine's backward
    stops there (Caffe's need_backward); -frozen: only the new classifier learns."""
    from pixsent.engine.net import Net

    deploy = str(squeezenet_dir / "SqueezeNet_deploy.prototxt")
    cases = (("fc8_twitter-top", "fire9/conv1x1_1"), ("fc8_twitter-frozen", "conv_final_twitter"))
    for variant, first in cases:
        cfg = variants.VariantConfig(variant=variant, init="squeezenet-dc", backbone_deploy=deploy)
        body = variants.deploy(cfg, batch_size=1)
        names = [lay.name for lay in body.layer]
        start = names.index(first)
        for lay in body.layer[:start]:
            assert all(p.lr_mult == 0 and p.decay_mult == 0 for p in lay.param), lay.name
            if lay.type == "Convolution":
                assert len(lay.param) == 2, lay.name
        assert "relu_conv_final" not in names
        new = body.layer[names.index("conv_final_twitter")]
        assert [p.lr_mult for p in new.param] == [10, 20]
        # the deploy net with a label and a loss: which layers the engine runs backward through
        body.layer.pop()  # prob
        label = body.layer.add(name="label", type="Input", top=["label"])
        label.input_param.shape.add(dim=[1])
        body.layer.add(name="loss", type="SoftmaxWithLoss", bottom=["conv_final_twitter", "label"])
        body.layer[-1].top.append("loss")
        net = Net(body, caffe_pb2.TRAIN)
        need = dict(zip(net.layer_names, net.layer_need_backward))
        learning = [n for n in net.layer_names if need[n]]
        assert learning[0] == first and all(need[n] for n in learning)
        assert not any(need[n] for n in net.layer_names[: net.layer_names.index(first)])
        learnable = [n for n, lr in zip(net.learnable_param_names, net.params_lr) if lr != 0]
        assert learnable[0].startswith(first + "/")


def test_train_from_names_a_missing_layer_or_too_many_params_clearly(squeezenet_dir):
    from pixsent.engine.net import Net

    deploy = read_net(squeezenet_dir / "SqueezeNet_deploy.prototxt")
    head = finetune.HeadSpec(classifier="conv_final", new_name="x", train_from="fire99")
    with pytest.raises(NetError, match="train_from: no layer 'fire99'"):
        finetune.body_with_head(deploy, head)
    bad = caffe_pb2.NetParameter()
    bad.CopyFrom(deploy)
    relu = next(lay for lay in bad.layer if lay.type == "ReLU")
    relu.param.add(lr_mult=0)
    with pytest.raises(NetError, match=f"layer '{relu.name}': too many params specified"):
        Net(bad, caffe_pb2.TEST)
