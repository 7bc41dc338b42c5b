"""Layers that pick, repeat or rank entries of a blob: Crop, Tile, Filter, BatchReindex, ArgMax."""

from __future__ import annotations

import math

import torch

from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.layers.common import canonical_axis
from pixsent.engine.layers.guards import count_bottoms, refuse_backward
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError


@register_layer("Crop")
class Crop(Layer):
    """Bottom 0 cut to the shape of bottom 1 on every axis from ``crop_param.axis`` (default 2) on.

    As crop_layer.cpp: one ``offset`` applies to every cropped axis, several give one per cropped axis
    (their count must reach the last axis), none means offset 0. Axes before ``axis`` keep bottom 0's
    size. Only bottom 0 gets a gradient (zero outside the window); bottom 1 gives only its shape.
    """

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        count_bottoms(self.param, len(bottom_shapes), 2)
        data, ref = bottom_shapes
        p = self.param.crop_param
        ndim = len(data)
        start = canonical_axis(self.name, p.axis, ndim)
        offsets = list(p.offset)
        if len(offsets) > 1 and start + len(offsets) != ndim:
            raise NetError(
                f"layer {self.name!r}: {len(offsets)} crop offsets for axes {start}..{ndim - 1} of {data}; "
                f"give one offset, or one per axis from axis {start} on"
            )
        if len(ref) < ndim:
            raise NetError(f"layer {self.name!r}: reference bottom {ref} has fewer axes than {data}")
        self.window: list[slice] = []
        shape = []
        for i, size in enumerate(data):
            if i < start:
                self.window.append(slice(None))
                shape.append(size)
                continue
            off = offsets[0] if len(offsets) == 1 else offsets[i - start] if offsets else 0
            if size - off < ref[i]:
                raise NetError(
                    f"layer {self.name!r}: crop of {ref[i]} at offset {off} does not fit axis {i} "
                    f"(size {size}) of {data}"
                )
            self.window.append(slice(off, off + ref[i]))
            shape.append(ref[i])
        return [tuple(shape)]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        return [bottoms[0][tuple(self.window)]]


@register_layer("Tile")
class Tile(Layer):
    """The block of axes ``axis``.. repeated ``tiles`` times along ``axis`` (tile_layer.cpp): for a
    2 x 3 input and axis 1, tiles 2 gives [a0 a1 a2 a0 a1 a2] per row; the backward sums the copies."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.tile_param
        shape = bottom_shapes[0]
        self.axis = canonical_axis(self.name, p.axis, len(shape))
        if not p.HasField("tiles"):
            raise NetError(f"layer {self.name!r}: Tile needs tile_param.tiles")
        if p.tiles <= 0:
            raise NetError(f"layer {self.name!r}: number of tiles must be positive, got {p.tiles}")
        self.tiles = int(p.tiles)
        top = list(shape)
        top[self.axis] *= self.tiles
        return [tuple(top)]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0]
        outer = math.prod(x.shape[: self.axis])
        inner = math.prod(x.shape[self.axis :])
        top = list(x.shape)
        top[self.axis] *= self.tiles
        return [x.reshape(outer, 1, inner).expand(outer, self.tiles, inner).reshape(top)]


@register_layer("Filter")
class Filter(Layer):
    """Keeps the items (along axis 0) of bottoms 0..K-1 whose entry in the last bottom, the selector, is
    non-zero; K tops. Set-up gives the tops the full batch; each forward resizes axis 0 to the number kept
    (filter_layer.cpp). Unkept items get zero gradient; the selector gets none."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        n = len(bottom_shapes)
        if n < 2 or len(self.param.top) != n - 1:
            raise NetError(
                f"layer {self.name!r}: Filter takes K >= 1 bottoms plus a selector and makes K tops "
                f"(got {n} bottoms, {len(self.param.top)} tops)"
            )
        refuse_backward(self.param, n - 1, "selector")
        self._check(bottom_shapes)
        return [tuple(s) for s in bottom_shapes[:-1]]

    def _check(self, shapes: list[Shape]) -> None:
        sel = shapes[-1]
        if not sel or any(d != 1 for d in sel[1:]):
            raise NetError(f"layer {self.name!r}: selector shape {sel} must be (N,) or N x 1 x ... x 1")
        for s in shapes[:-1]:
            if not s or s[0] != sel[0]:
                raise NetError(f"layer {self.name!r}: bottom {s} and selector {sel} differ in axis 0")

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        self._check([tuple(b.shape) for b in bottoms])
        keep = torch.nonzero(bottoms[-1].detach().reshape(-1) != 0).reshape(-1)
        return [b.index_select(0, keep) for b in bottoms[:-1]]


@register_layer("BatchReindex")
class BatchReindex(Layer):
    """top[i] = bottom 0 [int(index[i])] for a 1-axis index bottom (batch_reindex_layer.cpp); the backward
    sums the top diffs of every copy into their source item; the index gets no gradient."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        count_bottoms(self.param, len(bottom_shapes), 2)
        refuse_backward(self.param, 1, "index")
        data, index = bottom_shapes
        if len(index) != 1:
            raise NetError(f"layer {self.name!r}: index bottom must have 1 axis, has shape {index}")
        if not data:
            raise NetError(f"layer {self.name!r}: data bottom needs at least 1 axis")
        return [(index[0], *data[1:])]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x, index = bottoms[0], bottoms[1].detach()
        if index.numel() and (bool((index < 0).any()) or bool((index >= x.shape[0]).any())):
            raise NetError(
                f"layer {self.name!r}: reindex values must lie in [0, {x.shape[0]}), got "
                f"{float(index.min())}..{float(index.max())}"
            )
        return [x.index_select(0, index.to(torch.long))]


@register_layer("ArgMax")
class ArgMax(Layer):
    """Indices (as floats) of the top_k largest values, largest first (argmax_layer.cpp).

    With ``axis``: along that axis, top shape = bottom's with that axis top_k; ``out_max_val`` then gives
    the values instead of the indices. Without: over everything after axis 0, top N x 1 x top_k (at
    least 3 axes), or N x 2 x top_k with indices then values when ``out_max_val``. Caffe sorts
    (value, index) pairs descending, so equal values list the larger index first. No backward.
    """

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.argmax_param
        shape = bottom_shapes[0]
        self.top_k = int(p.top_k)
        self.out_max_val = bool(p.out_max_val)
        if self.top_k < 1:
            raise NetError(f"layer {self.name!r}: top_k must not be less than 1")
        self.axis = canonical_axis(self.name, p.axis, len(shape)) if p.HasField("axis") else None
        if self.axis is not None:
            if self.top_k > shape[self.axis]:
                raise NetError(f"layer {self.name!r}: top_k {self.top_k} exceeds axis {self.axis} of {shape}")
            top = list(shape)
            top[self.axis] = self.top_k
            return [tuple(top)]
        if self.top_k > math.prod(shape[1:]):
            raise NetError(f"layer {self.name!r}: top_k {self.top_k} exceeds the {shape[1:]} values per item")
        top = [1] * max(3, len(shape))
        top[0], top[1], top[2] = shape[0], 2 if self.out_max_val else 1, self.top_k
        return [tuple(top)]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0].detach()
        if self.axis is None:
            v = x.reshape(x.shape[0], 1, -1)
            axis = 2
        else:
            v, axis = x, self.axis
        dim = v.shape[axis]
        flipped = v.flip(axis)  # a stable descending sort of the reversed order puts larger indices first
        values, order = torch.sort(flipped, dim=axis, descending=True, stable=True)
        values = values.narrow(axis, 0, self.top_k)
        index = (dim - 1 - order.narrow(axis, 0, self.top_k)).to(x.dtype)
        if self.axis is not None:
            return [values if self.out_max_val else index]
        n = x.shape[0]
        top = index if not self.out_max_val else torch.cat([index, values], dim=1)
        return [top.reshape(n, top.shape[1], self.top_k, *([1] * (x.dim() - 3)))]
