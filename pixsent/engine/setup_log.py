"""The net set-up lines Caffe's Net::Init logs (net.cpp), so tools that read training logs find them.

Per layer, as Caffe 1.0 prints them: ``Creating layer X``, ``Creating Layer X``, ``X <- bottom``,
``X -> top`` (``(in-place)`` when the top is a bottom), ``Setting up X``, ``Top shape: 8 3 36 36 (31104)``
per top (``Top shape: (1)`` for a 0-axis blob), ``    with loss weight W`` for a top with a loss weight,
``Memory required for data: N`` (bytes of every top so far, in-place tops counted again, 4 per float). Then,
from the last layer to the first, ``X needs backward computation.`` or ``X does not need backward
computation.``, one ``This network produces output B`` per output blob (sorted), and ``Network
initialization done.``. A SoftmaxWithLoss layer logs ``Creating layer`` a second time (Caffe creates its
inner Softmax layer then).

Which layers need backward follows net.cpp: a layer needs it when a bottom blob needs it or one of its
parameters has a non-zero lr_mult (default 1); its tops then need it too; walking back from the end, a layer
none of whose tops carries a loss weight or feeds a layer under a loss does not need it, nor does a layer
whose every top is one that no later layer propagates into.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf import text_format

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine import glog


def shape_string(shape: Sequence[int]) -> str:
    """Caffe's Blob::shape_string: each axis followed by a space, then the count in parentheses."""
    count = 1
    for d in shape:
        count *= int(d)
    return "".join(f"{int(d)} " for d in shape) + f"({count})"


def log_filtering(param: caffe_pb2.NetParameter) -> None:
    """The lines Caffe's FilterNet prints for layers whose rule names another phase."""
    state = param.state
    for layer in param.layer:
        for rule in layer.include:
            if rule.HasField("phase") and rule.phase != state.phase:
                glog.info(
                    f"The NetState phase ({state.phase}) differed from the phase ({rule.phase}) "
                    f"specified by a rule in layer {layer.name}",
                    "net.cpp:296",
                )


def log_init(param: caffe_pb2.NetParameter) -> None:
    """``Initializing net from parameters:`` and the filtered net in text format."""
    glog.info("Initializing net from parameters: \n" + text_format.MessageToString(param), "net.cpp:53")


@dataclass
class SetupLog:
    """Collects what Net::Init logs as the net is built; ``enabled`` False makes every call a no-op."""

    enabled: bool = True
    memory: int = 0
    layers: list[tuple[str, list[str], list[str], list[bool]]] = field(default_factory=list)
    need: list[bool] = field(default_factory=list)
    blob_needs: dict[str, bool] = field(default_factory=dict)

    def layer(
        self,
        lp: caffe_pb2.LayerParameter,
        shapes: Sequence[Sequence[int]],
        in_place: Sequence[bool],
        loss_weights: Sequence[float],
        param_lr: Sequence[float],
        propagate: Sequence[bool],
    ) -> None:
        """Log one layer's set-up and record what the backward pass needs from it."""
        name = lp.name
        needed = any(self.blob_needs.get(b, False) for b in lp.bottom) or any(lr != 0 for lr in param_lr)
        bottom_needs = [self.blob_needs.get(b, False) and p for b, p in zip(lp.bottom, propagate)]
        self.need.append(needed)
        self.layers.append((name, list(lp.bottom), list(lp.top), bottom_needs))
        for t in lp.top:
            self.blob_needs[t] = needed
        if not self.enabled:
            return
        glog.info(f"Creating layer {name}", "layer_factory.hpp:77")
        glog.info(f"Creating Layer {name}", "net.cpp:86")
        for b in lp.bottom:
            glog.info(f"{name} <- {b}", "net.cpp:408")
        for t, inplace in zip(lp.top, in_place):
            if inplace:
                glog.info(f"{name} -> {t} (in-place)", "net.cpp:369")
            else:
                glog.info(f"{name} -> {t}", "net.cpp:382")
        if lp.type == "SoftmaxWithLoss":
            glog.info(f"Creating layer {name}", "layer_factory.hpp:77")
        glog.info(f"Setting up {name}", "net.cpp:124")
        for i, shape in enumerate(shapes):
            glog.info(f"Top shape: {shape_string(shape)}", "net.cpp:131")
            w = loss_weights[i] if i < len(loss_weights) else 0.0
            if w:
                glog.info(f"    with loss weight {glog.fmt(w)}", "net.cpp:134")
            count = 1
            for d in shape:
                count *= int(d)
            self.memory += count
        glog.info(f"Memory required for data: {self.memory * 4}", "net.cpp:139")

    def finish(self, loss_tops: Sequence[Sequence[tuple[int, float]]], outputs: Sequence[str]) -> list[bool]:
        """Log the backward-need lines and the outputs; returns whether each layer needs backward."""
        under_loss: set[str] = set()
        skip: set[str] = set()
        need = list(self.need)
        for i in range(len(self.layers) - 1, -1, -1):
            name, bottoms, tops, bottom_needs = self.layers[i]
            weighted = {j for j, _ in loss_tops[i]}
            contributes = any(j in weighted or t in under_loss for j, t in enumerate(tops))
            all_skipped = all(t in skip for t in tops)
            if need[i] and all_skipped:
                need[i] = False
                bottom_needs = [False] * len(bottoms)
            if not contributes:
                need[i] = False
            if self.enabled:
                if need[i]:
                    glog.info(f"{name} needs backward computation.", "net.cpp:200")
                else:
                    glog.info(f"{name} does not need backward computation.", "net.cpp:202")
            for b, nb in zip(bottoms, bottom_needs):
                if contributes:
                    under_loss.add(b)
                else:
                    nb = False
                if not nb:
                    skip.add(b)
        if self.enabled:
            for out in outputs:
                glog.info(f"This network produces output {out}", "net.cpp:244")
            glog.info("Network initialization done.", "net.cpp:257")
        return need
