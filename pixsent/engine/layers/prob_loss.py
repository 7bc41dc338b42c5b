"""Losses on class probabilities: InfogainLoss (softmax inside, weighted by a matrix H) and
MultinomialLogisticLoss (on probabilities a previous layer made)."""

from __future__ import annotations

import math

import numpy as np
import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.layers.base import Shape
from pixsent.engine.layers.common import canonical_axis
from pixsent.engine.layers.guards import count_bottoms, count_tops, refuse_backward
from pixsent.engine.layers.loss import _LossLayer, normalizer
from pixsent.engine.layers.margin_loss import int_labels, legacy4, same_batch
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError, PixsentError

LP = caffe_pb2.LossParameter
#: Caffe's kLOG_THRESHOLD (loss_layer.hpp): probabilities are clamped to it before the log
LOG_THRESHOLD = float(np.float32(1e-20))


def clamped_log(p: torch.Tensor) -> torch.Tensor:
    """log(max(p, 1e-20)) whose gradient is 1 / max(p, 1e-20) everywhere, as Caffe's backward uses it
    (the exact derivative would be 0 below the threshold)."""
    q = torch.clamp(p.detach(), min=LOG_THRESHOLD)
    return p / q + (torch.log(q) - p / q).detach()


@register_layer("InfogainLoss")
class InfogainLoss(_LossLayer):
    """-sum over positions of sum_l H[label, l] log(max(softmax(x)_l, 1e-20)), over the normaliser.

    As BVLC master's infogain_loss_layer.cpp: the softmax runs along infogain_loss_param.axis (default 1)
    inside the layer; H (num_labels x num_labels) is the third bottom or the BlobProto file
    infogain_loss_param.source; loss_param.ignore_label and normalization (default VALID) apply, and the
    deprecated ``normalize`` is refused. Gradient (softmax * rowsum(H)[label] - H[label]) / normaliser,
    none to the label or H. An optional second top is the softmax (its diff is ignored, as in Caffe).
    """

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        count_bottoms(self.param, len(bottom_shapes), 2, 3)
        count_tops(self.param, 1, 2)
        refuse_backward(self.param, 1, "label")
        refuse_backward(self.param, 2, "infogain matrix")
        lp = self.param.loss_param
        if lp.HasField("normalize"):
            raise NetError(f"layer {self.name!r}: loss_param.normalize is deprecated; use normalization")
        x, label = bottom_shapes[0], bottom_shapes[1]
        same_batch(self.name, x, label)
        self.axis = canonical_axis(self.name, self.param.infogain_loss_param.axis, len(x))
        outer, inner = math.prod(x[: self.axis]), math.prod(x[self.axis + 1 :])
        if outer * inner != math.prod(label):
            raise NetError(
                f"layer {self.name!r}: {math.prod(label)} labels for {outer} x {inner} predictions of {x}"
            )
        k = x[self.axis]
        self.H: torch.Tensor | None = None
        if len(bottom_shapes) < 3:
            self.H = self._read_h()
            count = self.H.numel()
        else:
            count = math.prod(bottom_shapes[2])
        if count != k * k:
            raise NetError(f"layer {self.name!r}: infogain matrix H has {count} values, needs {k} x {k}")
        tops: list[Shape] = [()]
        if len(self.param.top) > 1:
            tops.append(x)
        return tops

    def _read_h(self) -> torch.Tensor:
        from pixsent.formats.binaryproto import read_blobproto
        from pixsent.formats.blob import blob_to_array

        source = self.param.infogain_loss_param.source
        if not self.param.infogain_loss_param.HasField("source"):
            raise NetError(
                f"layer {self.name!r}: infogain matrix source must be specified (or a third bottom)"
            )
        try:
            h = blob_to_array(read_blobproto(source), source=source)
        except PixsentError as exc:
            raise NetError(f"layer {self.name!r}: infogain_loss_param.source: {exc}") from None
        return torch.as_tensor(np.ascontiguousarray(h, dtype=np.float32), device=self.ctx.device)

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x, label = bottoms[0], bottoms[1]
        k = x.shape[self.axis]
        outer, inner = math.prod(x.shape[: self.axis]), math.prod(x.shape[self.axis + 1 :])
        h = (self.H if self.H is not None else bottoms[2].detach()).reshape(k, k).to(x.dtype)
        prob = torch.softmax(x, dim=self.axis)
        p3 = prob.reshape(outer, k, inner)
        lab = label.detach().reshape(outer, inner).to(torch.long)
        lp = self.param.loss_param
        valid = (
            lab != lp.ignore_label if lp.HasField("ignore_label") else torch.ones_like(lab, dtype=torch.bool)
        )
        safe = torch.where(valid, lab, torch.zeros_like(lab))
        if int(safe.min()) < 0 or int(safe.max()) >= k:
            raise NetError(f"layer {self.name!r}: label outside [0, {k})")
        weights = h[safe].permute(0, 2, 1) * valid[:, None, :].to(x.dtype)  # outer x k x inner: H[label, l]
        count = valid.sum() if lp.HasField("ignore_label") else outer * inner
        norm = normalizer(lp.normalization, outer, inner, count)
        # value log(max(p, 1e-20)) as Caffe computes it; gradient that of the unclamped log-softmax, which is
        # Caffe's p * rowsum(H)[label] - H[label] everywhere
        logp = torch.log_softmax(x, dim=self.axis).reshape(outer, k, inner)
        logp = logp + (torch.log(torch.clamp(p3.detach(), min=LOG_THRESHOLD)) - logp).detach()
        loss = -(weights * logp).sum() / norm
        tops = [loss]
        if len(self.param.top) > 1:
            tops.append(prob.detach())
        return tops


@register_layer("MultinomialLogisticLoss")
class MultinomialLogisticLoss(_LossLayer):
    """-sum_i log(max(p[i, label_i], 1e-20)) / N for probabilities p read as N x (count / N) and labels
    N x 1 x 1 x 1 (multinomial_logistic_loss_layer.cpp); gradient -1 / max(p, 1e-20) / N at the labelled
    entries (also below the threshold, where Caffe keeps the clamped value), none to the labels."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        count_bottoms(self.param, len(bottom_shapes), 2)
        refuse_backward(self.param, 1, "label")
        same_batch(self.name, bottom_shapes[0], bottom_shapes[1])
        if legacy4(bottom_shapes[1], self.name)[1:] != (1, 1, 1):
            raise NetError(f"layer {self.name!r}: labels must be N x 1 x 1 x 1, got {bottom_shapes[1]}")
        return super().setup(bottom_shapes)

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        p = bottoms[0]
        n = p.shape[0]
        rows = p.reshape(n, -1)
        label = int_labels(bottoms[1], n, 0, rows.shape[1], self.name)
        picked = rows.gather(1, label[:, None])
        return [-clamped_log(picked).sum() / n]
