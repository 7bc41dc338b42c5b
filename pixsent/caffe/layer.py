"""``caffe.Layer``: the base class of Python layers (``type: "Python"`` in a prototxt).

Subclass it and define ``setup(bottom, top)``, ``reshape(bottom, top)``, ``forward(bottom, top)`` and
``backward(top, propagate_down, bottom)``; the engine (``pixsent/engine/layers/python.py``) sets
``self.param_str``, ``self.phase`` and ``self.blobs`` before ``setup`` and calls the methods as Caffe's
python_layer.hpp does.
"""

from __future__ import annotations

from typing import Any


class Layer:
    """Base of a user's Python layer; only ``forward`` and ``backward`` have no default."""

    param_str: str = ""
    phase: int = 0

    def __init__(self, param: Any = None) -> None:
        self.layer_param = param

    @property
    def type(self) -> str:
        """Caffe's layer type of every Python layer."""
        return "Python"

    def setup(self, bottom: list, top: list) -> None:
        """Check parameters and bottoms once, when the net is built."""

    def reshape(self, bottom: list, top: list) -> None:
        """Shape the tops for the bottoms (called at set-up and before every forward)."""

    def forward(self, bottom: list, top: list) -> None:
        raise NotImplementedError(f"{type(self).__name__} defines no forward(bottom, top)")

    def backward(self, top: list, propagate_down: list[bool], bottom: list) -> None:
        raise NotImplementedError(f"{type(self).__name__} defines no backward(top, propagate_down, bottom)")
