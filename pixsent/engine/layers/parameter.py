"""Layers whose output is a learned table: Parameter (the whole blob) and Embed (rows picked by index)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.layers.guards import count_bottoms, refuse_backward
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError


class _ShareDiff(torch.autograd.Function):
    """A copy of the parameter whose backward OVERWRITES the parameter's diff with the top's diff.

    Caffe's ParameterLayer shares its top's data and diff with its blob, and the consuming layer's
    backward assigns the top diff, so every backward pass replaces (does not add to) the parameter diff:
    with iter_size > 1 only the last pass counts. Within one pass several consumers are summed first,
    as Caffe's Split does.
    """

    @staticmethod
    def forward(ctx, param: torch.Tensor) -> torch.Tensor:
        ctx.param = param
        return param.detach().clone()

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        param = ctx.param
        with torch.no_grad():
            if param.grad is None or param.grad.shape != dy.shape:
                param.grad = dy.detach().clone()
            else:
                param.grad.copy_(dy)
        return None


@register_layer("Parameter")
class Parameter(Layer):
    """No bottoms; one top that is the layer's one blob, shaped by parameter_param.shape and zero until
    trained weights are loaded (Caffe gives it no filler). See _ShareDiff for how its diff behaves."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        count_bottoms(self.param, len(bottom_shapes), 0)
        shape = tuple(int(d) for d in self.param.parameter_param.shape.dim)
        if not self.blobs:
            self.blobs.append(torch.zeros(shape, dtype=torch.float32, device=self.ctx.device))
        return [shape]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        p = self.blobs[0]
        if torch.is_grad_enabled() and p.requires_grad:
            return [_ShareDiff.apply(p)]
        return [p.detach().clone()]


@register_layer("Embed")
class Embed(Layer):
    """One-hot inner product as a table lookup (embed_layer.cpp): top = W[int(x)] (+ b), shape
    bottom.shape + (num_output,). W is input_dim x num_output (transposed from InnerProduct), bias
    num_output. Indices are truncated to integers as Caffe's cast does and must lie in [0, input_dim);
    they get no gradient; W's rows accumulate the diffs of every position that picked them."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.embed_param
        self.num_output, self.input_dim = int(p.num_output), int(p.input_dim)
        if self.num_output <= 0:
            raise NetError(f"layer {self.name!r}: Embed num_output must be positive")
        if self.input_dim <= 0:
            raise NetError(f"layer {self.name!r}: Embed input_dim must be positive")
        refuse_backward(self.param, 0, "index input")
        self.bias_term = bool(p.bias_term)
        if not self.blobs:
            self.blobs.append(self.make_param((self.input_dim, self.num_output), p.weight_filler))
            if self.bias_term:
                self.blobs.append(self.make_param((self.num_output,), p.bias_filler))
        return [(*bottom_shapes[0], self.num_output)]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0].detach()
        index = x.to(torch.long)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.input_dim):
            raise NetError(
                f"layer {self.name!r}: Embed index outside [0, {self.input_dim}): "
                f"{float(x.min())}..{float(x.max())}"
            )
        out = F.embedding(index, self.blobs[0])
        if self.bias_term:
            out = out + self.blobs[1]
        return [out]
