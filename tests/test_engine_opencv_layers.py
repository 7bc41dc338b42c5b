"""Every engine layer that OpenCV's Caffe importer also implements, run through both on seeded weights.

OpenCV's ``cv2.dnn.readNetFromCaffe`` implements Caffe's layers independently of pixsent and of Caffe.
Each case is a small net (Input, sometimes a convolution first so weights matter, the layer under test);
pixsent fills its parameters from a seeded generator and writes them with ``Net.save``, OpenCV reads that
prototxt and caffemodel, and both run the same input (TEST phase; OpenCV's layer fusion off so each top is
the layer's own). Whole nets (the golden mini CaffeNet, its fully convolutional twin, the paper's deploy
CaffeNet) run with fusion on, as users run them.

Tolerance: relative error = max |pixsent - opencv| / max |opencv| <= 1e-4 for every top compared
(float32 through different kernels and summation orders; measured: single layers <= 5e-7, whole nets
<= 5e-6).

A case OpenCV cannot import is skipped with ``OPENCV_LACKS`` naming what it lacks (it is still compared
if a later OpenCV gains it). Where OpenCV runs but departs from BVLC Caffe, ``OPENCV_DEVIATES`` names the
Caffe source that settles it, and a ``Twin`` (the same function written with parameters OpenCV reads as
Caffe does) is compared instead. Permute and Normalize are not cases: they are SSD-fork layers, not
Caffe 1.0's, and pixsent registers neither (Silence and HDF5Output have no top to compare; the data
layers read files OpenCV's importer does not).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.net import Net
from pixsent.formats.blob import array_to_blob, blob_to_array
from pixsent.formats.prototxt import read_net

cv2 = pytest.importorskip("cv2")

TOL = 1e-4
SHAPE = (2, 4, 9, 11)  # default input: batch 2, 4 channels, odd non-square spatial size
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    """One layer under test: prototxt after the Input layer, inputs, and the layer whose tops are compared."""

    id: str
    layers: str
    layer: str
    inputs: dict[str, tuple[int, ...]] = field(default_factory=lambda: {"data": SHAPE})
    positive: bool = False  # inputs drawn in [0.5, 2) (Log, fractional Power)
    fixed: dict[str, tuple[float, ...]] = field(default_factory=dict)  # inputs given as values (flattened)
    bn_factor: float = 2.5  # BatchNorm's third blob (the statistics are stored multiplied by it)


def L(
    name: str, type_: str, bottoms: str | list[str] = "data", tops: str | list[str] | None = None, p: str = ""
) -> str:
    """Prototxt text of one layer (its single top named like the layer unless given)."""
    bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
    tops = [name] if tops is None else [tops] if isinstance(tops, str) else tops
    b = "".join(f' bottom: "{x}"' for x in bottoms)
    t = "".join(f' top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}"{b}{t} {p} }}\n'


def conv(name: str = "c", bottom: str = "data", p: str = "num_output: 5 kernel_size: 3") -> str:
    return L(name, "Convolution", bottom, p=f"convolution_param {{ {p} }}")


def deconv(p: str) -> str:
    return L("d", "Deconvolution", p=f"convolution_param {{ {p} }}")


def pool(p: str, bottom: str = "data") -> str:
    return L("p", "Pooling", bottom, p=f"pooling_param {{ {p} }}")


def sinks(tops: list[str]) -> str:
    """A consumer per top: OpenCV gives a layer only as many outputs as its tops have consumers."""
    return "".join(L(f"sink_{t}", "Power", t, p="power_param { shift: 1 }") for t in tops)


def multi(
    id_: str, type_: str, tops: list[str], p: str = "", before: str = "", bottom: str = "data", **kw
) -> Case:
    """A layer ``s`` with several tops, each consumed."""
    return Case(id_, before + L("s", type_, bottom, tops, p) + sinks(tops), "s", **kw)


def one(type_: str, p: str = "", **kw) -> Case:
    """A layer ``x`` of this type straight on the input."""
    return Case(kw.pop("id"), L("x", type_, p=p), "x", **kw)


def after_conv(type_: str, p: str = "", **kw) -> Case:
    """A layer ``x`` of this type on a 3x3 convolution's output (so trained weights reach it)."""
    return Case(
        kw.pop("id"), conv("c", p="num_output: 6 kernel_size: 3 pad: 1") + L("x", type_, "c", p=p), "x", **kw
    )


CONV = [
    Case("conv/basic", conv(), "c"),
    Case("conv/pad1_stride2", conv(p="num_output: 5 kernel_size: 3 pad: 1 stride: 2"), "c"),
    Case("conv/dilation2", conv(p="num_output: 3 kernel_size: 3 dilation: 2 pad: 2"), "c"),
    Case("conv/group2", conv(p="num_output: 6 kernel_size: 3 group: 2 pad: 1"), "c"),
    Case("conv/depthwise", conv(p="num_output: 4 kernel_size: 3 group: 4"), "c"),
    Case("conv/no_bias", conv(p="num_output: 5 kernel_size: 3 bias_term: false"), "c"),
    Case("conv/1x1", conv(p="num_output: 7 kernel_size: 1"), "c"),
    Case(
        "conv/rect_hw_fields",
        conv(p="num_output: 5 kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 2 stride_h: 2 stride_w: 1"),
        "c",
    ),
    Case(
        "conv/rect_repeated",
        conv(p="num_output: 3 kernel_size: 2 kernel_size: 4 stride: 1 stride: 3 pad: 0 pad: 1"),
        "c",
    ),
    Case("conv/pad_h_only", conv(p="num_output: 3 kernel_size: 3 pad_h: 1"), "c"),
    Case(
        "conv/group2_dilation3_stride2",
        conv(p="num_output: 4 kernel_size: 2 group: 2 dilation: 3 stride: 2"),
        "c",
    ),
]

DECONV = [
    Case("deconv/k4_s2_p1", deconv("num_output: 3 kernel_size: 4 stride: 2 pad: 1"), "d"),
    Case("deconv/basic", deconv("num_output: 5 kernel_size: 3"), "d"),
    Case("deconv/group2", deconv("num_output: 6 kernel_size: 3 stride: 2 group: 2"), "d"),
    Case("deconv/no_bias", deconv("num_output: 3 kernel_size: 2 stride: 2 bias_term: false"), "d"),
    Case(
        "deconv/rect",
        deconv("num_output: 2 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 0"),
        "d",
    ),
    Case("deconv/pad_w_only", deconv("num_output: 2 kernel_size: 3 stride: 2 pad_w: 1"), "d"),
    Case("deconv/dilation2", deconv("num_output: 2 kernel_size: 3 dilation: 2"), "d"),
]

ODD = {"data": (2, 3, 10, 13)}  # sizes where ceil leaves partial windows at the far border
POOL = [
    Case("pool/max_k3_s2", pool("pool: MAX kernel_size: 3 stride: 2"), "p", ODD),
    Case("pool/max_k3_s2_pad1", pool("pool: MAX kernel_size: 3 stride: 2 pad: 1"), "p", ODD),
    Case("pool/max_k2_s2", pool("pool: MAX kernel_size: 2 stride: 2"), "p", ODD),
    Case("pool/ave_k3_s2", pool("pool: AVE kernel_size: 3 stride: 2"), "p", ODD),
    Case("pool/ave_k3_s2_pad1", pool("pool: AVE kernel_size: 3 stride: 2 pad: 1"), "p", ODD),
    Case("pool/ave_k2_s2_pad1", pool("pool: AVE kernel_size: 2 stride: 2 pad: 1"), "p", ODD),
    Case("pool/ave_k3_s1_pad1", pool("pool: AVE kernel_size: 3 stride: 1 pad: 1"), "p", ODD),
    Case("pool/max_global", pool("pool: MAX global_pooling: true"), "p", ODD),
    Case("pool/ave_global", pool("pool: AVE global_pooling: true"), "p", ODD),
    Case("pool/max_stride_gt_kernel", pool("pool: MAX kernel_size: 2 stride: 3"), "p", ODD),
    Case("pool/ave_stride_gt_kernel", pool("pool: AVE kernel_size: 2 stride: 3"), "p", ODD),
    Case("pool/ave_stride_gt_kernel_pad1", pool("pool: AVE kernel_size: 2 stride: 3 pad: 1"), "p", ODD),
    Case(
        "pool/max_rect",
        pool("pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 1"),
        "p",
        ODD,
    ),
    Case(
        "pool/ave_rect",
        pool("pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 1"),
        "p",
        ODD,
    ),
    Case("pool/max_pad2_k3", pool("pool: MAX kernel_size: 3 stride: 2 pad: 2"), "p", ODD),
    Case("pool/ave_pad2_k3", pool("pool: AVE kernel_size: 3 stride: 2 pad: 2"), "p", ODD),
    Case("pool/max_floor", pool("pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR"), "p", ODD),
    Case(
        "pool/max_after_conv",
        conv(p="num_output: 5 kernel_size: 2") + pool("pool: MAX kernel_size: 3 stride: 2", "c"),
        "p",
        ODD,
    ),
    multi(
        "pool/max_with_mask",
        "Pooling",
        ["p", "mask"],
        "pooling_param { pool: MAX kernel_size: 3 stride: 2 }",
        inputs=ODD,
    ),
]

LRN = [
    one("LRN", "lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 }", id="lrn/across_5"),
    one("LRN", "lrn_param { local_size: 3 alpha: 0.3 beta: 0.6 k: 2 }", id="lrn/across_3_k2"),
    one(
        "LRN",
        "lrn_param { local_size: 7 alpha: 0.4 beta: 0.9 k: 0.5 }",
        id="lrn/across_7_wider_than_channels",
    ),
    one("LRN", "lrn_param { local_size: 5 }", id="lrn/across_defaults"),
    one(
        "LRN",
        "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }",
        id="lrn/within_3",
    ),
    one(
        "LRN", "lrn_param { local_size: 5 alpha: 2 beta: 0.6 norm_region: WITHIN_CHANNEL }", id="lrn/within_5"
    ),
    one(
        "LRN",
        "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 3 norm_region: WITHIN_CHANNEL }",
        id="lrn/within_k3",
    ),
    after_conv("LRN", "lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 k: 1.5 }", id="lrn/across_after_conv"),
]

NEURON = [
    one("ReLU", id="relu/plain"),
    one("ReLU", "relu_param { negative_slope: 0.1 }", id="relu/negative_slope"),
    Case("relu/in_place_after_conv", conv("c") + L("r", "ReLU", "c", "c"), "r"),
    Case(
        "relu/in_place_slope_after_conv",
        conv("c") + L("r", "ReLU", "c", "c", "relu_param { negative_slope: -0.3 }"),
        "r",
    ),
    after_conv("PReLU", id="prelu/per_channel"),
    after_conv("PReLU", "prelu_param { channel_shared: true }", id="prelu/channel_shared"),
    one("ELU", id="elu/default"),
    one("ELU", "elu_param { alpha: 0.3 }", id="elu/alpha"),
    one("Sigmoid", id="sigmoid"),
    one("TanH", id="tanh"),
    one("Power", "power_param { power: 2 scale: 0.5 shift: 1 }", id="power/square"),
    one("Power", "power_param { power: 0.5 scale: 1.5 shift: 0.2 }", id="power/sqrt", positive=True),
    one("Power", "power_param { power: 1 scale: -2 shift: 3 }", id="power/affine"),
    one("Power", "power_param { power: 3 }", id="power/cube"),
    one("Power", "power_param { power: 0 scale: 2 }", id="power/zero"),
    one("AbsVal", id="absval"),
    one("BNLL", id="bnll"),
    one("Exp", id="exp/default"),
    one("Exp", "exp_param { base: 2 scale: 0.5 shift: 0.1 }", id="exp/base2"),
    one("Log", id="log/default", positive=True),
    one("Log", "log_param { base: 10 scale: 2 shift: 0.5 }", id="log/base10", positive=True),
    one("Threshold", "threshold_param { threshold: 0.3 }", id="threshold"),
    after_conv("Dropout", "dropout_param { dropout_ratio: 0.5 }", id="dropout/test_phase"),
]

FC_IN = {"data": (2, 3, 4, 5)}
FC = [
    one("InnerProduct", "inner_product_param { num_output: 7 }", id="ip/axis1"),
    one("InnerProduct", "inner_product_param { num_output: 6 axis: 2 }", id="ip/axis2", inputs=FC_IN),
    one("InnerProduct", "inner_product_param { num_output: 6 axis: -1 }", id="ip/axis-1", inputs=FC_IN),
    one("InnerProduct", "inner_product_param { num_output: 5 bias_term: false }", id="ip/no_bias"),
    one("InnerProduct", "inner_product_param { num_output: 5 transpose: true }", id="ip/transpose"),
    one("InnerProduct", "inner_product_param { num_output: 3 }", id="ip/2d_input", inputs={"data": (3, 10)}),
    Case(
        "ip/after_pool",
        pool("pool: MAX kernel_size: 3 stride: 2")
        + L("x", "InnerProduct", "p", p="inner_product_param { num_output: 4 }"),
        "x",
    ),
]

SOFTMAX = [
    one("Softmax", id="softmax/axis1"),
    one("Softmax", "softmax_param { axis: 2 }", id="softmax/axis2"),
    one("Softmax", "softmax_param { axis: -1 }", id="softmax/axis-1"),
    one("Softmax", id="softmax/2d", inputs={"data": (3, 6)}),
]

CONCAT_SHAPES = {
    "axis: 0": {"a": (2, 3, 4, 5), "b": (1, 3, 4, 5)},
    "axis: 1": {"a": (2, 3, 4, 5), "b": (2, 1, 4, 5), "c": (2, 2, 4, 5)},
    "axis: 2": {"a": (2, 3, 4, 5), "b": (2, 3, 2, 5)},
    "axis: 3": {"a": (2, 3, 4, 5), "b": (2, 3, 4, 3)},
    "axis: -1": {"a": (2, 3, 4, 5), "b": (2, 3, 4, 1)},
    "concat_dim: 1": {"a": (2, 3, 4, 5), "b": (2, 2, 4, 5)},
}
CONCAT = [
    Case(f"concat/{k.replace(': ', '')}", L("x", "Concat", list(v), p=f"concat_param {{ {k} }}"), "x", v)
    for k, v in CONCAT_SHAPES.items()
]
CONCAT.append(Case("concat/after_convs", conv("c1") + conv("c2") + L("x", "Concat", ["c1", "c2"]), "x"))

TWO = {"a": (2, 3, 4, 5), "b": (2, 3, 4, 5)}
THREE = {**TWO, "c": (2, 3, 4, 5)}
ELTWISE = [
    Case("eltwise/sum", L("x", "Eltwise", ["a", "b"]), "x", TWO),
    Case(
        "eltwise/sum_coeff",
        L("x", "Eltwise", ["a", "b", "c"], p="eltwise_param { coeff: 0.5 coeff: -1 coeff: 2 }"),
        "x",
        THREE,
    ),
    Case(
        "eltwise/prod", L("x", "Eltwise", ["a", "b", "c"], p="eltwise_param { operation: PROD }"), "x", THREE
    ),
    Case("eltwise/max", L("x", "Eltwise", ["a", "b"], p="eltwise_param { operation: MAX }"), "x", TWO),
    Case(
        "eltwise/max3", L("x", "Eltwise", ["a", "b", "c"], p="eltwise_param { operation: MAX }"), "x", THREE
    ),
    Case(
        "eltwise/sum_coeff_after_convs",
        conv("c1") + conv("c2") + L("x", "Eltwise", ["c1", "c2"], p="eltwise_param { coeff: 1 coeff: -0.5 }"),
        "x",
    ),
]

SHAPE_OPS = [
    one("Flatten", id="flatten/default"),
    one("Flatten", "flatten_param { axis: 2 }", id="flatten/axis2"),
    one("Flatten", "flatten_param { axis: 1 end_axis: 2 }", id="flatten/axis1_end2"),
    one("Flatten", "flatten_param { end_axis: -2 }", id="flatten/end-2"),
    one("Reshape", "reshape_param { shape { dim: 0 dim: -1 } }", id="reshape/0_-1"),
    one("Reshape", "reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 11 } }", id="reshape/0_2_-1_11"),
    one("Reshape", "reshape_param { shape { dim: -1 dim: 0 dim: 99 } }", id="reshape/-1_0_99"),
    one("Reshape", "reshape_param { axis: 1 num_axes: 2 shape { dim: -1 } }", id="reshape/axis1_num_axes2"),
    one(
        "Reshape",
        "reshape_param { axis: 3 num_axes: 1 shape { dim: 11 dim: 1 } }",
        id="reshape/axis3_num_axes1",
    ),
    one(
        "Reshape",
        "reshape_param { axis: -2 num_axes: 1 shape { dim: 11 dim: 1 } }",
        id="reshape/axis-2_num_axes1",
    ),
    Case(
        "reshape/after_conv_then_ip",
        conv()
        + L("r", "Reshape", "c", p="reshape_param { shape { dim: 0 dim: -1 } }")
        + L("x", "InnerProduct", "r", p="inner_product_param { num_output: 3 }"),
        "x",
    ),
    multi(
        "slice/axis1_points",
        "Slice",
        ["s1", "s2", "s3"],
        "slice_param { axis: 1 slice_point: 1 slice_point: 3 }",
    ),
    multi("slice/axis2_point", "Slice", ["s1", "s2"], "slice_param { axis: 2 slice_point: 2 }"),
    multi(
        "slice/axis-1_equal", "Slice", ["s1", "s2"], "slice_param { axis: -1 }", inputs={"data": (2, 3, 4, 6)}
    ),
    multi("slice/axis0", "Slice", ["s1", "s2"], "slice_param { axis: 0 slice_point: 1 }"),
    multi("slice/slice_dim", "Slice", ["s1", "s2"], "slice_param { slice_dim: 1 }"),
    multi("split/two_tops", "Split", ["s1", "s2"], before=conv(), bottom="c"),
]

SCALE_IN = {"data": SHAPE, "s": (4,)}
AFFINE = [
    after_conv("Scale", id="scale/param"),
    after_conv("Scale", "scale_param { bias_term: true }", id="scale/param_bias"),
    one("Scale", "scale_param { axis: 1 num_axes: 2 bias_term: true }", id="scale/num_axes2"),
    one("Scale", "scale_param { num_axes: 0 }", id="scale/scalar"),
    one("Scale", "scale_param { axis: 0 num_axes: -1 }", id="scale/all_axes", inputs={"data": (2, 3, 4)}),
    Case("scale/second_bottom", L("x", "Scale", ["data", "s"]), "x", SCALE_IN),
    Case(
        "scale/second_bottom_bias",
        L("x", "Scale", ["data", "s"], p="scale_param { bias_term: true }"),
        "x",
        SCALE_IN,
    ),
    Case(
        "scale/second_bottom_axis0",
        L("x", "Scale", ["data", "s"], p="scale_param { axis: 0 }"),
        "x",
        {"data": SHAPE, "s": (2, 4)},
    ),
    after_conv("Bias", id="bias/param"),
    Case("bias/second_bottom", L("x", "Bias", ["data", "s"]), "x", SCALE_IN),
    after_conv("BatchNorm", "batch_norm_param { use_global_stats: true }", id="batchnorm/global_stats"),
    after_conv("BatchNorm", id="batchnorm/test_default"),
    after_conv("BatchNorm", "batch_norm_param { use_global_stats: true eps: 0.1 }", id="batchnorm/eps"),
    after_conv(
        "BatchNorm", "batch_norm_param { use_global_stats: true }", id="batchnorm/zero_factor", bn_factor=0.0
    ),
    Case(
        "batchnorm/then_scale_in_place",
        conv("c", p="num_output: 6 kernel_size: 3 pad: 1 bias_term: false")
        + L("bn", "BatchNorm", "c", "c", "batch_norm_param { use_global_stats: true }")
        + L("x", "Scale", "c", "c", "scale_param { bias_term: true }"),
        "x",
    ),
    one(
        "BatchNorm", "batch_norm_param { use_global_stats: true }", id="batchnorm/2d", inputs={"data": (5, 4)}
    ),
]

CROP_IN = {"a": (2, 4, 9, 11), "b": (1, 2, 5, 6)}
SEQ = {"data": (4, 2, 5), "cont": (4, 2)}
SEQ_CONT = {"cont": (0, 0, 1, 1, 1, 1, 1, 1)}  # one sequence per stream from a zero state
LSTM_P = 'recurrent_param { num_output: 3 weight_filler { type: "uniform" min: -0.5 max: 0.5 } }'
ADDED = [  # layer types added for Caffe 1.0 coverage (engine/layers/select.py, reduce.py, recurrent.py, ...)
    Case("crop/axis2_offset", L("x", "Crop", ["a", "b"], p="crop_param { axis: 2 offset: 1 }"), "x", CROP_IN),
    Case(
        "crop/axis1_offsets",
        L("x", "Crop", ["a", "b"], p="crop_param { axis: 1 offset: 1 offset: 2 offset: 3 }"),
        "x",
        CROP_IN,
    ),
    Case("crop/default", L("x", "Crop", ["a", "b"]), "x", CROP_IN),
    Case(
        "crop/after_conv",
        conv("c", "a", "num_output: 3 kernel_size: 3")
        + L("x", "Crop", ["c", "b"], p="crop_param { offset: 2 }"),
        "x",
        CROP_IN,
    ),
    one("MVN", id="mvn/default"),
    one("MVN", "mvn_param { across_channels: true }", id="mvn/across_channels"),
    one("MVN", "mvn_param { normalize_variance: false }", id="mvn/mean_only"),
    after_conv("MVN", id="mvn/after_conv"),  # default eps only: see test_opencv_mvn_eps_departs_from_caffe
    one("Swish", id="swish/default"),
    one("Swish", "swish_param { beta: 2 }", id="swish/beta2"),
    Case("lstm/two_streams", L("x", "LSTM", ["data", "cont"], p=LSTM_P), "x", SEQ, fixed=SEQ_CONT),
    one("ArgMax", "argmax_param { axis: 1 }", id="argmax/axis1"),
    one("Reduction", "reduction_param { axis: 1 }", id="reduction/sum_axis1"),
    one("Tile", "tile_param { axis: 1 tiles: 2 }", id="tile/axis1"),
    one("Clip", "clip_param { min: -0.5 max: 0.7 }", id="clip"),
    one("SPP", "spp_param { pyramid_height: 2 }", id="spp/height2"),
    one("Im2col", "convolution_param { kernel_size: 3 }", id="im2col/k3"),
]

CASES = CONV + DECONV + POOL + LRN + NEURON + FC + SOFTMAX + CONCAT + ELTWISE + SHAPE_OPS + AFFINE + ADDED
BY_ID = {c.id: c for c in CASES}

#: case id -> what OpenCV 4.x's Caffe importer lacks (it raises on these)
OPENCV_LACKS: dict[str, str] = {
    "argmax/axis1": "OpenCV's Caffe importer has no ArgMax layer (Can't create layer of type 'ArgMax')",
    "reduction/sum_axis1": "OpenCV has no Caffe Reduction layer (Can't create layer of type 'Reduction')",
    "tile/axis1": "OpenCV's Tile reads ONNX-style 'repeats', not tile_param axis/tiles ('Tile: repeats needs "
    "to be treated as parameter')",
    "clip": "OpenCV has no Caffe Clip layer (Can't create layer of type 'Clip')",
    "spp/height2": "OpenCV has no SPP layer (Can't create layer of type 'SPP')",
    "im2col/k3": "OpenCV has no Im2col layer (Can't create layer of type 'Im2col')",
    "lstm/two_streams": "OpenCV 4.x's LSTM takes the inputs (x) or (x, h0, c0), not Caffe's (x, cont), and "
    "five blobs (W_h, W_x, b, h0, c0) where lstm_layer.cpp stores three (W_xc, b_c, W_hc); reordered blobs "
    "with zero h0/c0 and the cont bottom dropped still fail in its gemm (measured with 4.14)",
    "pool/max_floor": "OpenCV's caffe.proto has no PoolingParameter.round_mode (BVLC master field 13): "
    "a pooling_param naming it loses its kernel size ('kernel[i] > 0' fails)",
    "threshold": "OpenCV has no Caffe Threshold layer (Can't create layer of type 'Threshold')",
    "bias/param": "OpenCV has no Caffe Bias layer (Can't create layer of type 'Bias')",
    "bias/second_bottom": "OpenCV has no Caffe Bias layer (Can't create layer of type 'Bias')",
    "reshape/axis-2_num_axes1": "OpenCV's Reshape rejects a negative reshape_param.axis "
    "(normalize_axis_range: 'r.start >= 0')",
}

_LRN_K = (
    "OpenCV's importer drops lrn_param.k (its LRN reads a parameter named 'bias', default 1); Caffe's "
    "lrn_layer.cpp CrossChannelForward_cpu starts every scale at k_"
)
_PAD_HW = (
    "OpenCV takes pad_h/pad_w only when both are given (else pad 0 on both axes); Caffe's "
    "base_conv_layer.cpp LayerSetUp uses pad_h and pad_w when either is set (the other defaults to 0)"
)
#: case id -> where OpenCV departs from BVLC Caffe (it runs but computes something else)
OPENCV_DEVIATES: dict[str, str] = {
    "swish/beta2": "OpenCV's Swish ignores swish_param.beta (it computes x sigmoid(x), measured); BVLC "
    "master's swish_layer.cpp computes x sigmoid(beta x)",
    "conv/pad_h_only": _PAD_HW,
    "deconv/pad_w_only": _PAD_HW,
    "lrn/across_3_k2": _LRN_K,
    "lrn/across_7_wider_than_channels": _LRN_K,
    "lrn/across_after_conv": _LRN_K,
    "lrn/across_defaults": "OpenCV 4.x computes with alpha 1e-4 when lrn_param.alpha is unset (measured); "
    "caffe.proto's LRNParameter alpha defaults to 1",
    "deconv/dilation2": "OpenCV's Deconvolution ignores dilation (output 11x13, not 13x15); Caffe's "
    "deconv_layer.cpp compute_output_shape uses the dilated kernel extent dilation * (k - 1) + 1",
    "ip/transpose": "OpenCV ignores inner_product_param.transpose and reads the (K, N) weights as (N, K); "
    "Caffe's inner_product_layer.cpp computes x W with W stored K x N when transpose is set",
    "log/base10": "OpenCV's Log ignores log_param base/scale/shift (it computes ln x); Caffe's "
    "log_layer.cpp computes log(shift + scale x) / ln(base)",
    "scale/second_bottom_bias": "OpenCV's Scale uses the second bottom only when the layer has no blobs, so "
    "with bias_term it computes x + bias; Caffe's scale_layer.cpp multiplies by bottom[1] whenever it exists",
}


def _lrn_twin(size: int, alpha: float, beta: float, k: float, before: str = "", bottom: str = "data") -> str:
    """(k + a/n S)^-b = k^-b (1 + (a/k)/n S)^-b: an LRN with k = 1 and alpha / k, then a Power scale k^-b."""
    return (
        before
        + L("x0", "LRN", bottom, p=f"lrn_param {{ local_size: {size} alpha: {alpha / k!r} beta: {beta} }}")
        + L("x", "Power", "x0", p=f"power_param {{ scale: {k**-beta!r} }}")
    )


def _blob(net: caffe_pb2.NetParameter, layer: str, i: int) -> caffe_pb2.BlobProto:
    return next(lp for lp in net.layer if lp.name == layer).blobs[i]


def _transpose_ip(net: caffe_pb2.NetParameter) -> None:
    """The (K, N) weights of a transposed InnerProduct stored as the (N, K) weights of a plain one."""
    b = _blob(net, "x", 0)
    b.CopyFrom(array_to_blob(blob_to_array(b).T.copy()))


def _dilate_deconv(net: caffe_pb2.NetParameter) -> None:
    """A dilation-2 3x3 kernel written out as a 5x5 kernel with zeros between its taps."""
    b = _blob(net, "d", 0)
    w = blob_to_array(b)
    big = np.zeros(w.shape[:2] + (5, 5), np.float32)
    big[:, :, ::2, ::2] = w
    b.CopyFrom(array_to_blob(big))


def _scale_then_shift(net: caffe_pb2.NetParameter) -> None:
    """Scale by the second bottom (no blobs) in x0, then a Scale with unit weights and the learned bias."""
    x = next(lp for lp in net.layer if lp.name == "x")
    bias = blob_to_array(x.blobs[0])
    x.name = "x1"
    del x.blobs[:]
    x.blobs.extend([array_to_blob(np.ones_like(bias)), array_to_blob(bias)])


@dataclass(frozen=True)
class Twin:
    """What OpenCV runs for a case it departs from Caffe on: the same function in parameters it reads as
    Caffe does; ``edit`` rewrites pixsent's saved weights to match."""

    layers: str
    layer: str
    edit: Callable[[caffe_pb2.NetParameter], None] | None = None


TWINS: dict[str, Twin] = {
    "swish/beta2": Twin(
        L("y", "Power", p="power_param { scale: 2 }")
        + L("y1", "Swish", "y")
        + L("x", "Power", "y1", p="power_param { scale: 0.5 }"),
        "x",
    ),
    "conv/pad_h_only": Twin(conv(p="num_output: 3 kernel_size: 3 pad_h: 1 pad_w: 0"), "c"),
    "deconv/pad_w_only": Twin(deconv("num_output: 2 kernel_size: 3 stride: 2 pad_h: 0 pad_w: 1"), "d"),
    "lrn/across_3_k2": Twin(_lrn_twin(3, 0.3, 0.6, 2.0), "x"),
    "lrn/across_7_wider_than_channels": Twin(_lrn_twin(7, 0.4, 0.9, 0.5), "x"),
    "lrn/across_after_conv": Twin(
        _lrn_twin(5, 0.1, 0.75, 1.5, conv("c", p="num_output: 6 kernel_size: 3 pad: 1"), "c"), "x"
    ),
    "lrn/across_defaults": Twin(L("x", "LRN", p="lrn_param { local_size: 5 alpha: 1 }"), "x"),
    "deconv/dilation2": Twin(deconv("num_output: 2 kernel_size: 5"), "d", _dilate_deconv),
    "ip/transpose": Twin(
        L("x", "InnerProduct", p="inner_product_param { num_output: 5 }"), "x", _transpose_ip
    ),
    "log/base10": Twin(
        L("y", "Power", p="power_param { scale: 2 shift: 0.5 }")
        + L("y1", "Log", "y")
        + L("x", "Power", "y1", p=f"power_param {{ scale: {1 / math.log(10)!r} }}"),
        "x",
    ),
    "scale/second_bottom_bias": Twin(
        L("x", "Scale", ["data", "s"]) + L("x1", "Scale", "x", "x1", "scale_param { bias_term: true }"),
        "x1",
        _scale_then_shift,
    ),
}


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| (float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def input_layer(shapes: dict[str, tuple[int, ...]]) -> str:
    tops = "".join(f' top: "{n}"' for n in shapes)
    dims = "".join("shape {" + "".join(f" dim: {d}" for d in s) + " }" for s in shapes.values())
    return f'layer {{ name: "in" type: "Input"{tops} input_param {{ {dims} }} }}\n'


def randomize(net: Net, rng: np.random.Generator, bn_factor: float = 2.5) -> None:
    """Seeded parameters of a useful scale: weights ~ N(0, 1/fan_in), others ~ N(0, 0.5^2) (Scale around 1);
    BatchNorm's blobs as Caffe stores them: mean and variance times the factor in the third blob."""
    for layer in net.layers:
        blobs = net.params.get(layer.name, [])
        if layer.type == "BatchNorm":
            c = blobs[0].shape[0]
            blobs[0].data[...] = rng.normal(0, 1, c) * bn_factor
            blobs[1].data[...] = rng.uniform(0.2, 2.0, c) * bn_factor
            blobs[2].data[...] = bn_factor
            continue
        for i, blob in enumerate(blobs):
            shape = blob.shape
            std = 1 / math.sqrt(math.prod(shape[1:])) if (i == 0 and len(shape) >= 2) else 0.5
            values = rng.normal(0, std, shape)
            if layer.type == "Scale" and i == 0:
                values += 1.0
            blob.data[...] = values


def make_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if case.positive:
        out = {k: rng.uniform(0.5, 2.0, s).astype(np.float32) for k, s in case.inputs.items()}
    else:
        out = {k: rng.normal(0, 1, s).astype(np.float32) for k, s in case.inputs.items()}
    for k, values in case.fixed.items():
        out[k] = np.asarray(values, np.float32).reshape(case.inputs[k])
    return out


def opencv_run(
    prototxt: Path, weights: Path | None, inputs: dict[str, np.ndarray], layers: list[str], fusion: bool
) -> list[list[np.ndarray]]:
    """All outputs of each named layer as OpenCV computes them (plain OpenCV backend on the CPU)."""
    cvnet = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights) if weights else "")
    cvnet.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cvnet.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    cvnet.enableFusion(fusion)
    for name, x in inputs.items():
        cvnet.setInput(x, name)
    return [list(outs) for outs in cvnet.forwardAndRetrieve(layers)]


def pixsent_run(case: Case) -> tuple[Net, dict[str, np.ndarray]]:
    """The case's net in pixsent with seeded parameters, forwarded on seeded inputs."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    text = f'name: "{case.id}"\n' + input_layer(case.inputs) + case.layers
    net = Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe_pb2.TEST)
    randomize(net, rng, case.bn_factor)
    inputs = make_inputs(case, rng)
    for name, x in inputs.items():
        net.blobs[name].data[...] = x
    net.forward()
    return net, inputs


def compare(case_id: str, net: Net, layer: str, theirs: list[np.ndarray]) -> None:
    """Each top of pixsent's ``layer`` against OpenCV's outputs (OpenCV's MAX pooling adds a mask output)."""
    tops = list(net.param.layer[net.layer_names.index(layer)].top)
    assert len(theirs) >= len(tops)
    for top, t in zip(tops, theirs):
        ours = net.blobs[top].data
        err = rel(ours, t.reshape(ours.shape))
        print(f"{case_id} {top}: rel err {err:.2e}")
        assert err <= TOL, (case_id, top, err)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_layer_agrees_with_opencv(case: Case, tmp_path: Path) -> None:
    if case.id in OPENCV_DEVIATES:
        pytest.skip(OPENCV_DEVIATES[case.id] + " (compared through its twin)")
    net, inputs = pixsent_run(case)
    proto, weights = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    proto.write_text(input_layer(case.inputs) + case.layers)
    net.save(weights)
    saved = caffe_pb2.NetParameter.FromString(weights.read_bytes())
    weights.write_bytes(saved.SerializeToString())
    try:
        theirs = opencv_run(proto, weights, inputs, [case.layer], fusion=False)[0]
    except cv2.error as e:
        if case.id in OPENCV_LACKS:
            pytest.skip(OPENCV_LACKS[case.id])
        raise AssertionError(f"OpenCV failed on {case.id}: {e}") from e
    compare(case.id, net, case.layer, theirs)


@pytest.mark.parametrize("case_id", list(TWINS), ids=[f"{k}~twin" for k in TWINS])
def test_layer_agrees_with_opencv_twin(case_id: str, tmp_path: Path) -> None:
    """Where OpenCV departs from Caffe, pixsent's layer against OpenCV running an equivalent net."""
    case, twin = BY_ID[case_id], TWINS[case_id]
    net, inputs = pixsent_run(case)
    proto, weights = tmp_path / "twin.prototxt", tmp_path / "twin.caffemodel"
    proto.write_text(input_layer(case.inputs) + twin.layers)
    saved = net.to_proto()
    if twin.edit:
        twin.edit(saved)
    weights.write_bytes(saved.SerializeToString())
    theirs = opencv_run(proto, weights, inputs, [twin.layer], fusion=False)[0]
    compare(f"{case_id}~twin", net, case.layer, theirs[:1])


def test_opencv_mvn_eps_departs_from_caffe(tmp_path: Path) -> None:
    """Where OpenCV's MVN departs from Caffe: it divides by sqrt(var + eps), mvn_layer.cpp Forward_cpu by
    sqrt(var) + eps (caffe_powx 0.5, then caffe_add_scalar eps). Visible with eps 0.01 on small inputs;
    the default eps 1e-9 makes the two agree, which is why the MVN cases above use it."""
    text = input_layer({"data": (2, 3, 4, 5)}) + L("x", "MVN", p="mvn_param { eps: 0.01 }")
    (tmp_path / "mvn.prototxt").write_text(text)
    net = Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe_pb2.TEST)
    x = (np.random.default_rng(0).normal(size=(2, 3, 4, 5)) * 0.05).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    theirs = opencv_run(tmp_path / "mvn.prototxt", None, {"data": x}, ["x"], fusion=False)[0][0]
    rows = x.reshape(6, -1).astype(np.float64)
    centred = rows - rows.mean(1, keepdims=True)
    var = (centred**2).mean(1, keepdims=True)
    eps = float(np.float32(0.01))
    caffe = (centred / (np.sqrt(var) + eps)).reshape(x.shape)
    assert rel(net.blobs["x"].data, caffe) <= 1e-5
    assert rel(theirs, (centred / np.sqrt(var + eps)).reshape(x.shape)) <= 1e-5
    assert rel(theirs, caffe) > 0.1


def test_every_deviation_and_lack_names_a_case() -> None:
    assert set(OPENCV_DEVIATES) <= set(BY_ID) and set(OPENCV_LACKS) <= set(BY_ID)
    assert set(TWINS) == set(OPENCV_DEVIATES)


# ---------------------------------------------------------------- whole nets
def last_writers(net: Net) -> dict[str, str]:
    """Blob name -> the last layer writing it (in-place layers overwrite), Input tops left out."""
    out: dict[str, str] = {}
    for name, layer in zip(net.layer_names, net.layers):
        if layer.type != "Input":
            for top in net.param.layer[net.layer_names.index(name)].top:
                out[top] = name
    return out


def compare_whole_net(
    net: Net, prototxt: Path, weights: Path, inputs: dict[str, np.ndarray]
) -> dict[str, float]:
    """Every blob pixsent computed against OpenCV's output of the layer that last wrote it (fusion on)."""
    writers = last_writers(net)
    layers = list(dict.fromkeys(writers.values()))
    theirs = dict(zip(layers, opencv_run(prototxt, weights, inputs, layers, fusion=True)))
    errors = {}
    for blob, layer in writers.items():
        tops = list(net.param.layer[net.layer_names.index(layer)].top)
        ours = net.blobs[blob].data
        errors[blob] = rel(ours, theirs[layer][tops.index(blob)].reshape(ours.shape))
    print({k: f"{v:.1e}" for k, v in errors.items()})
    return errors


@pytest.fixture(scope="module")
def mini(golden: Path) -> Path:
    return golden / "mini_caffenet"


@pytest.mark.parametrize(
    ("prototxt", "weights", "inp"),
    [
        ("deploy.prototxt", "weights.caffemodel", "input.npy"),
        ("fullconv.prototxt", "fullconv.caffemodel", "input_451.npy"),
    ],
    ids=["mini_caffenet", "mini_fullconv"],
)
def test_golden_nets_agree_with_opencv(mini: Path, prototxt: str, weights: str, inp: str) -> None:
    net = Net(mini / prototxt, caffe_pb2.TEST, weights=str(mini / weights))
    x = np.load(mini / inp)
    net.blobs["data"].data[...] = x
    net.forward()
    errors = compare_whole_net(net, mini / prototxt, mini / weights, {"data": x})
    assert max(errors.values()) <= TOL, errors


def test_paper_deploy_caffenet_agrees_with_opencv(tmp_path: Path) -> None:
    """The paper's fc8_twitter deploy net at batch 1 with seeded He-scaled weights (fc8_twitter scaled down so
    the softmax is not saturated) and a mean-subtracted-image-sized input."""
    param = read_net(REPO / "prototxt" / "five_agrees" / "fc8_twitter" / "deploy.prototxt")
    param.layer[0].input_param.shape[0].dim[0] = 1
    for lp in param.layer:
        lp.convolution_param.weight_filler.type = "msra"
        lp.inner_product_param.weight_filler.type = "msra"
    net = Net(param, caffe_pb2.TEST, seed=1604)
    net.params["fc8_twitter"][0].data[...] *= 0.01
    x = np.random.default_rng(3).normal(0, 40, (1, 3, 227, 227)).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    proto, weights = tmp_path / "deploy.prototxt", tmp_path / "w.caffemodel"
    proto.write_text(text_format.MessageToString(param))
    net.save(weights)
    errors = compare_whole_net(net, proto, weights, {"data": x})
    assert 0.05 < net.blobs["prob"].data.max() < 0.95  # an informative softmax
    assert max(errors.values()) <= TOL, errors


# ---------------------------------------------------------------- 0-axis blobs (found by the cases above)
SHARED_PRELU = one("PReLU", "prelu_param { channel_shared: true }", id="prelu/shared_roundtrip")


def test_zero_axis_blob_is_written_like_caffe() -> None:
    net, _ = pixsent_run(SHARED_PRELU)
    blob = next(lp for lp in net.to_proto().layer if lp.name == "x").blobs[0]
    assert not blob.HasField("shape") and len(blob.data) == 1


def test_caffe_written_zero_axis_blob_loads() -> None:
    net, _ = pixsent_run(SHARED_PRELU)
    net.params["x"][0].data[...] = 0.3
    saved = net.to_proto()
    slope = next(lp for lp in saved.layer if lp.name == "x").blobs[0]
    assert not slope.HasField("shape")  # written as Caffe writes a 0-axis blob
    other, _ = pixsent_run(SHARED_PRELU)
    other.copy_trained_layers_from(saved)
    assert float(other.params["x"][0].data) == pytest.approx(0.3)
