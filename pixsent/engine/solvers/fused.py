"""The solver update's layout: every parameter cut into cache-sized slabs, built once and reused each step.

Why: each elementwise pass of an update over CaffeNet's 58 M parameters is a trip to main memory (~230 MB),
and Caffe's update is a dozen such passes (decay, history, copy, ``W -= diff``). Running all of one slab's
passes while its pieces of W, diff and history sit in cache leaves about one read and one write of each
tensor per step. Slabs hold 1-D views of parameters with equal lr_mult and decay_mult (one scalar per
multi-tensor ``_foreach_*`` call); small tensors share a slab, large ones are cut into several. Each
element sees the same operations in the same order as with whole tensors, so the numbers do not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from pixsent.engine.solvers.updates import Update

#: elements of each tensor in one slab: 2 MiB of float32, so a slab of W, diff, histories and temporaries (up
#: to 6 tensors, AdaDelta) stays in a 32 MiB L3 cache; 2^17..2^20 measured alike on CaffeNet, 2^16 slower
SLAB_ELEMENTS = 1 << 19


@dataclass
class Slab:
    """Matching views of some parameters (``data``), their diffs, each history set and each scratch set."""

    group: int
    data: list[torch.Tensor] = field(default_factory=list)
    diff: list[torch.Tensor] = field(default_factory=list)
    hist: list[list[torch.Tensor]] = field(default_factory=list)
    scratch: list[list[torch.Tensor]] = field(default_factory=list)
    size: int = 0


@dataclass
class UpdatePlan:
    """Slabs in parameter order within each (lr_mult, decay_mult) group; ``key`` says what they view."""

    key: tuple
    mults: list[tuple[float, float]]
    slabs: list[Slab]


def plan_key(
    params: Sequence[torch.Tensor],
    diffs: Sequence[torch.Tensor],
    history: Sequence[Sequence[torch.Tensor]],
    lr_mults: Sequence[float],
    decay_mults: Sequence[float],
    scratch_sets: int,
) -> tuple:
    """What a plan depends on: the storage and shape of every tensor, the multipliers, the scratch count.

    A plan keeps its views (and so their storage) alive, so an equal data pointer is the same storage."""
    tensors = [*params, *diffs, *(h for hs in history for h in hs)]
    return (
        tuple((t.data_ptr(), t.shape) for t in tensors),
        tuple(lr_mults),
        tuple(decay_mults),
        scratch_sets,
    )


def _flat(ts: Sequence[torch.Tensor]) -> list[torch.Tensor] | None:
    """1-D views of tensors that share one element order (all contiguous), else None."""
    if all(t.is_contiguous() for t in ts):
        return [t.view(-1) for t in ts]
    return None


def build_plan(
    params: Sequence[torch.Tensor],
    diffs: Sequence[torch.Tensor],
    history: Sequence[Sequence[torch.Tensor]],
    lr_mults: Sequence[float],
    decay_mults: Sequence[float],
    scratch_sets: int,
    slab_elements: int = SLAB_ELEMENTS,
) -> UpdatePlan:
    """Cut parameters (with their diffs and ``history[k][i]``) into slabs of at most ``slab_elements``.

    A parameter whose W, diff and history are not all contiguous stays whole in a slab of its own, with
    scratch tensors of its own layout."""
    key = plan_key(params, diffs, history, lr_mults, decay_mults, scratch_sets)
    mults: list[tuple[float, float]] = []
    slabs: list[Slab] = []
    open_slabs: dict[tuple, Slab] = {}  # (group, device, dtype) -> the slab small pieces still join
    buffers: dict[tuple, list[torch.Tensor]] = {}  # (device, dtype) -> one buffer per scratch set, shared
    with torch.no_grad():
        for i, (p, d) in enumerate(zip(params, diffs)):
            m = (float(lr_mults[i]), float(decay_mults[i]))
            if m not in mults:
                mults.append(m)
            g = mults.index(m)
            w = p.detach()
            hs = [h[i] for h in history]
            flat = _flat([w, d, *hs])
            if flat is None:
                scratch = [[torch.empty_like(w)] for _ in range(scratch_sets)]
                slabs.append(Slab(g, [w], [d], [[h] for h in hs], scratch, w.numel()))
                continue
            fw, fd, *fh = flat
            n = fw.numel()
            where = (g, w.device, w.dtype)
            for start in range(0, n, slab_elements):
                stop = min(n, start + slab_elements)
                slab = open_slabs.get(where)
                if slab is None or slab.size + stop - start > slab_elements:
                    slab = Slab(g, hist=[[] for _ in hs], scratch=[[] for _ in range(scratch_sets)])
                    open_slabs[where] = slab
                    slabs.append(slab)
                slab.data.append(fw[start:stop])
                slab.diff.append(fd[start:stop])
                for s, h in enumerate(fh):
                    slab.hist[s].append(h[start:stop])
                if where[1:] not in buffers:
                    buffers[where[1:]] = [
                        torch.empty(slab_elements, dtype=w.dtype, device=w.device)
                        for _ in range(scratch_sets)
                    ]
                for views, buf in zip(slab.scratch, buffers[where[1:]]):
                    views.append(buf[slab.size : slab.size + stop - start])
                slab.size += stop - start
    return UpdatePlan(key, mults, slabs)


def run_update(
    plan: UpdatePlan,
    rule: Update,
    rates: Sequence[float],
    decays: Sequence[float],
    regularization: str,
    normalize: float | None,
    iter: int,
) -> None:
    """Caffe's per-parameter update, slab by slab: diff *= normalize (iter_size > 1), diff += decay * W
    (L2) or decay * sign(W) (L1), the rule's update value into diff, W -= diff. ``rates`` and ``decays``
    are per group of ``plan.mults``: rate times lr_mult and weight_decay times decay_mult, in float."""
    with torch.no_grad():
        for slab in plan.slabs:
            if normalize is not None:
                torch._foreach_mul_(slab.diff, normalize)
            decay = decays[slab.group]
            if decay and regularization == "L2":
                torch._foreach_add_(slab.diff, slab.data, alpha=decay)
            elif decay:
                sign = slab.scratch[0]
                torch._foreach_copy_(sign, slab.data)
                torch._foreach_sign_(sign)
                torch._foreach_add_(slab.diff, sign, alpha=decay)
            rule.step_many(slab.diff, slab.hist, slab.scratch, rates[slab.group], iter)
            torch._foreach_sub_(slab.data, slab.diff)
