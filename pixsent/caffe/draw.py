"""pycaffe's ``caffe.draw``: a NetParameter as a graphviz graph (pydot), as BVLC python/caffe/draw.py.

pydot (and, to render images, graphviz's ``dot`` program) are optional: imported when a function runs, with
a clear error when absent. The graph, as Caffe draws it: one record node per layer labelled ``name
(type)`` (convolutions add kernel size, stride and pad, pooling its method too), an octagon node per blob,
edges bottom -> layer -> top (top edges labelled with a Data layer's batch size or a Convolution's /
InnerProduct's num_output), in-place layers in green, convolutions red, pooling orange, inner products
purple, others blue. ``phase`` draws only the layers a TRAIN or TEST net includes (by ``include`` /
``exclude`` phase rules); ``rankdir`` is graphviz's (LR, TB, BT, RL).
"""

from __future__ import annotations

import os
from typing import Any

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError, PixsentError

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}
_TYPE_COLORS = {
    "Convolution": "#FF5050",
    "Deconvolution": "#FF5050",
    "Pooling": "#FF9900",
    "InnerProduct": "#CC33FF",
}


class DrawError(PixsentError):
    """pydot or graphviz is missing, or graphviz failed to render."""


def _pydot() -> Any:
    try:
        import pydot
    except ImportError:
        raise DrawError("caffe.draw needs pydot: pip install pydot (and graphviz for images)") from None
    return pydot


def get_pooling_types_dict() -> dict[int, str]:
    """PoolingParameter.PoolMethod number -> name (MAX, AVE, STOCHASTIC)."""
    desc = caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR
    return {v.number: v.name for v in desc.values}


def get_edge_label(layer: caffe_pb2.LayerParameter) -> str:
    """Label of a layer's top edges: ``Batch N`` for Data, num_output for Convolution/InnerProduct."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer: caffe_pb2.LayerParameter) -> list[float]:
    """lr_mult of each parameter of a Convolution/Deconvolution/InnerProduct layer (default 1)."""
    if layer.type not in ("Convolution", "Deconvolution", "InnerProduct"):
        return []
    own = layer.inner_product_param if layer.type == "InnerProduct" else layer.convolution_param
    bias = own.bias_term
    count = 2 if bias else 1
    return [float(layer.param[i].lr_mult) if i < len(layer.param) else 1.0 for i in range(count)]


def _first(values, default: int) -> int:
    return int(values[0]) if len(values) else default


def get_layer_label(layer: caffe_pb2.LayerParameter, rankdir: str, display_lrm: bool = False) -> str:
    """The quoted node label of a layer; words are split by newlines when the graph runs sideways."""
    sep = " " if rankdir in ("TB", "BT") else "\\n"
    if layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        label = (
            f"{layer.name}{sep}({layer.type}){sep}kernel size: {_first(p.kernel_size, 1)}{sep}"
            f"stride: {_first(p.stride, 1)}{sep}pad: {_first(p.pad, 0)}"
        )
    elif layer.type == "Pooling":
        p = layer.pooling_param
        method = get_pooling_types_dict()[p.pool]
        label = (
            f"{layer.name}{sep}({method} {layer.type}){sep}kernel size: {p.kernel_size}{sep}"
            f"stride: {p.stride}{sep}pad: {p.pad}"
        )
    else:
        label = f"{layer.name}{sep}({layer.type})"
    if display_lrm:
        mults = get_layer_lr_mult(layer)
        if mults:
            label += f"{sep}lr mult: " + ", ".join(f"{m:g}" for m in mults)
    return f'"{label}"'


def choose_color_by_layertype(layertype: str) -> str:
    """Fill colour of a layer node."""
    return _TYPE_COLORS.get(layertype, LAYER_STYLE_DEFAULT["fillcolor"])


def _included(layer: caffe_pb2.LayerParameter, phase: int | None) -> bool:
    if phase is None:
        return True
    if layer.include and layer.exclude:
        raise NetError(f"layer {layer.name!r} has both include and exclude specified")
    if layer.include:
        return any(rule.phase == phase for rule in layer.include)
    return not any(rule.phase == phase for rule in layer.exclude)


def get_pydot_graph(
    caffe_net: caffe_pb2.NetParameter,
    rankdir: str,
    label_edges: bool = True,
    phase: int | None = None,
    display_lrm: bool = False,
) -> Any:
    """The pydot.Dot graph of ``caffe_net`` (needs pydot, not graphviz)."""
    pydot = _pydot()
    graph = pydot.Dot(caffe_net.name or "Default", graph_type="digraph", rankdir=rankdir)
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str, str]] = []
    for layer in caffe_net.layer:
        if not _included(layer, phase):
            continue
        node_name = f"{layer.name}_{layer.type}"
        label = get_layer_label(layer, rankdir, display_lrm=display_lrm)
        if len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]:
            nodes[node_name] = pydot.Node(label, **NEURON_LAYER_STYLE)
        else:
            style = dict(LAYER_STYLE_DEFAULT, fillcolor=choose_color_by_layertype(layer.type))
            nodes[node_name] = pydot.Node(label, **style)
        for bottom in layer.bottom:
            nodes[bottom + "_blob"] = pydot.Node(bottom, **BLOB_STYLE)
            edges.append((bottom + "_blob", node_name, '""'))
        for top in layer.top:
            nodes[top + "_blob"] = pydot.Node(top)
            edges.append((node_name, top + "_blob", get_edge_label(layer) if label_edges else '""'))
    for node in nodes.values():
        graph.add_node(node)
    for src, dst, label in edges:
        graph.add_edge(pydot.Edge(nodes[src], nodes[dst], label=label))
    return graph


def draw_net(
    caffe_net: caffe_pb2.NetParameter,
    rankdir: str,
    ext: str = "png",
    phase: int | None = None,
    display_lrm: bool = False,
) -> bytes:
    """The graph rendered by graphviz in format ``ext`` (png, pdf, svg, raw = the dot text, ...)."""
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    try:
        return graph.create(format=ext)
    except FileNotFoundError as exc:
        raise DrawError(f"drawing needs graphviz's dot program on PATH ({exc})") from None
    except Exception as exc:  # pydot wraps graphviz failures in plain exceptions
        if "dot" in str(exc) and "not found" in str(exc):
            raise DrawError(f"drawing needs graphviz's dot program on PATH ({exc})") from None
        raise


def draw_net_to_file(
    caffe_net: caffe_pb2.NetParameter,
    filename: str | os.PathLike[str],
    rankdir: str = "LR",
    phase: int | None = None,
    display_lrm: bool = False,
) -> None:
    """Draw into ``filename`` in the format its extension names (``.raw`` writes graphviz's input text)."""
    from pixsent.formats.atomic import atomic_write_bytes

    name = os.fspath(filename)
    ext = name[name.rfind(".") + 1 :]
    atomic_write_bytes(name, draw_net(caffe_net, rankdir, ext, phase, display_lrm))
