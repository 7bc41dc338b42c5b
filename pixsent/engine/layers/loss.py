"""Loss and metric layers: SoftmaxWithLoss, EuclideanLoss, SigmoidCrossEntropyLoss, Accuracy."""

from __future__ import annotations

import math

import numpy as np
import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.layers.common import canonical_axis
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError

LP = caffe_pb2.LossParameter
FLT_MIN = float(np.finfo(np.float32).tiny)
LOG_FLT_MIN = math.log(FLT_MIN)


def normalization_mode(param: caffe_pb2.LayerParameter) -> int:
    """The LossParameter mode; the legacy ``normalize`` flag maps true -> VALID, false -> BATCH_SIZE."""
    lp = param.loss_param
    if not lp.HasField("normalization") and lp.HasField("normalize"):
        return LP.VALID if lp.normalize else LP.BATCH_SIZE
    return lp.normalization


def normalizer(mode: int, outer: int, inner: int, valid: torch.Tensor | int) -> torch.Tensor | float:
    """Caffe's GetNormalizer: FULL outer*inner, VALID valid count, BATCH_SIZE outer, NONE 1; at least 1."""
    if mode == LP.FULL:
        return float(max(1, outer * inner))
    if mode == LP.VALID:
        if isinstance(valid, torch.Tensor):
            return torch.clamp(valid.to(torch.float32), min=1.0)
        return float(max(1, valid))
    if mode == LP.BATCH_SIZE:
        return float(max(1, outer))
    if mode == LP.NONE:
        return 1.0
    raise NetError(f"unknown loss normalization mode {mode}")


class _LossLayer(Layer):
    """Caffe's LossLayer: a scalar top with loss_weight 1 unless given."""

    is_loss = True

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return [()] + [bottom_shapes[0]] * (len(self.param.top) - 1)


@register_layer("SoftmaxWithLoss")
class SoftmaxWithLoss(_LossLayer):
    """-log(max(softmax(x)[label], FLT_MIN)) summed over valid positions, divided by the normaliser.

    The gradient is Caffe's (softmax - onehot) / normaliser at every non-ignored position, unaffected by
    the FLT_MIN clamp; an optional second top is the softmax itself.
    """

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x, label = bottoms[0], bottoms[1]
        axis = canonical_axis(self.name, self.param.softmax_param.axis, x.dim())
        outer = math.prod(x.shape[:axis])
        inner = math.prod(x.shape[axis + 1 :])
        if label.numel() != outer * inner:
            raise NetError(
                f"layer {self.name!r}: label count {label.numel()} must equal {outer} x {inner} predictions"
            )
        logp = torch.log_softmax(x, dim=axis)
        lab = label.reshape(outer, 1, inner).to(torch.long)
        logp3 = logp.reshape(outer, x.shape[axis], inner)
        lp = self.param.loss_param
        if lp.HasField("ignore_label"):
            valid = lab != lp.ignore_label
            safe = torch.where(valid, lab, torch.zeros_like(lab))
        else:
            valid = None
            safe = lab
        if int(safe.min()) < 0 or int(safe.max()) >= x.shape[axis]:
            raise NetError(f"layer {self.name!r}: label outside [0, {x.shape[axis]})")
        picked = torch.gather(logp3, 1, safe)
        # value clamped at log(FLT_MIN) as Caffe does, gradient that of the unclamped log-softmax
        picked = picked + (torch.clamp(picked, min=LOG_FLT_MIN) - picked).detach()
        if valid is not None:
            picked = picked * valid.to(picked.dtype)
            count = valid.sum()
        else:
            count = outer * inner
        norm = normalizer(normalization_mode(self.param), outer, inner, count)
        loss = -picked.sum() / norm
        tops = [loss]
        if len(self.param.top) > 1:
            tops.append(torch.softmax(x, dim=axis))
        return tops


@register_layer("EuclideanLoss")
class EuclideanLoss(_LossLayer):
    """sum((a - b)^2) / (2 N), N the first axis; gradients flow to both bottoms."""

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        a, b = bottoms
        if a.numel() != b.numel():
            raise NetError(f"layer {self.name!r}: bottoms have {a.numel()} and {b.numel()} values")
        d = a - b.reshape(a.shape)
        return [(d * d).sum() / (2.0 * a.shape[0])]


@register_layer("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(_LossLayer):
    """Cross-entropy of sigmoid(x) against targets in [0, 1], normalised (default BATCH_SIZE in Caffe)."""

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x, t = bottoms
        t = t.reshape(x.shape)
        per = torch.clamp(x, min=0) - x * t + torch.log1p(torch.exp(-torch.abs(x)))
        lp = self.param.loss_param
        if lp.HasField("ignore_label"):
            valid = t != lp.ignore_label
            per = per * valid.to(per.dtype)
            count: torch.Tensor | int = valid.sum()
        else:
            count = x.numel()
        mode = normalization_mode(self.param)
        if not lp.HasField("normalization") and not lp.HasField("normalize"):
            mode = LP.BATCH_SIZE
        return [per.sum() / normalizer(mode, x.shape[0], x.numel() // x.shape[0], count)]


@register_layer("Accuracy")
class Accuracy(Layer):
    """Share of samples whose true class is among the top_k scores.

    As BVLC master 9b891540: a sample counts when fewer than top_k other classes score >= the true
    class (so a tie with another class counts as wrong); ignore_label positions are skipped; an
    optional second top gives per-class accuracy. No gradient.
    """

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        tops: list[Shape] = [()]
        if len(self.param.top) > 1:
            axis = canonical_axis(self.name, self.param.accuracy_param.axis, len(bottom_shapes[0]))
            tops.append((bottom_shapes[0][axis],))
        return tops

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            x, label = bottoms[0].detach(), bottoms[1].detach()
            p = self.param.accuracy_param
            axis = canonical_axis(self.name, p.axis, x.dim())
            outer = math.prod(x.shape[:axis])
            inner = math.prod(x.shape[axis + 1 :])
            classes = x.shape[axis]
            scores = x.reshape(outer, classes, inner)
            lab = label.reshape(outer, 1, inner).to(torch.long)
            valid = torch.ones_like(lab, dtype=torch.bool)
            if p.HasField("ignore_label"):
                valid = lab != p.ignore_label
            safe = torch.where(valid, lab, torch.zeros_like(lab))
            if int(safe.min()) < 0 or int(safe.max()) >= classes:
                raise NetError(f"layer {self.name!r}: label outside [0, {classes})")
            true = torch.gather(scores, 1, safe)
            better = (scores >= true).sum(dim=1, keepdim=True) - 1
            correct = (better < int(p.top_k)) & valid
            count = int(valid.sum())
            acc = correct.sum().to(torch.float32) / count if count else torch.zeros((), device=x.device)
            tops = [acc.reshape(())]
            if len(self.param.top) > 1:
                onehot = torch.zeros(outer, classes, inner, device=x.device)
                per_n = onehot.scatter_add(1, safe, valid.to(torch.float32)).sum(dim=(0, 2))
                per_ok = onehot.scatter_add(1, safe, correct.to(torch.float32)).sum(dim=(0, 2))
                tops.append(torch.where(per_n > 0, per_ok / per_n.clamp(min=1), torch.zeros_like(per_n)))
            return tops
