"""Convolution -> BatchNorm (global statistics) -> Scale, run as one convolution where nothing learns.

With its statistics frozen, BatchNorm is a per-channel affine map, and so is a Scale with learned
parameters: together with the convolution before them they are one convolution with weights W * a and
bias b * a + c (a = gamma / sqrt(var + eps), c = beta - mean * a). Residual nets (open_nsfw, ResNet) spend
about a third of a frozen forward pass in those two element-wise layers. The fold applies only when the
three layers sit in place on one blob, the pass runs all three, and none of them needs a gradient (TEST
nets, the frozen trunk of a fine-tune), so autograd and Caffe's backward are untouched. The folded weights
are made afresh every pass (a float32 multiply per weight, a few ms for a ResNet-50 at half width), since
pycaffe's numpy views let a user rewrite any blob unseen between passes. The per-channel factors are
computed in float64; results differ from the layer-by-layer pass by float32 rounding only (about 1e-7
relative per layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FoldChain:
    """Indices of a Convolution, the in-place BatchNorm after it and the optional in-place Scale."""

    conv: int
    bn: int
    scale: int | None

    @property
    def last(self) -> int:
        return self.scale if self.scale is not None else self.bn

    def layers(self) -> range:
        return range(self.conv, self.last + 1)


def find_chains(layers, bottom_names: list[list[str]], top_names: list[list[str]]) -> dict[int, FoldChain]:
    """Convolution index -> its foldable chain: the conv writes one blob that a global-statistics
    BatchNorm and then (optionally) a one-bottom Scale rewrite in place, right after it."""
    chains: dict[int, FoldChain] = {}
    n = len(layers)
    for i, conv in enumerate(layers[:-1]):
        if conv.type != "Convolution" or len(top_names[i]) != 1 or len(bottom_names[i]) != 1:
            continue
        blob = top_names[i][0]
        bn = layers[i + 1]
        if bn.type != "BatchNorm" or not bn.use_global:
            continue
        if bottom_names[i + 1] != [blob] or top_names[i + 1] != [blob]:
            continue
        scale = None
        if i + 2 < n:
            nxt = layers[i + 2]
            if (
                nxt.type == "Scale"
                and bottom_names[i + 2] == [blob]
                and top_names[i + 2] == [blob]
                and not nxt.scale_from_bottom
            ):
                scale = i + 2
        chains[i] = FoldChain(i, i + 1, scale)
    return chains


def folded_weights(chain: FoldChain, layers) -> tuple[torch.Tensor, torch.Tensor]:
    """(W * a, b * a + c) of the chain from its blobs' current values."""
    conv, bn = layers[chain.conv], layers[chain.bn]
    scale = layers[chain.scale] if chain.scale is not None else None
    with torch.no_grad():
        weight = conv.blobs[0].detach()
        d = torch.float64
        mean, var = bn.global_stats(d)
        a = 1.0 / torch.sqrt(var + bn.eps)
        c = -mean * a
        if scale is not None:
            gamma = scale.blobs[0].detach().to(d).reshape(-1)
            a, c = a * gamma, c * gamma
            if scale.bias_term:
                c = c + scale.blobs[-1].detach().to(d).reshape(-1)
        bias = conv.blobs[1].detach().to(d) * a + c if conv.bias_term else c
        shape = (-1,) + (1,) * (weight.dim() - 1)
        return weight * a.to(weight.dtype).reshape(shape), bias.to(weight.dtype)


def applies(chain: FoldChain, i0: int, i1: int, grad: bool, need_backward: list[bool]) -> bool:
    """Whether a pass over layers i0..i1 may run the chain folded: all of it runs, none of it learns."""
    inside = i0 <= chain.conv and chain.last <= i1
    return inside and (not grad or not any(need_backward[j] for j in chain.layers()))
