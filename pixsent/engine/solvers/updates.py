"""Per-type update rules of Caffe's solvers: each turns a regularised gradient into the step subtracted.

Every class mirrors the arithmetic order of Caffe's ``ComputeUpdateValue`` for its type (float32 tensors,
in place on the gradient) so that weights agree to float32 rounding. ``history_sets`` is how many history
blobs per parameter the solverstate holds: Caffe stores set 0 for all parameters, then set 1 for all.

Each rule has two forms with the same operations in the same order: ``step`` on one tensor (the reference)
and ``step_many`` on lists of tensors with torch's multi-tensor ``_foreach_*`` ops, which the solver runs
slab by slab over cache-sized pieces of all parameters (``fused.py``). ``scratch_sets`` is how many
temporaries of a slab's size ``step_many`` needs (Caffe's ``update_`` blob and the like).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

Tensors = list[torch.Tensor]

_mul = torch._foreach_mul_
_add = torch._foreach_add_
_sub = torch._foreach_sub_
_div = torch._foreach_div_
_copy = torch._foreach_copy_
_sqrt = torch._foreach_sqrt_

UPDATES: dict[str, type[Update]] = {}


def register_update(name: str) -> Callable[[type[Update]], type[Update]]:
    """Register an update rule under Caffe's solver type name (``SGD``, ``Adam``, ...)."""

    def deco(cls: type[Update]) -> type[Update]:
        UPDATES[name] = cls
        return cls

    return deco


def _f(x: float) -> float:
    """A float proto field as Caffe's float Dtype sees it."""
    return float(np.float32(x))


def _square(out: Tensors, x: Tensors) -> Tensors:
    """out = x * x, in the given temporaries (the ``diff * diff`` of ``step``)."""
    _copy(out, x)
    _mul(out, x)
    return out


def _sqrt_plus(out: Tensors, x: Tensors, delta: float) -> Tensors:
    """out = sqrt(x) + delta, in the given temporaries."""
    _copy(out, x)
    _sqrt(out)
    _add(out, delta)
    return out


class Update:
    """Base rule: ``step(diff, hist, local_rate, iter)`` rewrites ``diff`` into the update, returns it;
    ``step_many(diffs, hists, scratch, local_rate, iter)`` does the same to lists (``hists[k]`` and
    ``scratch[k]`` hold set k of every tensor in ``diffs``)."""

    history_sets = 1
    scratch_sets = 0

    def __init__(self, param) -> None:
        self.momentum = _f(param.momentum)
        self.momentum2 = _f(param.momentum2)
        self.delta = _f(param.delta)
        self.rms_decay = _f(param.rms_decay)

    def step(
        self, diff: torch.Tensor, hist: list[torch.Tensor], local_rate: float, iter: int
    ) -> torch.Tensor:
        raise NotImplementedError

    def step_many(
        self, diffs: Tensors, hists: list[Tensors], scratch: list[Tensors], local_rate: float, iter: int
    ) -> None:
        raise NotImplementedError


@register_update("SGD")
class SGDUpdate(Update):
    """Momentum SGD: history = momentum * history + local_rate * grad; the step is the new history."""

    def step(self, diff, hist, local_rate, iter):
        h = hist[0]
        h.mul_(self.momentum).add_(diff, alpha=local_rate)
        diff.copy_(h)
        return diff

    def step_many(self, diffs, hists, scratch, local_rate, iter):
        h = hists[0]
        _mul(h, self.momentum)
        _add(h, diffs, alpha=local_rate)
        _copy(diffs, h)


@register_update("Nesterov")
class NesterovUpdate(Update):
    """Nesterov momentum (Caffe's form): step = (1 + m) * h_new - m * h_old, h_new as in SGD."""

    scratch_sets = 1

    def step(self, diff, hist, local_rate, iter):
        h = hist[0]
        old = h.clone()
        h.mul_(self.momentum).add_(diff, alpha=local_rate)
        diff.copy_(h * (1.0 + self.momentum) - old * self.momentum)
        return diff

    def step_many(self, diffs, hists, scratch, local_rate, iter):
        h, old = hists[0], scratch[0]
        _copy(old, h)
        _mul(h, self.momentum)
        _add(h, diffs, alpha=local_rate)
        _mul(old, self.momentum)
        _copy(diffs, h)
        _mul(diffs, 1.0 + self.momentum)
        _sub(diffs, old)


@register_update("AdaGrad")
class AdaGradUpdate(Update):
    """AdaGrad: history += grad^2; step = local_rate * grad / (sqrt(history) + delta)."""

    scratch_sets = 1

    def step(self, diff, hist, local_rate, iter):
        h = hist[0]
        h.add_(diff * diff)
        diff.div_(h.sqrt().add_(self.delta)).mul_(local_rate)
        return diff

    def step_many(self, diffs, hists, scratch, local_rate, iter):
        h, tmp = hists[0], scratch[0]
        _add(h, _square(tmp, diffs))
        _div(diffs, _sqrt_plus(tmp, h, self.delta))
        _mul(diffs, local_rate)


@register_update("RMSProp")
class RMSPropUpdate(Update):
    """RMSProp: h = rms_decay * h + (1 - rms_decay) * grad^2; step = lr * grad / (sqrt(h) + delta)."""

    scratch_sets = 1

    def step(self, diff, hist, local_rate, iter):
        h = hist[0]
        h.mul_(self.rms_decay).add_(diff * diff, alpha=_f(1.0 - self.rms_decay))
        diff.div_(h.sqrt().add_(self.delta)).mul_(local_rate)
        return diff

    def step_many(self, diffs, hists, scratch, local_rate, iter):
        h, tmp = hists[0], scratch[0]
        _square(tmp, diffs)
        _mul(h, self.rms_decay)
        _add(h, tmp, alpha=_f(1.0 - self.rms_decay))
        _div(diffs, _sqrt_plus(tmp, h, self.delta))
        _mul(diffs, local_rate)


@register_update("AdaDelta")
class AdaDeltaUpdate(Update):
    """AdaDelta with ``momentum`` as the decay: step = lr * grad * sqrt((U + delta) / (G + delta)).

    G (set 0) averages squared gradients before the step, U (set 1) averages squared steps after it,
    and, as in Caffe, U is updated with the step *before* the learning rate multiplies it.
    """

    history_sets = 2
    scratch_sets = 2

    def step(self, diff, hist, local_rate, iter):
        g, u = hist
        one_minus = _f(1.0 - self.momentum)
        g.mul_(self.momentum).add_(diff * diff, alpha=one_minus)
        ratio = (u + self.delta).div_(g + self.delta).pow_(0.5)
        diff.mul_(ratio)
        u.mul_(self.momentum).add_(diff * diff, alpha=one_minus)
        diff.mul_(local_rate)
        return diff

    def step_many(self, diffs, hists, scratch, local_rate, iter):
        (g, u), (ratio, tmp) = hists, scratch
        one_minus = _f(1.0 - self.momentum)
        _square(tmp, diffs)
        _mul(g, self.momentum)
        _add(g, tmp, alpha=one_minus)
        _copy(ratio, u)
        _add(ratio, self.delta)
        _copy(tmp, g)
        _add(tmp, self.delta)
        _div(ratio, tmp)
        torch._foreach_pow_(ratio, 0.5)
        _mul(diffs, ratio)
        _square(tmp, diffs)
        _mul(u, self.momentum)
        _add(u, tmp, alpha=one_minus)
        _mul(diffs, local_rate)


@register_update("Adam")
class AdamUpdate(Update):
    """Adam: moving averages m (set 0), v (set 1); step = lr * c * m / (sqrt(v) + delta).

    c = sqrt(1 - b2^t) / (1 - b1^t) is the bias correction.

    Caffe folds the bias correction into the rate with t = iter + 1 and adds delta after the square root.
    """

    history_sets = 2
    scratch_sets = 1

    def _rate(self, local_rate: float, iter: int) -> float:
        """local_rate times the bias correction of step t = iter + 1, in float as Caffe."""
        b1, b2 = self.momentum, self.momentum2
        t = iter + 1
        correction = _f(math.sqrt(_f(1.0 - b2**t)) / _f(1.0 - b1**t))
        return _f(local_rate * correction)

    def step(self, diff, hist, local_rate, iter):
        m, v = hist
        b1, b2 = self.momentum, self.momentum2
        m.mul_(b1).add_(diff, alpha=_f(1.0 - b1))
        v.mul_(b2).add_(diff * diff, alpha=_f(1.0 - b2))
        val = v.sqrt().add_(self.delta)
        torch.div(m, val, out=val)
        diff.copy_(val).mul_(self._rate(local_rate, iter))
        return diff

    def step_many(self, diffs, hists, scratch, local_rate, iter):
        (m, v), tmp = hists, scratch[0]
        b1, b2 = self.momentum, self.momentum2
        _mul(m, b1)
        _add(m, diffs, alpha=_f(1.0 - b1))
        _square(tmp, diffs)
        _mul(v, b2)
        _add(v, tmp, alpha=_f(1.0 - b2))
        _sqrt_plus(tmp, v, self.delta)
        _copy(diffs, m)
        _div(diffs, tmp)
        _mul(diffs, self._rate(local_rate, iter))


def make_update(solver_type: str, param) -> Update:
    """The update rule for a SolverParameter ``type`` (already upgraded from the legacy enum)."""
    from pixsent.errors import PixsentError

    cls = UPDATES.get(solver_type)
    if cls is None:
        raise PixsentError(f"solver: unknown solver type {solver_type!r} (known: {', '.join(UPDATES)})")
    return cls(param)
