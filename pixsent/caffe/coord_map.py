"""pycaffe's ``caffe.coord_map``: how coordinates map between tops of a net_spec graph, and ``crop`` to
align a top with another (FCN-style nets), as BVLC python/caffe/coord_map.py.

A map is (axis, a, b): a coordinate x of the first top is a * x + b in the second, per spatial axis
(numpy arrays over the axes). Convolution, Pooling and Im2col map with a = 1 / stride and
b = (pad - (ks - 1) / 2) / stride, where ks is the dilated kernel size (ks - 1) * dilation + 1;
Deconvolution with a = stride and b = (ks - 1) / 2 - pad; element-wise layers (ReLU, LRN, Dropout,
BatchNorm, Eltwise, ...) pass coordinates through; Crop shifts by its offset from ``axis`` on (default 2),
the map's axis being axis - 1. Maps compose along the graph; ``coord_map_from_to`` walks back from both
tops to a common ancestor. Legacy ``kernel_h``/``pad_w``-style parameters are refused, as in pycaffe.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pixsent.caffe.net_spec import Top
from pixsent.caffe.net_spec import layers as L

PASS_THROUGH_LAYERS = [
    "AbsVal",
    "BatchNorm",
    "Bias",
    "BNLL",
    "Dropout",
    "Eltwise",
    "ELU",
    "Log",
    "LRN",
    "Exp",
    "MVN",
    "Power",
    "ReLU",
    "PReLU",
    "Scale",
    "Sigmoid",
    "Split",
    "TanH",
    "Threshold",
]

Map = tuple[Any, Any, Any]


class UndefinedMapException(Exception):
    """The layer has no coordinate map (e.g. InnerProduct)."""


class AxisMismatchException(Exception):
    """Two maps over different axes cannot compose."""


def _option(fn, message: str, key: str, default: Any) -> Any:
    params = fn.params.get(message, fn.params)
    return params.get(key, default) if isinstance(params, dict) else getattr(params, key, default)


def conv_params(fn) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(axis, stride, dilated kernel size, pad) of a Convolution/Pooling/Deconvolution call."""
    legacy = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"}
    if legacy & set(fn.params):
        raise AssertionError("cropping does not support legacy _h/_w params")
    axis = _option(fn, "convolution_param", "axis", 1)
    ks = np.array(_option(fn, "convolution_param", "kernel_size", None), ndmin=1)
    dilation = np.array(_option(fn, "convolution_param", "dilation", 1), ndmin=1)
    stride = np.array(_option(fn, "convolution_param", "stride", 1), ndmin=1)
    pad = np.array(_option(fn, "convolution_param", "pad", 0), ndmin=1)
    return axis, stride, (ks - 1) * dilation + 1, pad


def crop_params(fn) -> tuple[int, np.ndarray]:
    """(axis, offset) of a Crop call (axis defaults to 2: crop H and W of N x C x H x W)."""
    axis = _option(fn, "crop_param", "axis", 2)
    offset = np.array(_option(fn, "crop_param", "offset", 0), ndmin=1)
    return axis, offset


def coord_map(fn) -> Map:
    """The map from a layer call's bottom coordinates to its top's."""
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, ks, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (ks - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, ks, pad = conv_params(fn)
        return axis, stride, (ks - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset
    raise UndefinedMapException


def compose(base_map: Map, next_map: Map) -> Map:
    """The map ``next_map`` after ``base_map``."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        ax = ax2
    elif ax2 is None or ax1 == ax2:
        ax = ax1
    else:
        raise AxisMismatchException
    return ax, a1 * a2, a1 * b2 + b1


def inverse(coord_map: Map) -> Map:
    """The map back."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def _bottoms(top: Top) -> list[Top]:
    inputs = [t for t in top.fn.inputs if isinstance(t, Top)]
    return inputs[:1] if top.fn.type_name == "Crop" else inputs


def _maps_back(top: Top) -> dict[Top, Map]:
    """Map from every ancestor of ``top`` (reachable through mapped layers) to ``top``."""
    maps: dict[Top, Map] = {top: (None, 1, 0)}
    frontier = [top]
    while frontier:
        t = frontier.pop()
        try:
            step = coord_map(t.fn)
        except UndefinedMapException:
            continue
        for bottom in _bottoms(t):
            maps[bottom] = compose(maps[t], step)
            frontier.append(bottom)
    return maps


def coord_map_from_to(top_from: Top, top_to: Top) -> Map:
    """The map taking coordinates of ``top_from`` to coordinates of ``top_to``."""
    from_maps = _maps_back(top_from)
    to_maps: dict[Top, Map] = {top_to: (None, 1, 0)}
    frontier = [top_to]
    while frontier:
        t = frontier.pop()
        if t in from_maps:
            return compose(to_maps[t], inverse(from_maps[t]))
        try:
            step = coord_map(t.fn)
        except UndefinedMapException:
            continue
        for bottom in _bottoms(t):
            to_maps[bottom] = compose(to_maps[t], step)
            frontier.append(bottom)
    raise RuntimeError("Could not compute map between tops; are they connected by spatial layers?")


def crop(top_from: Top, top_to: Top) -> Top:
    """A Crop layer call cutting ``top_from`` to align with ``top_to`` (offsets from the coordinate map)."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    if not np.all(a == 1):
        raise AssertionError(f"scale mismatch on crop (a = {a})")
    if not np.all(b <= 0):
        raise AssertionError(f"cannot crop negative offset (b = {b})")
    if not np.all(np.round(b) == b):
        raise AssertionError(f"cannot crop noninteger offset (b = {b})")
    offset = [int(v) for v in -np.round(np.atleast_1d(b)).astype(int)]
    return L.Crop(top_from, top_to, crop_param=dict(axis=ax + 1, offset=offset))
