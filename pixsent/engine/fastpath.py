"""Switches for the engine's speed-ups (all keep Caffe's numbers), read from the environment once.

Each fast path can be turned off to compare against the plain one (benchmarks, exactness tests) or to
work around a platform problem: ``PIXSENT_CHANNELS_LAST=0``, ``PIXSENT_FAST_LRN=0``,
``PIXSENT_INPLACE_RELU=0``, ``PIXSENT_FAST_FC=0``,
``PIXSENT_KEEP_HEAP=0``, ``PIXSENT_FOLD_RELU_POOL=0``, ``PIXSENT_FOLD_BN=0``, ``PIXSENT_COLUMN_WGRAD=0``;
``PIXSENT_FAST=0`` turns every one off. All but fold_bn and column_wgrad give the plain path's numbers bit
for bit; those two differ by float32 rounding (another order of the same sums).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch


def _env_flag(name: str, default: bool) -> bool:
    """True/False from an environment variable ("0", "false", "no", "off" mean False)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off", "")


@dataclass
class FastPaths:
    """Which speed-ups are on.

    channels_last: convolutions (and so the ReLU/pooling/LRN after them) run on NHWC memory on the CPU,
    where oneDNN needs no layout reorders; values and shapes stay N x C x H x W.
    fast_lrn: LRN across channels as one autograd Function doing Caffe's forward and backward steps in its
    float order (engine/layers/lrn_across.py).
    inplace_relu: an in-place ReLU (top named like bottom) overwrites its bottom when that is safe.
    fast_fc: InnerProduct adds its weight gradient straight into the param diff (GEMM with beta 1),
    as Caffe does, instead of a new gradient tensor summed into it afterwards.
    keep_heap: freed tensors stay in the process heap (engine/heap.py), so big activations and gradients
    are not page-faulted in again every pass; read when the first Net is built.
    fold_relu_pool: an in-place ReLU read only by a MAX pooling leaves its gradient mask to the pooling's
    backward, applied at the pooled size (nets doing whole passes only: the solver, ``caffe time``).
    fold_bn: a Convolution with an in-place global-statistics BatchNorm and Scale after it runs as one
    convolution where none of the three needs a gradient (engine/bn_fold.py).
    column_wgrad: a learning convolution with a kernel larger than 1x1 builds its weight diff as Caffe
    does, input columns times the top diff in GEMMs of beta 1, a few images at a time
    (engine/layers/conv_wgrad.py), instead of oneDNN's backward-weights kernel.
    """

    channels_last: bool = True
    fast_lrn: bool = True
    inplace_relu: bool = True
    fast_fc: bool = True
    keep_heap: bool = True
    fold_relu_pool: bool = True
    fold_bn: bool = True
    column_wgrad: bool = True

    @classmethod
    def from_env(cls) -> FastPaths:
        """The switches as the environment sets them (all on by default)."""
        every = _env_flag("PIXSENT_FAST", True)
        return cls(
            channels_last=every and _env_flag("PIXSENT_CHANNELS_LAST", True),
            fast_lrn=every and _env_flag("PIXSENT_FAST_LRN", True),
            inplace_relu=every and _env_flag("PIXSENT_INPLACE_RELU", True),
            fast_fc=every and _env_flag("PIXSENT_FAST_FC", True),
            keep_heap=every and _env_flag("PIXSENT_KEEP_HEAP", True),
            fold_relu_pool=every and _env_flag("PIXSENT_FOLD_RELU_POOL", True),
            fold_bn=every and _env_flag("PIXSENT_FOLD_BN", True),
            column_wgrad=every and _env_flag("PIXSENT_COLUMN_WGRAD", True),
        )

    def use_channels_last(self, x: torch.Tensor) -> bool:
        """NHWC pays off for 4-D float tensors on the CPU (oneDNN); other devices keep their layout."""
        return self.channels_last and x.dim() == 4 and x.device.type == "cpu"


FAST = FastPaths.from_env()


@contextmanager
def fastpaths(**switches: bool) -> Iterator[FastPaths]:
    """Temporarily set some switches (e.g. ``fastpaths(channels_last=False)``), restored on exit."""
    names = {f.name for f in fields(FastPaths)}
    unknown = set(switches) - names
    if unknown:
        raise ValueError(f"unknown fast path switch(es): {', '.join(sorted(unknown))}")
    saved = {n: getattr(FAST, n) for n in names}
    try:
        for n, v in switches.items():
            setattr(FAST, n, bool(v))
        yield FAST
    finally:
        for n, v in saved.items():
            setattr(FAST, n, v)
