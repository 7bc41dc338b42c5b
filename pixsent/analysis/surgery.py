"""Net surgery for sentiment maps (the paper's Figure 7): fully connected layers into convolutions, or, for a
net that is fully convolutional already, its class-score map before the global pooling.

An InnerProduct layer flattens its C x H x W input in C-order and multiplies by a (out, C*H*W) matrix, so the
same numbers reshaped to (out, C, H, W) form a convolution with an H x W kernel that gives the identical
result at the original input size and slides over a larger input (Caffe's net_surgery example does the
same with `.flat` copies). The new layers and their top blobs are named ``<name>-conv``, as in the released
``sentiment_fully_conv_deploy.prototxt`` (fc6-conv, fc7-conv, fc8_twitter-conv).

A net without InnerProduct whose classifier is a convolution followed by global pooling (SqueezeNet:
conv_final_twitter -> ReLU -> global AVE pool_final) needs no new weights: its map is the classifier's
score blob (after its in-place ReLU, as the net computes it) with a softmax over the channels at each
location; the map net is the deploy net cut after that blob (see :func:`score_map_net`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError
from pixsent.formats.atomic import atomic_write_text
from pixsent.formats.blob import array_to_blob
from pixsent.formats.caffemodel import read_caffemodel, weights_of, write_caffemodel
from pixsent.formats.origin import naming
from pixsent.formats.prototxt import read_net, to_text

Shape = tuple[int, ...]
SUFFIX = "-conv"


# ------------------------------------------------------------------------------------- shape calculator


def _pair(conv_like, name: str, default: int) -> tuple[int, int]:
    """(h, w) of a Convolution/Pooling field given as `name`, `name_h`/`name_w` or repeated."""
    h, w = getattr(conv_like, f"{name}_h", 0), getattr(conv_like, f"{name}_w", 0)
    if h or w:
        return int(h), int(w)
    value = getattr(conv_like, name)
    if isinstance(value, int):
        return (value, value) if conv_like.HasField(name) else (default, default)
    values = list(value)
    if not values:
        return default, default
    return (values[0], values[-1]) if len(values) <= 2 else (values[0], values[1])


def _conv_shape(layer: caffe_pb2.LayerParameter, bottoms: list[Shape]) -> list[Shape]:
    p = layer.convolution_param
    n, _c, h, w = bottoms[0]
    kh, kw = _pair(p, "kernel_size", 0)
    sh, sw = _pair(p, "stride", 1)
    ph, pw = _pair(p, "pad", 0)
    dh, dw = _pair(p, "dilation", 1)
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    return [(n, p.num_output, oh, ow)]


def _pool_shape(layer: caffe_pb2.LayerParameter, bottoms: list[Shape]) -> list[Shape]:
    """Caffe rounds up (round_mode CEIL) and drops a last window that would start inside the padding."""
    p = layer.pooling_param
    n, c, h, w = bottoms[0]
    if p.global_pooling:
        return [(n, c, 1, 1)]
    kh, kw = (p.kernel_h, p.kernel_w) if p.kernel_h else (p.kernel_size, p.kernel_size)
    sh, sw = (p.stride_h, p.stride_w) if p.stride_h else (p.stride, p.stride)
    ph, pw = (p.pad_h, p.pad_w) if p.pad_h or p.pad_w else (p.pad, p.pad)
    rnd = math.floor if p.round_mode == caffe_pb2.PoolingParameter.FLOOR else math.ceil
    oh = int(rnd((h + 2 * ph - kh) / sh)) + 1
    ow = int(rnd((w + 2 * pw - kw) / sw)) + 1
    if ph and (oh - 1) * sh >= h + ph:
        oh -= 1
    if pw and (ow - 1) * sw >= w + pw:
        ow -= 1
    return [(n, c, oh, ow)]


def _ip_shape(layer: caffe_pb2.LayerParameter, bottoms: list[Shape]) -> list[Shape]:
    axis = layer.inner_product_param.axis
    return [tuple(bottoms[0][:axis]) + (layer.inner_product_param.num_output,)]


def _input_shape(layer: caffe_pb2.LayerParameter, bottoms: list[Shape]) -> list[Shape]:
    shapes = [tuple(s.dim) for s in layer.input_param.shape]
    if len(shapes) == 1:
        shapes = shapes * len(layer.top)
    return shapes


def _same_shape(layer: caffe_pb2.LayerParameter, bottoms: list[Shape]) -> list[Shape]:
    return [bottoms[0]] * max(1, len(layer.top))


def _concat_shape(layer: caffe_pb2.LayerParameter, bottoms: list[Shape]) -> list[Shape]:
    axis = layer.concat_param.axis
    out = list(bottoms[0])
    out[axis] = sum(b[axis] for b in bottoms)
    return [tuple(out)]


def _flatten_shape(layer: caffe_pb2.LayerParameter, bottoms: list[Shape]) -> list[Shape]:
    return [(bottoms[0][0], math.prod(bottoms[0][1:]))]


#: Caffe layer type -> top shapes from bottom shapes (what surgery needs to find each kernel size).
SHAPE_RULES: dict[str, Callable[[caffe_pb2.LayerParameter, list[Shape]], list[Shape]]] = {
    "Input": _input_shape,
    "Convolution": _conv_shape,
    "Pooling": _pool_shape,
    "InnerProduct": _ip_shape,
    "Concat": _concat_shape,
    "Flatten": _flatten_shape,
    **{
        t: _same_shape
        for t in (
            "ReLU",
            "PReLU",
            "ELU",
            "Sigmoid",
            "TanH",
            "AbsVal",
            "Power",
            "Dropout",
            "LRN",
            "Softmax",
            "BatchNorm",
            "Scale",
            "Bias",
            "Eltwise",
            "Split",
            "MVN",
        )
    },
}


def deploy_layers(net: caffe_pb2.NetParameter) -> list[caffe_pb2.LayerParameter]:
    """A TEST-phase deploy net's layers (include/exclude by phase only), legacy inputs as Input layers."""
    if len(net.layers):
        raise NetError(
            f"net {net.name!r}: V1 `layers` prototxt; upgrade it first (pixsent upgrade_net_proto)"
        )
    layers: list[caffe_pb2.LayerParameter] = []
    if len(net.input):
        shapes = [tuple(s.dim) for s in net.input_shape]
        if not shapes:
            dims = list(net.input_dim)
            shapes = [tuple(dims[4 * i : 4 * i + 4]) for i in range(len(net.input))]
        for name, shape in zip(net.input, shapes):
            layer = caffe_pb2.LayerParameter(name=name, type="Input", top=[name])
            layer.input_param.shape.add().dim.extend(shape)
            layers.append(layer)
    for layer in net.layer:
        if any(r.HasField("phase") and r.phase != caffe_pb2.TEST for r in layer.include):
            continue
        if any(r.HasField("phase") and r.phase == caffe_pb2.TEST for r in layer.exclude):
            continue
        layers.append(layer)
    return layers


def blob_shapes(layers: list[caffe_pb2.LayerParameter]) -> dict[str, Shape]:
    """Propagate shapes through the layers; returns blob name -> shape (the latest writer wins)."""
    shapes: dict[str, Shape] = {}
    for layer in layers:
        rule = SHAPE_RULES.get(layer.type)
        if rule is None:
            raise NetError(f"layer {layer.name!r}: type {layer.type!r} has no shape rule for surgery")
        try:
            bottoms = [shapes[b] for b in layer.bottom]
        except KeyError as exc:
            raise NetError(f"layer {layer.name!r}: bottom blob {exc} is not produced earlier") from None
        for top, shape in zip(layer.top, rule(layer, bottoms)):
            shapes[top] = tuple(int(d) for d in shape)
    return shapes


# ------------------------------------------------------------------------------------------- surgery


@dataclass(frozen=True)
class Conversion:
    """One InnerProduct layer turned into a Convolution with a kh x kw kernel over `channels` inputs."""

    old_name: str
    new_name: str
    channels: int
    kernel: tuple[int, int]
    num_output: int


@dataclass
class FullyConvNet:
    """The fully convolutional deploy net and the layer conversions that map old weights onto it."""

    net: caffe_pb2.NetParameter
    conversions: dict[str, Conversion]
    # map cells on each side that see only a classifier convolution's zero padding (ScoreMap.border), when
    # a global pooling was moved after the InnerProduct layers it fed
    border: int = 0


def fully_convolutional(net: caffe_pb2.NetParameter, size: int | None = None, batch: int = 1) -> FullyConvNet:
    """Turn every InnerProduct of a deploy net into a Convolution; the Input becomes batch x C x size x size.

    The kernel of each converted layer is the spatial size of its input blob at the net's original input
    size (6x6 for CaffeNet's fc6, 1x1 for layers fed by another fully connected layer). An average pooling
    with ``global_pooling`` read only by InnerProduct layers is taken out, and those layers become 1x1
    convolutions over the map it averaged: a linear layer commutes with the average, so the mean of the
    resulting score map is the net's score for the image (SqueezeNet's fc9_twitter over ``pool_final``).
    """
    layers = deploy_layers(net)
    shapes = blob_shapes(layers)
    pools = _dissolvable_global_pools(layers)
    dissolved = {pool.top[0]: pool.bottom[0] for pool in pools}  # pooled blob -> the map it averaged
    layers = [layer for layer in layers if all(layer is not pool for pool in pools)]
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    for field in ("input", "input_dim", "input_shape", "layer", "layers"):
        out.ClearField(field)
    out.name = f"{net.name}FullConv" if net.name else "FullConv"
    renamed: dict[str, str] = {}
    conversions: dict[str, Conversion] = {}
    for layer in layers:
        new = out.layer.add()
        new.CopyFrom(layer)
        del new.bottom[:]
        new.bottom.extend(renamed.get(b, b) for b in (dissolved.get(b, b) for b in layer.bottom))
        if layer.type == "Input":
            for s in new.input_param.shape:
                dims = list(s.dim)
                if len(dims) == 4:
                    dims[0] = batch
                    if size:
                        dims[2] = dims[3] = size
                    del s.dim[:]
                    s.dim.extend(dims)
        if layer.type != "InnerProduct":
            del new.top[:]
            new.top.extend(renamed.get(t, t) for t in layer.top)
            continue
        ip = layer.inner_product_param
        if ip.axis != 1 or ip.transpose:
            raise NetError(
                f"layer {layer.name!r}: only InnerProduct with axis 1 and no transpose can be converted"
            )
        in_shape = shapes[layer.bottom[0]]
        channels = in_shape[1]
        kernel = (in_shape[2], in_shape[3]) if len(in_shape) == 4 else (1, 1)
        if layer.bottom[0] in dissolved:
            kernel = (1, 1)  # over the unpooled map: one score per cell
        conv = Conversion(layer.name, layer.name + SUFFIX, channels, kernel, ip.num_output)
        conversions[layer.name] = conv
        new.name = conv.new_name
        new.type = "Convolution"
        new.ClearField("inner_product_param")
        new.ClearField("blobs")
        cp = new.convolution_param
        cp.num_output = ip.num_output
        if kernel[0] == kernel[1]:
            cp.kernel_size.append(kernel[0])
        else:
            cp.kernel_h, cp.kernel_w = kernel
        if ip.HasField("bias_term"):
            cp.bias_term = ip.bias_term
        for top in layer.top:
            renamed[top] = top + SUFFIX
        del new.top[:]
        new.top.extend(renamed[t] for t in layer.top)
    return FullyConvNet(out, conversions, max((_writer_border(layers, p) for p in pools), default=0))


def _writer_border(layers: list[caffe_pb2.LayerParameter], pool: caffe_pb2.LayerParameter) -> int:
    """The padding border of the Convolution that wrote what ``pool`` averages (through in-place layers)."""
    blob = pool.bottom[0]
    writers = [lay for lay in layers if blob in lay.top and blob not in lay.bottom]
    return _padding_border(writers[-1]) if writers and writers[-1].type == "Convolution" else 0


def _dissolvable_global_pools(layers: list[caffe_pb2.LayerParameter]) -> list[caffe_pb2.LayerParameter]:
    """The global average poolings whose output only InnerProduct layers read (the pooling can then move
    after them, as the mean of their score map)."""
    out = []
    for layer in layers:
        p = layer.pooling_param
        if layer.type != "Pooling" or not p.global_pooling or p.pool != caffe_pb2.PoolingParameter.AVE:
            continue
        readers = [other for other in layers if layer.top[0] in other.bottom]
        if readers and all(r.type == "InnerProduct" for r in readers):
            out.append(layer)
    return out


def _param_shapes(layer: caffe_pb2.LayerParameter, bottom: Shape | None) -> list[Shape] | None:
    """Caffe's parameter shapes of a Convolution/InnerProduct layer, used to restore legacy 4-d blobs."""
    if layer.type == "Convolution" and bottom is not None:
        p = layer.convolution_param
        kh, kw = _pair(p, "kernel_size", 0)
        group = p.group or 1
        return [(p.num_output, bottom[1] // group, kh, kw), (p.num_output,)]
    if layer.type == "InnerProduct" and bottom is not None:
        p = layer.inner_product_param
        return [(p.num_output, math.prod(bottom[p.axis :])), (p.num_output,)]
    return None


def _check_fit(arrays: list[np.ndarray], wanted: list[Shape], layer: str, origin: str) -> None:
    """Each stored blob must hold as many values as the net's parameter (legacy 4-d blobs reshape)."""
    for index, (array, shape) in enumerate(zip(arrays, wanted)):
        if array.size != math.prod(shape):
            what = "weights" if index == 0 else f"param {index}"
            raise NetError(
                f"{origin}: layer {layer!r}: {what} of shape {tuple(array.shape)} do not fit the net's "
                f"{tuple(shape)}"
            )


def convert_weights(
    full: FullyConvNet, weights: caffe_pb2.NetParameter, origin: str = "the caffemodel"
) -> caffe_pb2.NetParameter:
    """The caffemodel of the fully convolutional net: unchanged layers copied, converted ones reshaped.

    Written like pycaffe's ``net.save``: every layer of the net with ``phase: TEST`` and its blobs in the
    current ``shape`` format, so that real Caffe reads it (CopyTrainedLayersFrom matches by layer name).
    ``origin`` (the caffemodel's file name) is named in errors: missing weights, weights that do not fit.
    """
    params = weights_of(weights, origin)
    layers = deploy_layers(full.net)
    shapes = blob_shapes(layers)
    by_new = {c.new_name: c for c in full.conversions.values()}
    out = caffe_pb2.NetParameter()
    out.CopyFrom(full.net)
    out.ClearField("layer")
    for layer in layers:
        saved = out.layer.add()
        saved.CopyFrom(layer)
        saved.phase = caffe_pb2.TEST
        conv = by_new.get(layer.name)
        source = conv.old_name if conv else layer.name
        arrays = params.get(source)
        if arrays is None:
            if layer.type in ("Convolution", "InnerProduct"):
                raise NetError(f"{origin}: layer {source!r}: no weights (the net needs them)")
            continue
        if conv is not None:
            kh, kw = conv.kernel
            wanted = [(conv.num_output, conv.channels, kh, kw), (conv.num_output,)]
            _check_fit(arrays, wanted, source, origin)
            arrays = [a.reshape(s) for a, s in zip(arrays, wanted)]
        else:
            bottom = shapes.get(layer.bottom[0]) if len(layer.bottom) else None
            wanted = _param_shapes(layer, bottom)
            if wanted is not None:
                _check_fit(arrays, wanted, source, origin)
                arrays = [a.reshape(s) for a, s in zip(arrays, wanted)]
        saved.blobs.extend(array_to_blob(a) for a in arrays)
    return out


@dataclass(frozen=True)
class SurgeryResult:
    """Paths written by :func:`surgery`, and the conversions done."""

    prototxt: Path
    caffemodel: Path
    conversions: dict[str, Conversion]
    score_map: ScoreMap | None = None  # set when the net was fully convolutional already


def surgery(
    model: str | Path, weights: str | Path, out_dir: str | Path, size: int = 451, stem: str | None = None
) -> SurgeryResult:
    """Write ``<stem>_fullconv.prototxt`` and ``<stem>_conv.caffemodel`` for a deploy net and its weights.

    A net that is fully convolutional already (a convolution before global pooling) gets its score-map net
    ``<stem>_scoremap.prototxt`` instead, and keeps its caffemodel (returned as is: nothing to convert).
    """
    net = read_net(model)
    head = score_map(net)
    if head is not None:
        out_dir = Path(out_dir)
        proto_path = out_dir / f"{stem or Path(weights).stem}_scoremap.prototxt"
        header = (
            f"Score map of {Path(model).name} at {size}x{size} (pixsent surgery): {head.blob} before "
            f"{head.pool}, softmax over channels at each location"
        )
        atomic_write_text(proto_path, f"# {header}\n" + to_text(score_map_net(net, head, size)))
        return SurgeryResult(proto_path, Path(weights), {}, head)
    with naming(str(model)):  # layer errors ("layer 'x': ...") also name the prototxt
        full = fully_convolutional(net, size=size)
    converted = convert_weights(full, read_caffemodel(weights), str(weights))
    out_dir = Path(out_dir)
    stem = stem or Path(weights).stem
    proto_path = out_dir / f"{stem}_fullconv.prototxt"
    model_path = out_dir / f"{stem}_conv.caffemodel"
    names = ", ".join(
        f"{c.old_name} -> {c.new_name} (k{c.kernel[0]}x{c.kernel[1]})" for c in full.conversions.values()
    )
    header = f"Fully convolutional twin of {Path(model).name} at {size}x{size} (pixsent surgery): {names}"
    atomic_write_text(proto_path, f"# {header}\n" + to_text(full.net))
    write_caffemodel(converted, model_path)
    return SurgeryResult(proto_path, model_path, full.conversions)


def is_fully_convolutional(net: caffe_pb2.NetParameter) -> bool:
    """True when a net has no InnerProduct layer (it can run on any input size)."""
    return not any(layer.type == "InnerProduct" for layer in net.layer)


# ------------------------------------------------------------------------ fully convolutional classifiers


@dataclass(frozen=True)
class ScoreMap:
    """Where a fully convolutional classifier's class scores lie before its global pooling averages them.

    ``border``: map cells on each side whose receptive field lies wholly in the classifier convolution's
    zero padding (SqueezeNet v1.0's 1x1 ``conv_final`` has pad 1: the ring of its 15 x 15 map at 227 x 227
    holds the bias alone, whatever the image), so they are left out of the map drawn over the image.
    """

    blob: str
    layer: str
    pool: str
    pool_method: int
    border: int


def _is_global_pool(layer: caffe_pb2.LayerParameter, shapes: dict[str, Shape]) -> bool:
    """Global pooling: ``global_pooling``, or a window covering the whole bottom (a 1 x 1 output)."""
    if layer.type != "Pooling":
        return False
    if layer.pooling_param.global_pooling:
        return True
    bottom, top = shapes[layer.bottom[0]], shapes[layer.top[0]]
    return len(top) == 4 and top[2:] == (1, 1) and bottom[2:] != (1, 1)


def _padding_border(layer: caffe_pb2.LayerParameter) -> int:
    """Output cells per side whose window [i*s - p, i*s - p + k - 1] lies wholly in the padding."""
    (k, _), (stride, _), (pad, _) = (
        _pair(layer.convolution_param, name, d) for name, d in (("kernel_size", 0), ("stride", 1), ("pad", 0))
    )
    return max(0, -(-(pad - k + 1) // stride))


def score_map(net: caffe_pb2.NetParameter) -> ScoreMap | None:
    """The score map of a net without InnerProduct that ends in Convolution -> (in-place layers) -> global
    pooling (-> Softmax); None for any other net (CaffeNet's fc layers need :func:`fully_convolutional`)."""
    layers = deploy_layers(net)
    if any(layer.type == "InnerProduct" for layer in layers):
        return None
    shapes = blob_shapes(layers)
    pools = [i for i, layer in enumerate(layers) if _is_global_pool(layer, shapes)]
    if not pools:
        return None
    pool = layers[pools[-1]]
    if any(layer.type not in ("Softmax", "Pooling") for layer in layers[pools[-1] + 1 :]):
        return None
    blob = pool.bottom[0]
    writers = [layer for layer in layers[: pools[-1]] if blob in layer.top and blob not in layer.bottom]
    if not writers or writers[-1].type != "Convolution":
        return None
    conv = writers[-1]
    return ScoreMap(blob, conv.name, pool.name, pool.pooling_param.pool, _padding_border(conv))


MAP_TOP = "prob_map"


def score_map_net(
    net: caffe_pb2.NetParameter, head: ScoreMap, size: int | None = None, batch: int = 1
) -> caffe_pb2.NetParameter:
    """The deploy net cut after the score blob (and its in-place layers), with Softmax ``prob_map`` over the
    channels at each location; the Input becomes batch x C x size x size. The weights are the net's own."""
    out = fully_convolutional(net, size=size, batch=batch).net  # no InnerProduct: only the Input changes
    layers = list(out.layer)
    cut = max(i for i, layer in enumerate(layers) if head.blob in layer.top)
    out.ClearField("layer")
    out.layer.extend(layers[: cut + 1])
    out.layer.add(name=MAP_TOP, type="Softmax", bottom=[head.blob], top=[MAP_TOP])
    out.name = f"{net.name}ScoreMap" if net.name else "ScoreMap"
    return out
