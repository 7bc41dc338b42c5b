"""SPP and Im2col against numpy references written from spp_layer.cpp / pooling_layer.cpp and
im2col.cpp; backward by central finite differences in float64 (relative error <= 1e-6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from layer_harness import build, check_gradients, rel, t64

from pixsent.errors import NetError

RNG = np.random.default_rng(21)


def caffe_pool2d(x: np.ndarray, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int], ave: bool):
    """pooling_layer.cpp (ceil rounding, last window dropped when it starts in the padding)."""
    n, c, h, w = x.shape

    def size(d, kk, ss, pp):
        out = -(-(d + 2 * pp - kk) // ss) + 1
        return out - 1 if pp and (out - 1) * ss >= d + pp else out

    oh, ow = size(h, k[0], s[0], p[0]), size(w, k[1], s[1], p[1])
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s[0] - p[0], j * s[1] - p[1]
            he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
            area = (he - hs) * (we - ws)
            win = x[:, :, max(hs, 0) : min(he, h), max(ws, 0) : min(we, w)]
            y[:, :, i, j] = win.sum((2, 3)) / area if ave else win.max((2, 3))
    return y


def caffe_spp(x: np.ndarray, height: int, ave: bool) -> np.ndarray:
    """GetPoolingParam per level, each pooled, flattened and concatenated (unflattened for one level)."""
    n, _, h, w = x.shape
    outs = []
    for level in range(height):
        bins = 2**level
        kh, kw = math.ceil(h / bins), math.ceil(w / bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        outs.append(caffe_pool2d(x, (kh, kw), (kh, kw), (ph, pw), ave))
    if height == 1:
        return outs[0]
    return np.concatenate([o.reshape(n, -1) for o in outs], axis=1)


@pytest.mark.parametrize(
    "height,pool,shape,top",
    [
        (1, "MAX", (2, 3, 6, 5), (2, 3, 1, 1)),
        (3, "MAX", (2, 3, 13, 11), (2, 3 * (1 + 4 + 16))),
        (3, "AVE", (2, 2, 13, 11), (2, 2 * 21)),
        (2, "AVE", (1, 2, 8, 8), (1, 2 * 5)),
    ],
)
def test_spp_forward_backward(height, pool, shape, top):
    layer, tops = build(f'type: "SPP" spp_param {{ pyramid_height: {height} pool: {pool} }}', [shape])
    assert tops == [top]
    x = RNG.normal(size=shape)
    xb = t64(x, True)
    assert rel(layer.forward([xb])[0].detach(), caffe_spp(x, height, pool == "AVE")) <= 1e-12
    check_gradients(layer, [xb], [xb])


@pytest.mark.parametrize(
    "param,shape,match",
    [
        ("pyramid_height: 3", (1, 1, 5, 5), "pad .* must be smaller than kernel .*level 2"),
        ("", (1, 1, 5, 5), "pyramid_height must be at least 1"),
        ("pyramid_height: 2", (1, 5, 5), "N x C x H x W"),
        ("pyramid_height: 2 pool: STOCHASTIC", (1, 1, 8, 8), "STOCHASTIC"),
    ],
)
def test_spp_setup_checks(param, shape, match):
    with pytest.raises(NetError, match=match):
        build(f'name: "spp" type: "SPP" spp_param {{ {param} }}', [shape])


def caffe_im2col(x, k, p, s, d):
    """im2col.cpp: row (c, ki, kj), column (oh, ow); zero outside the image."""
    n, c, h, w = x.shape
    oh = (h + 2 * p[0] - (d[0] * (k[0] - 1) + 1)) // s[0] + 1
    ow = (w + 2 * p[1] - (d[1] * (k[1] - 1) + 1)) // s[1] + 1
    out = np.zeros((n, c * k[0] * k[1], oh, ow))
    for ch in range(c):
        for ki in range(k[0]):
            for kj in range(k[1]):
                row = (ch * k[0] + ki) * k[1] + kj
                for i in range(oh):
                    for j in range(ow):
                        y, xx = i * s[0] - p[0] + ki * d[0], j * s[1] - p[1] + kj * d[1]
                        if 0 <= y < h and 0 <= xx < w:
                            out[:, row, i, j] = x[:, ch, y, xx]
    return out


@pytest.mark.parametrize(
    "param,k,p,s,d",
    [
        ("kernel_size: 3", (3, 3), (0, 0), (1, 1), (1, 1)),
        ("kernel_size: 3 pad: 1 stride: 2", (3, 3), (1, 1), (2, 2), (1, 1)),
        ("kernel_h: 2 kernel_w: 3 pad_h: 1 stride_h: 1 stride_w: 2", (2, 3), (1, 0), (1, 2), (1, 1)),
        ("kernel_size: 2 dilation: 2 pad: 1", (2, 2), (1, 1), (1, 1), (2, 2)),
    ],
)
def test_im2col_forward_backward(param, k, p, s, d):
    shape = (2, 3, 6, 7)
    layer, tops = build(f'type: "Im2col" convolution_param {{ {param} }}', [shape])
    x = RNG.normal(size=shape)
    want = caffe_im2col(x, k, p, s, d)
    assert tops == [want.shape]
    xb = t64(x, True)
    assert rel(layer.forward([xb])[0].detach(), want) == 0
    check_gradients(layer, [xb], [xb])  # col2im: overlapping windows sum


@pytest.mark.parametrize(
    "param,match", [("", "nonzero"), ("kernel_size: 9", "does not fit"), ("kernel_size: 2 axis: 2", "axis 1")]
)
def test_im2col_setup_checks(param, match):
    with pytest.raises(NetError, match=match):
        build(f'type: "Im2col" convolution_param {{ {param} }}', [(1, 2, 5, 5)])
