"""Caffe layers by family; importing this package fills the registry (``LAYERS``)."""

from pixsent.engine.layers import (  # noqa: F401
    activation,
    common,
    data,
    hdf5,
    loss,
    margin_loss,
    memory_data,
    neuron,
    parameter,
    prob_loss,
    python,
    recurrent,
    reduce,
    select,
    soft_loss,
    spatial,
    vision,
    window_data,
)
from pixsent.engine.layers.base import Layer
from pixsent.engine.registry import LAYER_REGISTRY

LAYERS = LAYER_REGISTRY
REGISTRY = LAYER_REGISTRY

__all__ = ["LAYERS", "LAYER_REGISTRY", "REGISTRY", "Layer"]
