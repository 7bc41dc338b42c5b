"""SoftmaxCrossEntropyLoss: cross-entropy of softmax(x) against a probability-vector bottom.

A pixsent extension, NOT a BVLC Caffe layer (a real Caffe binary rejects the type): it trains on soft
labels such as a text teacher's (p_neg, p_pos). loss = -sum_n sum_c t[n,c] * log softmax(x)[n,c] / N,
N the batch (outer) size, so with one-hot targets it equals SoftmaxWithLoss under BATCH_SIZE
normalisation; ``loss_param.normalization`` FULL / VALID (both outer x inner) and NONE are honoured too.
The gradient with respect to x is (softmax(x) * sum_c t - t) / N; targets receive no gradient. Bottom 1
holds N x C (x inner) values in any shape, e.g. N x 2 x 1 x 1 from a Data layer reading float Datums.
"""

from __future__ import annotations

import math

import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.layers.common import canonical_axis
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError

TYPE = "SoftmaxCrossEntropyLoss"
LP = caffe_pb2.LossParameter


@register_layer(TYPE)
class SoftmaxCrossEntropyLoss(Layer):
    """-sum(t * log_softmax(x)) / normaliser; an optional second top is softmax(x)."""

    is_loss = True

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        if len(bottom_shapes) != 2:
            raise NetError(f"layer {self.name!r}: {TYPE} takes two bottoms (scores, target probabilities)")
        x, t = bottom_shapes
        if math.prod(x) != math.prod(t):
            raise NetError(f"layer {self.name!r}: target shape {t} does not hold one value per score {x}")
        return [()] + [x] * (len(self.param.top) - 1)

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x, t = bottoms
        axis = canonical_axis(self.name, self.param.softmax_param.axis, x.dim())
        outer = math.prod(x.shape[:axis])
        inner = math.prod(x.shape[axis + 1 :])
        logp = torch.log_softmax(x, dim=axis)
        target = t.detach().reshape(x.shape).to(logp.dtype)
        mode = (
            self.param.loss_param.normalization
            if self.param.loss_param.HasField("normalization")
            else LP.BATCH_SIZE
        )
        norm = {LP.FULL: outer * inner, LP.VALID: outer * inner, LP.BATCH_SIZE: outer, LP.NONE: 1}[mode]
        loss = -(target * logp).sum() / float(max(1, norm))
        tops = [loss]
        if len(self.param.top) > 1:
            tops.append(torch.softmax(x, dim=axis))
        return tops
