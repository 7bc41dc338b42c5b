"""Which blobs the layer probes (Table 3) read, per architecture, picked from the deploy net itself.

CaffeNet keeps the paper's 13 layers (``fc8`` also names a fine-tuned ``fc8_twitter``). Other backbones get
the same kind of ladder from their structure: SqueezeNet its first convolution, every pooling, every fire
module's concat and the classifier convolution (``conv_final`` or its renamed ``conv_final_twitter``); a
residual net (open_nsfw) the stem's pooling, the output of each stage's last Eltwise (its ReLU runs in
place), the global pooling and the classifier. Every name is a post-activation blob: in-place ReLUs and
Dropouts write into the blob they read, as in Caffe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pixsent.analysis.surgery import blob_shapes, deploy_layers
from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError

Layers = Sequence[caffe_pb2.LayerParameter]

#: The layers the paper probes, in network order (post-activation blobs of CaffeNet's deploy net).
TABLE3_LAYERS = (
    "conv1",
    "pool1",
    "norm1",
    "conv2",
    "pool2",
    "norm2",
    "conv3",
    "conv4",
    "conv5",
    "pool5",
    "fc6",
    "fc7",
    "fc8",
)


@dataclass(frozen=True)
class LayerSet:
    """One architecture's probe ladder: which registry architectures it serves, whether a net looks like it
    (to pick a default without the registry), and the picker itself (deploy layers -> probe names)."""

    name: str
    architectures: tuple[str, ...]
    claims: Callable[[Layers], bool]
    pick: Callable[[Layers], list[str]]


LAYER_SETS: dict[str, LayerSet] = {}


def register_layer_set(layer_set: LayerSet) -> LayerSet:
    """Add a ladder; detection tries them in registration order (the most specific first)."""
    LAYER_SETS[layer_set.name] = layer_set
    return layer_set


def _types(layers: Layers) -> set[str]:
    return {layer.type for layer in layers}


def _unique(names: list[str]) -> list[str]:
    seen: list[str] = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return seen


def _tops(layers: Layers) -> set[str]:
    return {top for layer in layers for top in layer.top}


def resolvable(name: str, blobs: set[str]) -> bool:
    """A probe name the net has: the blob itself, or exactly one ``<name>_...`` blob (``fc8_twitter``)."""
    return name in blobs or sum(b.startswith(f"{name}_") for b in blobs) == 1


def _caffenet(layers: Layers) -> list[str]:
    """The paper's 13 layers that the net has (fc7-2 has no fc8; its fc7_twitter answers to fc7)."""
    blobs = _tops(layers)
    return [name for name in TABLE3_LAYERS if resolvable(name, blobs)]


def _claims_caffenet(layers: Layers) -> bool:
    names = {layer.name for layer in layers}
    return "LRN" in _types(layers) and {"conv1", "conv5", "pool5"} <= names


def _last_conv_top(layers: Layers) -> list[str]:
    """The last Convolution's top when no InnerProduct follows it (a convolutional classifier)."""
    convs = [i for i, layer in enumerate(layers) if layer.type == "Convolution"]
    if not convs or any(layer.type == "InnerProduct" for layer in layers[convs[-1] :]):
        return []
    return [layers[convs[-1]].top[0]]


def _squeezenet(layers: Layers) -> list[str]:
    """conv1, every Pooling and Concat (fire modules) in order, and the classifier convolution."""
    convs = [layer for layer in layers if layer.type == "Convolution"]
    picked = [convs[0].top[0]] if convs else []
    last = _last_conv_top(layers)
    for layer in layers:
        if layer.type in ("Pooling", "Concat"):
            picked.append(layer.top[0])
        elif last and layer.type == "Convolution" and layer.top[0] == last[0]:
            picked.append(last[0])
        elif layer.type == "InnerProduct":
            picked.append(layer.top[0])
    return _unique(picked)


def _claims_squeezenet(layers: Layers) -> bool:
    return "Concat" in _types(layers) and "Eltwise" not in _types(layers)


def _spatial(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[2:])


def _resnet(layers: Layers) -> list[str]:
    """The stem's pooling, each stage's last Eltwise (one stage per spatial size), the pooling after the
    last stage, and every InnerProduct (the classifier)."""
    shapes = blob_shapes(list(layers))
    eltwise = [i for i, layer in enumerate(layers) if layer.type == "Eltwise"]
    if not eltwise:
        raise NetError("no Eltwise layer: not a residual net (pass --layers)")
    picked = [layers[i].top[0] for i in range(eltwise[0]) if layers[i].type == "Pooling"][-1:]
    for k, i in enumerate(eltwise):
        top = layers[i].top[0]
        nxt = layers[eltwise[k + 1]].top[0] if k + 1 < len(eltwise) else None
        if nxt is None or _spatial(shapes[nxt]) != _spatial(shapes[top]):
            picked.append(top)
    for layer in layers[eltwise[-1] :]:
        if layer.type in ("Pooling", "InnerProduct"):
            picked.append(layer.top[0])
    picked += _last_conv_top(layers[eltwise[-1] + 1 :])
    return _unique(picked)


def _claims_resnet(layers: Layers) -> bool:
    return "Eltwise" in _types(layers)


CAFFENET = register_layer_set(
    LayerSet("caffenet", ("caffenet", "caffenet-fullconv"), _claims_caffenet, _caffenet)
)
RESNET = register_layer_set(LayerSet("resnet", ("resnet50-1by2", "resnet"), _claims_resnet, _resnet))
SQUEEZENET = register_layer_set(LayerSet("squeezenet", ("squeezenet",), _claims_squeezenet, _squeezenet))
#: Any other net: the SqueezeNet rule (first conv, poolings, concats, classifier) says something everywhere.
GENERIC = register_layer_set(LayerSet("generic", (), lambda layers: True, _squeezenet))


def for_architecture(architecture: str) -> LayerSet:
    """The ladder serving a registry ``architecture`` (NetError listing the known ones otherwise)."""
    for layer_set in LAYER_SETS.values():
        if architecture == layer_set.name or architecture in layer_set.architectures:
            return layer_set
    known = sorted({a for s in LAYER_SETS.values() for a in (s.name, *s.architectures)})
    raise NetError(f"no probe layers known for architecture {architecture!r} (known: {', '.join(known)})")


def detect(net: caffe_pb2.NetParameter) -> LayerSet:
    """The first ladder that claims the net's layers (the generic one at worst)."""
    layers = deploy_layers(net)
    return next(s for s in LAYER_SETS.values() if s.claims(layers))


def default_layers(
    net: caffe_pb2.NetParameter, architecture: str | None = None
) -> tuple[LayerSet, list[str]]:
    """(the ladder used, the probe names of ``net``): the registry architecture's, else detected."""
    layer_set = for_architecture(architecture) if architecture else detect(net)
    names = layer_set.pick(deploy_layers(net))
    if not names:
        raise NetError(
            f"net {net.name!r}: no layers to probe found by the {layer_set.name} rule; pass --layers"
        )
    return layer_set, names
