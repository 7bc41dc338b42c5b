"""Set-up checks shared by the layers that cannot back-propagate to some bottoms (labels, indices)."""

from __future__ import annotations

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError


def refuse_backward(param: caffe_pb2.LayerParameter, index: int, what: str) -> None:
    """NetError when ``propagate_down`` asks for a gradient Caffe's layer never computes.

    Caffe stops with a fatal error in Backward when such a bottom is asked for a diff; pixsent refuses the
    net when it is built, naming the layer. Without ``propagate_down`` the bottom simply gets no gradient.
    """
    pd = param.propagate_down
    if index < len(pd) and pd[index]:
        raise NetError(
            f"layer {param.name!r}: {param.type} cannot back-propagate to its {what} (bottom {index}); "
            f"set propagate_down: false for it"
        )


def count_bottoms(param: caffe_pb2.LayerParameter, n: int, lo: int, hi: int | None = None) -> None:
    """NetError unless the layer has between ``lo`` and ``hi`` bottoms (exactly ``lo`` when hi is None)."""
    hi = lo if hi is None else hi
    if not lo <= n <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise NetError(f"layer {param.name!r}: {param.type} takes {want} bottoms, got {n}")


def count_tops(param: caffe_pb2.LayerParameter, lo: int, hi: int | None = None) -> None:
    """NetError unless the layer names between ``lo`` and ``hi`` tops (exactly ``lo`` when hi is None)."""
    hi = lo if hi is None else hi
    n = len(param.top)
    if not lo <= n <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise NetError(f"layer {param.name!r}: {param.type} makes {want} tops, {n} named")
