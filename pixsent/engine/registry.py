"""Layer registry keyed by Caffe's type name (Caffe's LayerRegistry), and the factory that uses it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError

if TYPE_CHECKING:
    from pixsent.engine.context import NetContext
    from pixsent.engine.layers.base import Layer

LAYER_REGISTRY: dict[str, type[Layer]] = {}


def register_layer(type_name: str) -> Callable[[type[Layer]], type[Layer]]:
    """Class decorator registering a Layer subclass under Caffe's ``type`` string."""

    def decorate(cls: type[Layer]) -> type[Layer]:
        if type_name in LAYER_REGISTRY:
            raise ValueError(f"layer type {type_name!r} registered twice")
        cls.type_name = type_name
        LAYER_REGISTRY[type_name] = cls
        return cls

    return decorate


def create_layer(param: caffe_pb2.LayerParameter, ctx: NetContext) -> Layer:
    """Instantiate the registered class for ``param.type``; unknown types raise NetError naming the layer.

    The registry is filled by importing pixsent.engine.layers (pixsent.engine.net does).
    """
    cls = LAYER_REGISTRY.get(param.type)
    if cls is None:
        raise NetError(f"layer {param.name!r}: unknown layer type {param.type!r}")
    return cls(param, ctx)
