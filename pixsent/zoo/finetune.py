"""Fine-tuning nets for any backbone from its published deploy prototxt: replace the ImageNet classifier.

The paper's ``fc8_twitter`` on CaffeNet, stated for any backbone: the classifier layer (``conv_final`` of
SqueezeNet, ``fc_nsfw`` of open_nsfw, ``fc8`` of CaffeNet) is replaced by a renamed layer with
``num_classes`` outputs, gaussian(0.01) weights, constant 0 bias, lr_mult 10/20 and decay_mult 1/0. Caffe
copies weights by layer name, so the renamed layer starts from its filler while every other layer keeps its
pre-trained weights. The blob the classifier wrote is renamed with it (and every later reference), so logs
and feature names say what they hold. Everything after the classifier (ReLU, global pooling) is kept unless
``classifier_relu`` is false, which drops in-place ReLUs on the classifier's output (pixsent's adaptation
for SqueezeNet, whose classifier is a ReLU'd 1x1 convolution followed by global average pooling).

The paper's ``fc9_twitter`` for any backbone (``append``): the classifier and what follows it stay as
pre-trained, and a new InnerProduct with ``num_classes`` outputs (same filler and rates) reads the net's last
output (SqueezeNet: the 1000 pooled ImageNet scores after their ReLU).

``train_from`` freezes the layers before the named one (every learnable blob gets lr_mult 0, decay_mult 0),
so Caffe's backward pass stops there: only the top of the backbone and the new classifier learn, and a
training step costs little more than a forward pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError

INPUT_TYPES = ("Input", "Data", "ImageData", "MemoryData", "DummyData", "HDF5Data")


@dataclass(frozen=True)
class HeadSpec:
    """The replacement of a backbone's classifier."""

    classifier: str
    new_name: str
    num_classes: int = 2
    weight_std: float = 0.01
    lr_mult: tuple[float, float] = (10.0, 20.0)
    decay_mult: tuple[float, float] = (1.0, 0.0)
    classifier_relu: bool = True
    append: bool = False  # keep the classifier; add the new layer on the net's last output (fc9_twitter)
    train_from: str | None = None  # first layer that learns; every layer before it is frozen (lr_mult 0)


def _strip_inputs(deploy: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """The deploy net without its inputs (legacy ``input`` fields and input layers) and without ``blobs``."""
    body = caffe_pb2.NetParameter()
    body.CopyFrom(deploy)
    for name in ("input", "input_dim", "input_shape"):
        body.ClearField(name)
    body.ClearField("layer")
    for layer in deploy.layer:
        if layer.type in INPUT_TYPES:
            continue
        copy = body.layer.add()
        copy.CopyFrom(layer)
        del copy.blobs[:]
    return body


def _rename_blob(layers, start: int, old: str, new: str) -> None:
    for layer in layers[start:]:
        for field in (layer.bottom, layer.top):
            for i, name in enumerate(field):
                if name == old:
                    field[i] = new


def _new_classifier(layer: caffe_pb2.LayerParameter, head: HeadSpec) -> None:
    """Rename, resize and re-initialise the classifier in place (Convolution or InnerProduct)."""
    if layer.type == "Convolution":
        p = layer.convolution_param
    elif layer.type == "InnerProduct":
        p = layer.inner_product_param
    else:
        raise NetError(f"classifier {layer.name!r} is a {layer.type}; expected Convolution or InnerProduct")
    layer.name = head.new_name
    p.num_output = head.num_classes
    p.weight_filler.Clear()
    p.weight_filler.type = "gaussian"
    p.weight_filler.std = head.weight_std
    p.bias_filler.Clear()
    p.bias_filler.type = "constant"
    p.bias_filler.value = 0.0
    del layer.param[:]
    for lr, decay in zip(head.lr_mult, head.decay_mult):
        layer.param.add(lr_mult=lr, decay_mult=decay)


def learnable_blob_count(layer: caffe_pb2.LayerParameter) -> int:
    """How many parameter blobs Caffe gives a layer (what a ``param`` entry may describe)."""
    if layer.type in ("Convolution", "Deconvolution"):
        return 2 if layer.convolution_param.bias_term else 1
    if layer.type == "InnerProduct":
        return 2 if layer.inner_product_param.bias_term else 1
    if layer.type == "Scale":  # the scale is a blob unless a second bottom gives it; the bias is optional
        return (len(layer.bottom) == 1) + bool(layer.scale_param.bias_term)
    if layer.type == "Embed":
        return 2 if layer.embed_param.bias_term else 1
    if layer.type == "BatchNorm":
        return 3
    if layer.type == "PReLU":
        return 1
    if layer.type == "Bias":
        return 1 if len(layer.bottom) == 1 else 0
    return len(layer.param)


def freeze_before(layers, name: str) -> None:
    """Give every learnable blob of the layers before ``name`` lr_mult 0 and decay_mult 0 (in place)."""
    index = next((i for i, lay in enumerate(layers) if lay.name == name), None)
    if index is None:
        raise NetError(f"train_from: no layer {name!r} in the net")
    for layer in layers[:index]:
        count = learnable_blob_count(layer)
        while len(layer.param) < count:
            layer.param.add()
        for spec in layer.param:
            spec.lr_mult = 0.0
            spec.decay_mult = 0.0


def body_with_head(deploy: caffe_pb2.NetParameter, head: HeadSpec) -> tuple[caffe_pb2.NetParameter, str]:
    """(the backbone's layers with the new classifier and no inputs or final Softmax, the logits blob)."""
    body = _strip_inputs(deploy)
    layers = body.layer
    index = next((i for i, lay in enumerate(layers) if lay.name == head.classifier), None)
    if index is None:
        raise NetError(f"net {deploy.name!r}: no classifier layer {head.classifier!r} to replace")
    if head.append:
        while layers and layers[-1].type == "Softmax":
            layers.pop()
        new = caffe_pb2.LayerParameter(
            name=head.new_name, type="InnerProduct", bottom=[layers[-1].top[0]], top=[head.new_name]
        )
        _new_classifier(new, head)
        layers.append(new)
        if head.train_from is not None:
            freeze_before(layers, head.train_from)
        return body, head.new_name
    old_top = layers[index].top[0]
    _new_classifier(layers[index], head)
    _rename_blob(layers, index, old_top, head.new_name)
    if not head.classifier_relu:
        keep = [
            lay
            for lay in layers
            if not (lay.type == "ReLU" and list(lay.bottom) == [head.new_name] == list(lay.top))
        ]
        del layers[:]
        layers.extend(keep)
    while layers and layers[-1].type == "Softmax":  # a deploy net's ``prob``: the loss layer replaces it
        layers.pop()
    if head.train_from is not None:
        freeze_before(layers, head.new_name if head.train_from == head.classifier else head.train_from)
    if not layers:
        raise NetError(f"net {deploy.name!r}: nothing left after removing inputs and the final Softmax")
    return body, layers[-1].top[0]


def _transform(crop: int, mirror: bool, mean_values, mean_file) -> dict:
    t = caffe_pb2.TransformationParameter(crop_size=crop, mirror=mirror)
    if mean_file is not None:
        t.mean_file = os.fspath(mean_file)
    else:
        t.mean_value.extend(float(v) for v in mean_values)
    return t


def train_val(
    deploy: caffe_pb2.NetParameter,
    head: HeadSpec,
    *,
    train_source: str | os.PathLike,
    test_source: str | os.PathLike,
    train_batch_size: int,
    test_batch_size: int,
    crop: int,
    mean_values=None,
    mean_file=None,
    name: str | None = None,
) -> caffe_pb2.NetParameter:
    """TRAIN/TEST net: LMDB Data layers (crop, mirror in TRAIN, mean), the backbone with the new classifier,
    Accuracy (TEST) and SoftmaxWithLoss ``loss`` on the logits."""
    if (mean_values is None) == (mean_file is None):
        raise NetError("train_val: give either mean_values or mean_file")
    body, logits = body_with_head(deploy, head)
    net = caffe_pb2.NetParameter(name=name or f"{deploy.name}_{head.new_name}")
    for phase, source, batch in (
        (caffe_pb2.TRAIN, train_source, train_batch_size),
        (caffe_pb2.TEST, test_source, test_batch_size),
    ):
        data = net.layer.add(name="data", type="Data", top=["data", "label"])
        data.include.add(phase=phase)
        data.transform_param.CopyFrom(_transform(crop, phase == caffe_pb2.TRAIN, mean_values, mean_file))
        data.data_param.source = os.fspath(source)
        data.data_param.batch_size = batch
        data.data_param.backend = caffe_pb2.DataParameter.LMDB
    net.layer.extend(body.layer)
    acc = net.layer.add(name="accuracy", type="Accuracy", bottom=[logits, "label"], top=["accuracy"])
    acc.include.add(phase=caffe_pb2.TEST)
    net.layer.add(name="loss", type="SoftmaxWithLoss", bottom=[logits, "label"], top=["loss"])
    return net


def deploy_net(
    deploy: caffe_pb2.NetParameter,
    head: HeadSpec,
    *,
    crop: int,
    batch_size: int = 10,
    name: str | None = None,
) -> caffe_pb2.NetParameter:
    """Inference net: Input N x 3 x crop x crop, the backbone with the new classifier, Softmax ``prob``."""
    body, logits = body_with_head(deploy, head)
    net = caffe_pb2.NetParameter(name=name or f"{deploy.name}_{head.new_name}")
    data = net.layer.add(name="data", type="Input", top=["data"])
    data.input_param.shape.add(dim=[batch_size, 3, crop, crop])
    net.layer.extend(body.layer)
    net.layer.add(name="prob", type="Softmax", bottom=[logits], top=["prob"])
    return net
