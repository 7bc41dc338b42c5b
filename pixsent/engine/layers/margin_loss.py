"""Margin losses: HingeLoss (one-vs-all SVM) and ContrastiveLoss (siamese pairs)."""

from __future__ import annotations

import math

import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.layers.base import Shape
from pixsent.engine.layers.guards import count_bottoms, refuse_backward
from pixsent.engine.layers.loss import _LossLayer
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError

HP = caffe_pb2.HingeLossParameter


def legacy4(shape: Shape, layer: str) -> tuple[int, int, int, int]:
    """Caffe's num/channels/height/width of a blob (at most 4 axes, padded with trailing 1s)."""
    if len(shape) > 4:
        raise NetError(f"layer {layer!r}: needs a blob of at most 4 axes, got {shape}")
    n, c, h, w = tuple(shape) + (1,) * (4 - len(shape))
    return n, c, h, w


def same_batch(layer: str, a: Shape, b: Shape) -> None:
    """Caffe's LossLayer::Reshape check: data and label share their first dimension."""
    if not a or not b or a[0] != b[0]:
        raise NetError(f"layer {layer!r}: data {a} and label {b} should have the same first dimension")


def int_labels(label: torch.Tensor, n: int, lo: int, hi: int, layer: str) -> torch.Tensor:
    """The first ``n`` values of the label blob (Caffe reads label[i] for item i) truncated to integers as
    static_cast<int> does, each in [lo, hi)."""
    lab = label.detach().reshape(-1)[:n].to(torch.long)
    if n and (int(lab.min()) < lo or int(lab.max()) >= hi):
        raise NetError(f"layer {layer!r}: label outside [{lo}, {hi}): {int(lab.min())}..{int(lab.max())}")
    return lab


@register_layer("HingeLoss")
class HingeLoss(_LossLayer):
    """sum over items i and classes j of max(0, 1 - d_ij x_ij)^p / N with d = +1 for the true class and -1
    otherwise, p = 1 (L1, default) or 2 (L2); x read as N x (count / N). Gradient as hinge_loss_layer.cpp:
    sign of the margin (0 where it is exactly 0) for L1, 2 x margin for L2; labels get none."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        count_bottoms(self.param, len(bottom_shapes), 2)
        refuse_backward(self.param, 1, "label")
        same_batch(self.name, bottom_shapes[0], bottom_shapes[1])
        if self.param.hinge_loss_param.norm not in (HP.L1, HP.L2):
            raise NetError(f"layer {self.name!r}: unknown hinge norm {self.param.hinge_loss_param.norm}")
        return super().setup(bottom_shapes)

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0]
        n = x.shape[0]
        scores = x.reshape(n, -1)
        label = int_labels(bottoms[1], n, 0, scores.shape[1], self.name)
        sign = torch.ones_like(scores).scatter_(1, label[:, None], -1.0)
        margin = torch.relu(1 + scores * sign)  # relu's gradient at 0 is 0, as caffe_cpu_sign's
        if self.param.hinge_loss_param.norm == HP.L2:
            return [(margin * margin).sum() / n]
        return [margin.sum() / n]


class _ContrastiveFunction(torch.autograd.Function):
    """Loss and gradient of contrastive_loss_layer.cpp; d = ||a - b|| per pair.

    loss = (sum over similar pairs of d^2 + sum over dissimilar ones of max(margin - d, 0)^2) / (2 N), or
    max(margin - d^2, 0) for dissimilar pairs with ``legacy_version``. Caffe's gradient of a dissimilar
    pair in the default version is -(margin - d) / (d + 1e-4) (a - b) / N where margin > d: the 1e-4 keeps
    it finite at d = 0 and makes it differ slightly from the exact derivative.
    """

    @staticmethod
    def forward(ctx, a, b, similar, margin: float, legacy: bool):
        diff = a - b
        dist_sq = (diff * diff).sum(dim=1)
        if legacy:
            far = torch.clamp(margin - dist_sq, min=0)
        else:
            far = torch.clamp(margin - dist_sq.sqrt(), min=0) ** 2
        n = a.shape[0]
        loss = torch.where(similar, dist_sq, far).sum() / n / 2
        ctx.save_for_backward(diff, dist_sq, similar)
        ctx.cfg = (margin, legacy, n)
        return loss

    @staticmethod
    def backward(ctx, dloss):
        diff, dist_sq, similar = ctx.saved_tensors
        margin, legacy, n = ctx.cfg
        alpha = dloss / n
        if legacy:
            mdist = margin - dist_sq
            beta = -alpha * torch.ones_like(dist_sq)
        else:
            dist = dist_sq.sqrt()
            mdist = margin - dist
            beta = -alpha * mdist / (dist + 1e-4)
        coeff = torch.where(similar, alpha.expand_as(dist_sq), torch.where(mdist > 0, beta, 0 * beta))
        grad = coeff[:, None] * diff
        return grad, -grad, None, None, None


@register_layer("ContrastiveLoss")
class ContrastiveLoss(_LossLayer):
    """Siamese loss on bottoms a, b (N x C [x 1 x 1]) and a pair label y (N [x 1 x 1 x 1], similar when
    int(y) != 0); contrastive_loss_param margin (default 1) and legacy_version. See _ContrastiveFunction.
    Both feature bottoms get gradients, the label none."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        count_bottoms(self.param, len(bottom_shapes), 3)
        refuse_backward(self.param, 2, "pair label")
        a, b, y = (legacy4(s, self.name) for s in bottom_shapes)
        if a[1] != b[1]:
            raise NetError(
                f"layer {self.name!r}: bottoms {bottom_shapes[0]} and {bottom_shapes[1]} differ in channels"
            )
        if a[2:] != (1, 1) or b[2:] != (1, 1) or y[1:] != (1, 1, 1):
            raise NetError(
                f"layer {self.name!r}: ContrastiveLoss needs N x C x 1 x 1 features and N x 1 x 1 x 1 "
                f"labels, got {bottom_shapes}"
            )
        same_batch(self.name, bottom_shapes[0], bottom_shapes[1])
        if y[0] != a[0]:
            raise NetError(f"layer {self.name!r}: {y[0]} pair labels for {a[0]} pairs")
        return super().setup(bottom_shapes)

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        a, b, y = bottoms
        n = a.shape[0]
        similar = y.detach().reshape(n).to(torch.int64) != 0
        p = self.param.contrastive_loss_param
        margin = float(torch.tensor(p.margin, dtype=torch.float32))
        c = math.prod(a.shape[1:])
        return [
            _ContrastiveFunction.apply(a.reshape(n, c), b.reshape(n, c), similar, margin, p.legacy_version)
        ]
