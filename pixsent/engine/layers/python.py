"""Caffe's Python layer (``type: "Python"``, python_param { module layer param_str }), as
python_layer.hpp and layer_factory.cpp run it.

The class named ``layer`` in ``module`` (imported by name, so its folder must be on PYTHONPATH) is built
with the LayerParameter, then gets ``param_str`` and ``phase`` and its ``setup(bottom, top)`` and
``reshape(bottom, top)`` are called; every forward calls ``reshape`` then ``forward(bottom, top)``; the
backward pass calls ``backward(top, propagate_down, bottom)``, which writes ``bottom[i].diff``. Bottoms
and tops are Blobs with ``data``, ``diff``, ``reshape``, ``count``, ``shape`` and ``num/channels/height/
width``; ``self.blobs.add_blob(*shape)`` adds a parameter (zeros) that the net learns like any other,
the layer writing its ``diff`` itself. An exception in the user's code becomes a NetError naming the layer
and the method (the original exception chained).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.blob import Blob
from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError, PixsentError


class PythonLayerError(NetError):
    """The user's Python layer failed (import, construction, setup, reshape, forward or backward)."""


class ParamBlobs(Sequence[Blob]):
    """pycaffe's BlobVec for a Python layer's parameters: read afresh from the engine layer (weight sharing
    may replace the tensors) and grown with ``add_blob(*shape)``."""

    def __init__(self, layer: PythonLayer) -> None:
        self._layer = layer

    def __len__(self) -> int:
        return len(self._layer.blobs)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(len(self))[i]]
        t = self._layer.blobs[i]
        return Blob(f"{self._layer.name}/{i}", device=t.device, tensor=t, is_param=True)

    def __iter__(self) -> Iterator[Blob]:
        return (self[i] for i in range(len(self)))

    def add_blob(self, *shape: int) -> None:
        """Append a zero-filled parameter blob of this shape."""
        dims = tuple(int(d) for d in shape)
        self._layer.blobs.append(torch.zeros(dims, dtype=torch.float32, device=self._layer.ctx.device))


def _host_blob(name: str, shape: Shape) -> Blob:
    blob = Blob(name, tuple(shape))
    blob.owned = True
    return blob


@register_layer("Python")
class PythonLayer(Layer):
    """Runs a user's Python class as a layer (see the module docstring)."""

    def __init__(self, param: caffe_pb2.LayerParameter, ctx) -> None:
        super().__init__(param, ctx)
        p = param.python_param
        self.where = f"layer {param.name!r} (Python {p.module}.{p.layer})"
        if not p.module or not p.layer:
            raise PythonLayerError(f"layer {param.name!r}: python_param needs both module and layer")
        try:
            module = importlib.import_module(p.module)
        except Exception as exc:
            raise PythonLayerError(
                f"{self.where}: cannot import module {p.module!r} ({type(exc).__name__}: {exc}); "
                "its folder must be on PYTHONPATH"
            ) from exc
        cls = getattr(module, p.layer, None)
        if cls is None:
            raise PythonLayerError(f"{self.where}: module {p.module!r} has no {p.layer!r}")
        self.user_layer = self._call("__init__", cls, param)
        self.user_layer.blobs = ParamBlobs(self)
        self._bottom: list[Blob] = []
        self._top: list[Blob] = []

    def _call(self, what: str, fn, *args) -> Any:
        """Run user code; its exceptions are reported naming the layer and the method."""
        try:
            return fn(*args)
        except PixsentError:
            raise
        except Exception as exc:
            raise PythonLayerError(f"{self.where}: {what} raised {type(exc).__name__}: {exc}") from exc

    def _set_bottoms(self, shapes: Sequence[Shape]) -> None:
        if [b.shape for b in self._bottom] != [tuple(s) for s in shapes]:
            self._bottom = [_host_blob(f"{self.name}/bottom{i}", s) for i, s in enumerate(shapes)]

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        user = self.user_layer
        user.param_str = self.param.python_param.param_str
        user.phase = int(self.phase)
        self._set_bottoms(bottom_shapes)
        self._top = [_host_blob(t, ()) for t in self.param.top]
        self._call("setup", user.setup, self._bottom, self._top)
        self._call("reshape", user.reshape, self._bottom, self._top)
        return [t.shape for t in self._top]

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        self._set_bottoms(bottom_shapes)
        self._call("reshape", self.user_layer.reshape, self._bottom, self._top)
        return [t.shape for t in self._top]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        # learned parameters go into the graph too, so the user's backward runs (and writes their diffs)
        # even where no bottom needs a gradient, as Caffe calls Backward for a layer with lr_mult != 0
        params = [p for p in self.blobs if p.requires_grad]
        if torch.is_grad_enabled() and (params or any(b.requires_grad for b in bottoms)):
            return list(_PythonFunction.apply(self, len(bottoms), *bottoms, *params))
        return self.run_forward(bottoms)

    def run_forward(self, bottoms: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Hand the bottoms to the user's reshape and forward; return copies of the tops it wrote."""
        if len(self._bottom) != len(bottoms):
            self._bottom = [_host_blob(f"{self.name}/bottom{i}", ()) for i in range(len(bottoms))]
        for blob, x in zip(self._bottom, bottoms):
            blob.tensor = x.detach().to("cpu", torch.float32).contiguous()
        self._call("reshape", self.user_layer.reshape, self._bottom, self._top)
        self._call("forward", self.user_layer.forward, self._bottom, self._top)
        return [t.tensor.detach().clone().to(self.ctx.device) for t in self._top]

    def run_backward(self, top_grads: Sequence[torch.Tensor | None], propagate: list[bool]) -> list:
        """Hand the top diffs to the user's backward; return the bottom diffs it wrote (None where not
        asked)."""
        for blob, g in zip(self._top, top_grads):
            diff = blob.live_diff()
            if g is None:
                diff.zero_()
            else:
                diff.copy_(g.detach().to("cpu", torch.float32).reshape(diff.shape))
        for blob in self._bottom:
            blob.live_diff().zero_()
        self._call("backward", self.user_layer.backward, self._top, list(propagate), self._bottom)
        return [
            b.live_diff().clone().to(self.ctx.device) if p else None for b, p in zip(self._bottom, propagate)
        ]


class _PythonFunction(torch.autograd.Function):
    """Autograd around a Python layer: its backward is the user's ``backward``."""

    @staticmethod
    def forward(ctx, layer: PythonLayer, n_bottoms: int, *inputs: torch.Tensor):
        ctx.layer, ctx.n_bottoms, ctx.n_params = layer, n_bottoms, len(inputs) - n_bottoms
        return tuple(layer.run_forward(inputs[:n_bottoms]))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        layer: PythonLayer = ctx.layer
        propagate = [bool(n) for n in ctx.needs_input_grad[2 : 2 + ctx.n_bottoms]]
        return (None, None, *layer.run_backward(grads, propagate), *([None] * ctx.n_params))
