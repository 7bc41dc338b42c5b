"""The paper's network variants (SPEC table) as train_val, deploy and fully convolutional nets.

Each variant is a head on the CaffeNet trunk registered in ``HEADS``; a head returns the logits top.
Renamed layers (``fc8_twitter``, ``fc7_twitter``, ...) start from their filler because Caffe copies weights by
layer name; kept layers keep BVLC's names.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from pixsent.caffe.net_spec import TEST, TRAIN, NetSpec, Top, TopLike
from pixsent.caffe.net_spec import layers as L
from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError
from pixsent.zoo import caffenet
from pixsent.zoo.caffenet import ConvSpec


class Fc9Activation(StrEnum):
    """What follows the pre-trained fc8 in ``fc9_twitter`` (the paper does not say).

    Default ``relu_dropout``: fc8 then becomes a hidden layer treated exactly like CaffeNet's fc6 and fc7;
    with ``none`` fc8 -> fc9 is a product of two linear maps, which adds no capacity over ``fc8_twitter``.
    """

    NONE = "none"
    RELU = "relu"
    RELU_DROPOUT = "relu_dropout"


DEFAULT_FC9_ACTIVATION = Fc9Activation.RELU_DROPOUT
DEFAULT_MEAN_FILE = "data/ilsvrc_2012_mean.binaryproto"


@dataclass(frozen=True)
class VariantConfig:
    """Everything that shapes one variant's files apart from the fold's paths and sizes.

    ``init`` names a model of the registry (pixsent.zoo.registry); ``init_outputs`` or ``mean_file`` left
    None follow that model (fc9_twitter keeps the init model's fc8 width; the mean is the init
    model's), so initialising from another model changes only what it must.
    """

    variant: str = "fc8_twitter"
    init: str = "caffenet"
    init_outputs: int | None = None  # width of the init model's fc8 (kept by fc9_twitter)
    fc9_activation: Fc9Activation = DEFAULT_FC9_ACTIVATION
    num_classes: int = 2
    train_batch_size: int = 256  # TRAIN Data batch (BATCH=); the paper's 256
    # passes accumulated per update (ITER_SIZE=): batch x iter_size is what an epoch counts
    iter_size: int = 1
    snapshot_every: int | None = None  # SNAPSHOT=: iterations between snapshots (default one half way)
    test_batch_cap: int = 50  # largest TEST batch; the actual size is balanced over the test fold
    deploy_batch_size: int = 10
    crop_size: int = 227
    mean_file: str | None = None
    # another backbone than CaffeNet: its published deploy prototxt (found through the registry if None)
    backbone_deploy: str | None = None

    def __post_init__(self) -> None:
        if self.variant not in HEADS and self.variant not in BACKBONE_VARIANTS:
            known = ", ".join([*HEADS, *BACKBONE_VARIANTS])
            raise NetError(f"unknown variant {self.variant!r} (known: {known})")
        if self.train_batch_size < 1 or self.iter_size < 1:
            raise NetError(
                f"{self.variant}: batch {self.train_batch_size} and iter_size {self.iter_size} must be >= 1"
            )
        object.__setattr__(self, "fc9_activation", Fc9Activation(self.fc9_activation))
        backbone = backbone_of(self.init)
        if backbone is not None:
            _check_backbone_variant(self.variant, self.init, backbone.architecture)
            object.__setattr__(self, "crop_size", backbone.input_size)
            return
        if self.variant in BACKBONE_VARIANTS and self.variant not in HEADS:
            raise NetError(
                f"variant {self.variant!r} is for backbones other than CaffeNet; {self.init!r} is one"
            )
        if self.init_outputs is None or self.mean_file is None:
            outputs, mean = _init_defaults(self.init)
            if self.init_outputs is None:
                object.__setattr__(self, "init_outputs", outputs)
            if self.mean_file is None:
                object.__setattr__(self, "mean_file", mean)

    @property
    def init_model(self) -> str:
        return self.init

    @property
    def base_lr(self) -> float:
        """0.0001 for fc6-2 (SPEC), 0.001 otherwise."""
        return BASE_LR.get(self.variant, 0.001)


def backbone_of(init: str):
    """The registry entry of ``init`` when it is another architecture than CaffeNet (it has a classifier
    layer to replace and a published deploy prototxt), else None."""
    from pixsent.errors import DataError
    from pixsent.zoo import registry as model_zoo

    try:
        entry = model_zoo.get(init)
    except DataError:
        return None
    return entry if entry.architecture not in ("caffenet", "caffenet-fullconv") else None


def _check_backbone_variant(variant: str, init: str, architecture: str) -> None:
    if variant not in BACKBONE_VARIANTS:
        raise NetError(
            f"variant {variant!r} needs CaffeNet's fc6/fc7, which {init!r} ({architecture}) does not have; "
            f"use VARIANT={' or VARIANT='.join(BACKBONE_VARIANTS)}"
        )


def _init_defaults(init: str) -> tuple[int | None, str]:
    """(fc8 width, mean file) of a registry model; CaffeNet's values for a model not in the registry."""
    from pixsent.errors import DataError
    from pixsent.zoo import registry as model_zoo

    try:
        entry = model_zoo.get(init)
    except DataError:
        return 1000, DEFAULT_MEAN_FILE
    return entry.num_outputs, entry.mean.file


Head = Callable[[NetSpec, TopLike, VariantConfig], Top]


def _fc8_twitter(n: NetSpec, data: TopLike, cfg: VariantConfig) -> Top:
    top = caffenet.hidden_fc(n, 7, caffenet.hidden_fc(n, 6, caffenet.trunk(n, data)))
    return caffenet.fc(n, "fc8_twitter", top, cfg.num_classes, new=True)


def _fc7_2(n: NetSpec, data: TopLike, cfg: VariantConfig) -> Top:
    top = caffenet.hidden_fc(n, 6, caffenet.trunk(n, data))
    return caffenet.fc(n, "fc7_twitter", top, cfg.num_classes, new=True)


def _fc6_2(n: NetSpec, data: TopLike, cfg: VariantConfig) -> Top:
    return caffenet.fc(n, "fc6_twitter", caffenet.trunk(n, data), cfg.num_classes, new=True)


def _fc9_twitter(n: NetSpec, data: TopLike, cfg: VariantConfig) -> Top:
    if cfg.init_outputs is None:
        raise NetError(f"fc9_twitter: width of {cfg.init!r}'s fc8 unknown; set VariantConfig.init_outputs")
    top: Top = caffenet.reference(n, data, cfg.init_outputs)
    if cfg.fc9_activation != Fc9Activation.NONE:
        top = caffenet.relu_dropout(n, "8", top, dropout=cfg.fc9_activation == Fc9Activation.RELU_DROPOUT)
    return caffenet.fc(n, "fc9_twitter", top, cfg.num_classes, new=True)


HEADS: dict[str, Head] = {
    "fc8_twitter": _fc8_twitter,
    "fc7-2": _fc7_2,
    "fc6-2": _fc6_2,
    "fc9_twitter": _fc9_twitter,
}
BASE_LR: dict[str, float] = {"fc6-2": 0.0001}
# Variants for any backbone with a classifier layer (the registry's ``classifier``), as settings of the new
# classifier (zoo.finetune.HeadSpec). fc8_twitter replaces it as the paper replaces CaffeNet's fc8. The others
# are pixsent's adaptations for a classifier that is a ReLU'd convolution before global pooling (SqueezeNet),
# whose unnormalised features make the paper's 10x rate on the new layer overshoot: without the ReLU, and
# without it at the rate of the pre-trained layers (lr_mult 1/2). fc9_twitter keeps the classifier and what
# follows it (SqueezeNet: ReLU, global pooling) and adds the new layer on the pooled ImageNet scores, as the
# paper's fc9_twitter keeps CaffeNet's fc8. `pixsent select` chooses among them on inner validation splits
# of the training folds only. The -frozen and -top heads train less of the net (the new classifier alone, or
# with the backbone's last stage, the registry's ``top_stage``): a step costs little more than a forward pass,
# and a small dataset moves fewer of the ImageNet weights. -frozen-lr1 and -frozen-lr0.1 are -frozen at lower
# rates for the new layer: one SGD step moves a logit by about rate x |x|^2, and SqueezeNet's pooled fire9
# features have a norm near 370 (the training images of five-agree fold 1's inner split), so at the paper's
# 10x rate (0.01) the first steps move the logits by hundreds.
_FROZEN: dict[str, object] = {"classifier_relu": False, "train_from": "@classifier"}
BACKBONE_HEADS: dict[str, dict[str, object]] = {
    "fc8_twitter": {},
    "fc8_twitter-norelu": {"classifier_relu": False},
    "fc8_twitter-norelu-lr1": {"classifier_relu": False, "lr_mult": (1.0, 2.0)},
    "fc9_twitter": {"append": True},
    "fc8_twitter-frozen": _FROZEN,
    "fc8_twitter-top": {"classifier_relu": False, "train_from": "@top_stage"},
    "fc8_twitter-frozen-lr1": {**_FROZEN, "lr_mult": (1.0, 2.0)},
    "fc8_twitter-frozen-lr0.1": {**_FROZEN, "lr_mult": (0.1, 0.2)},
}
BACKBONE_VARIANTS: tuple[str, ...] = tuple(BACKBONE_HEADS)
VARIANTS: tuple[str, ...] = tuple(HEADS)


def _data_layer(
    cfg: VariantConfig, source: str | os.PathLike, batch_size: int, mean_file: str | os.PathLike, phase: int
):
    """Caffe Data layer on an LMDB: crop 227, mean image, mirror only in TRAIN."""
    return L.Data(
        ntop=2,
        include=dict(phase=phase),
        transform_param=dict(mirror=phase == TRAIN, crop_size=cfg.crop_size, mean_file=os.fspath(mean_file)),
        source=os.fspath(source),
        batch_size=batch_size,
        backend="LMDB",
    )


def train_val(
    cfg: VariantConfig,
    *,
    train_source: str | os.PathLike,
    test_source: str | os.PathLike,
    test_batch_size: int,
    mean_file: str | os.PathLike | None = None,
) -> caffe_pb2.NetParameter:
    """TRAIN/TEST net: twin Data layers, the variant, Accuracy (TEST) and SoftmaxWithLoss ``loss``."""
    if backbone_of(cfg.init) is not None:
        return _backbone_train_val(cfg, train_source, test_source, test_batch_size, mean_file)
    mean = mean_file or cfg.mean_file
    n = NetSpec()
    train = _data_layer(cfg, train_source, cfg.train_batch_size, mean, TRAIN)
    test = _data_layer(cfg, test_source, test_batch_size, mean, TEST)
    n.data = [train[0], test[0]]
    n.label = [train[1], test[1]]
    logits = HEADS[cfg.variant](n, n.data, cfg)
    n.accuracy = L.Accuracy(logits, n.label, include=dict(phase=TEST))
    n.loss = L.SoftmaxWithLoss(logits, n.label)
    return n.to_proto(name=net_name(cfg))


def deploy(cfg: VariantConfig, *, batch_size: int | None = None) -> caffe_pb2.NetParameter:
    """Inference net: Input N x 3 x 227 x 227, the variant, Softmax ``prob``."""
    if backbone_of(cfg.init) is not None:
        from pixsent.zoo import finetune

        backbone, head = _backbone_head(cfg)
        return finetune.deploy_net(
            backbone,
            head,
            crop=cfg.crop_size,
            batch_size=batch_size or cfg.deploy_batch_size,
            name=net_name(cfg),
        )
    n = NetSpec()
    size = cfg.crop_size
    n.data = L.Input(shape=dict(dim=[batch_size or cfg.deploy_batch_size, 3, size, size]))
    n.prob = L.Softmax(HEADS[cfg.variant](n, n.data, cfg))
    return n.to_proto(name=net_name(cfg))


def _backbone_head(cfg: VariantConfig):
    """(the backbone's deploy NetParameter, the HeadSpec of the variant)."""
    from pixsent.zoo import finetune
    from pixsent.zoo import registry as model_zoo

    entry = model_zoo.get(cfg.init)
    if cfg.backbone_deploy is not None:
        from pixsent.formats.prototxt import read_net

        backbone = read_net(cfg.backbone_deploy)
    else:
        backbone = model_zoo.read_deploy(cfg.init)
    settings = dict(BACKBONE_HEADS[cfg.variant])
    where = settings.get("train_from")
    if isinstance(where, str) and where.startswith("@"):
        settings["train_from"] = getattr(entry, where[1:])
        if settings["train_from"] is None:
            raise NetError(
                f"variant {cfg.variant}: model {cfg.init!r} names no {where[1:]} in models/registry.json"
            )
    head = finetune.HeadSpec(
        classifier=entry.classifier,
        new_name="fc9_twitter" if settings.get("append") else f"{entry.classifier}_twitter",
        num_classes=cfg.num_classes,
        **settings,
    )
    return backbone, head


def _backbone_train_val(cfg: VariantConfig, train_source, test_source, test_batch_size: int, mean_file):
    """train_val of a backbone other than CaffeNet: its classifier replaced, its own mean (values or file)."""
    from pixsent.zoo import finetune
    from pixsent.zoo import registry as model_zoo

    entry = model_zoo.get(cfg.init)
    backbone, head = _backbone_head(cfg)
    values = entry.mean.values
    return finetune.train_val(
        backbone,
        head,
        train_source=train_source,
        test_source=test_source,
        train_batch_size=cfg.train_batch_size,
        test_batch_size=test_batch_size,
        crop=cfg.crop_size,
        mean_values=values,
        mean_file=None if values else (mean_file or entry.mean.file),
        name=net_name(cfg),
    )


FULLCONV_SIZE = 451
FULLCONV_HEAD: tuple[ConvSpec, ...] = (
    ConvSpec("fc6-conv", 4096, 6),
    ConvSpec("fc7-conv", 4096, 1),
    ConvSpec("fc8_twitter-conv", 2, 1),
)


def fullconv_deploy(
    *, size: int = FULLCONV_SIZE, num_classes: int = 2, batch_size: int = 1
) -> caffe_pb2.NetParameter:
    """fc8_twitter made fully convolutional (weights by net surgery): 451 x 451 in, 8 x 8 x 2 ``prob`` out.

    Softmax's default axis is 1, the channels of the map, so each of the 8 x 8 cells is a distribution.
    """
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[batch_size, 3, size, size]))
    top: Top = caffenet.trunk(n, n.data)
    fc6, fc7, fc8 = FULLCONV_HEAD
    top = caffenet.relu_dropout(n, "6", caffenet.conv(n, fc6, top, filler=caffenet.REFERENCE_FILLERS["fc6"]))
    top = caffenet.relu_dropout(n, "7", caffenet.conv(n, fc7, top, filler=caffenet.REFERENCE_FILLERS["fc7"]))
    fc8 = replace(fc8, num_output=num_classes)
    n.prob = L.Softmax(caffenet.conv(n, fc8, top, filler=caffenet.NEW_LAYER_FILLER))
    return n.to_proto(name="CaffeNet_fc8_twitter_fullconv")


def net_name(cfg: VariantConfig) -> str:
    """NetParameter.name: ``CaffeNet_<variant>`` (plus the init model when it is not CaffeNet)."""
    suffix = "" if cfg.init == "caffenet" else f"_{cfg.init}"
    backbone = backbone_of(cfg.init)
    if backbone is not None:
        return f"{backbone.architecture}_{cfg.variant}_{cfg.init}"
    return f"CaffeNet_{cfg.variant}{suffix}"
