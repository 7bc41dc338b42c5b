"""Caffe layers by family; importing this package fills the registry (``LAYERS``)."""

from pixsent.engine.layers import common, data, loss, neuron, soft_loss, vision  # noqa: F401
from pixsent.engine.layers.base import Layer
from pixsent.engine.registry import LAYER_REGISTRY

LAYERS = LAYER_REGISTRY
REGISTRY = LAYER_REGISTRY

__all__ = ["LAYERS", "LAYER_REGISTRY", "REGISTRY", "Layer"]
