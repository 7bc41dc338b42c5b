"""The Layer base class: a LayerParameter, its parameter tensors, shape set-up and a torch forward."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, ClassVar

import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.fillers import advance, check_filler, fill
from pixsent.engine.rng import CaffeRng

if TYPE_CHECKING:
    from pixsent.engine.blob import Blob
    from pixsent.engine.context import NetContext

Shape = tuple[int, ...]


def accumulate_diff(param: torch.Tensor, grad: torch.Tensor) -> None:
    """param.grad += grad, as Caffe accumulates param diffs (a contiguous copy of grad when there is none
    yet): for the fast paths that add their parameter gradients themselves instead of returning them."""
    if param.grad is None:
        param.grad = grad.clone(memory_format=torch.contiguous_format)
    else:
        param.grad.add_(grad)


class Layer:
    """One Caffe layer. ``setup`` creates parameters and returns top shapes; ``forward`` maps tensors.

    Backward is autograd's, except where a layer wraps its own autograd Function. Loss layers set
    ``is_loss`` (Caffe's LossLayer: loss_weight 1 on the first top unless given).
    """

    type_name: ClassVar[str] = ""
    is_loss: ClassVar[bool] = False
    #: layers whose top blobs are owned by the net (Input): forward returns the blobs' own tensors
    owns_tops: ClassVar[bool] = False

    def __init__(self, param: caffe_pb2.LayerParameter, ctx: NetContext) -> None:
        self.param = param
        self.ctx = ctx
        self.phase = ctx.phase
        self.name = param.name
        self.blobs: list[torch.Tensor] = []
        self.top_blobs: list[Blob] = []
        if self.is_loss and not param.loss_weight:
            param.loss_weight.append(1.0)

    @property
    def type(self) -> str:
        return self.type_name

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        """Create parameters for these bottom shapes and return the top shapes (default: same as bottom 0)."""
        return [bottom_shapes[0]] * len(self.param.top)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        """Top shapes for new bottom shapes (Caffe's Reshape); parameters already exist, so setup again."""
        return self.setup(bottom_shapes)

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def make_param(self, shape: Shape, filler: caffe_pb2.FillerParameter) -> torch.Tensor:
        """A new float32 parameter tensor on the context's device, filled from the net's random stream
        (Caffe's generator unless ``rng_mode`` is torch). A layer the net's caffemodel overwrites next gets
        an unfilled tensor and its draws are deferred (see ``CaffeRng.defer``)."""
        shape = tuple(int(d) for d in shape)
        rng = self.ctx.filler_rng()
        if self.name in self.ctx.overwritten_layers and isinstance(rng, CaffeRng):
            check_filler(filler)
            rng.defer(partial(advance, shape, filler, rng))
            return torch.empty(shape, dtype=torch.float32, device=self.ctx.device)
        return fill(shape, filler, rng).to(self.ctx.device)

    def __repr__(self) -> str:
        return f"<{self.type_name} {self.name!r}>"
