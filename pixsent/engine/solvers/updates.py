"""Per-type update rules of Caffe's solvers: each turns a regularised gradient into the step subtracted.

Every class mirrors the arithmetic order of Caffe's ``ComputeUpdateValue`` for its type (float32 tensors,
in place on the gradient) so that weights agree to float32 rounding. ``history_sets`` is how many history
blobs per parameter the solverstate holds: Caffe stores set 0 for all parameters, then set 1 for all.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

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


class Update:
    """Base rule: ``step(diff, hist, local_rate, iter)`` rewrites ``diff`` into the update, returns it."""

    history_sets = 1

    def __init__(self, param) -> None:
        self.momentum = _f(param.momentum)
        self.momentum2 = _f(param.momentum2)
        self.delta = _f(param.delta)
        self.rms_decay = _f(param.rms_decay)

    def step(
        self, diff: torch.Tensor, hist: list[torch.Tensor], local_rate: float, iter: int
    ) -> torch.Tensor:
        raise NotImplementedError


@register_update("SGD")
class SGDUpdate(Update):
    """Momentum SGD: history = momentum * history + local_rate * grad; the step is the new history."""

    def step(self, diff, hist, local_rate, iter):
        h = hist[0]
        h.mul_(self.momentum).add_(diff, alpha=local_rate)
        diff.copy_(h)
        return diff


@register_update("Nesterov")
class NesterovUpdate(Update):
    """Nesterov momentum (Caffe's form): step = (1 + m) * h_new - m * h_old, h_new as in SGD."""

    def step(self, diff, hist, local_rate, iter):
        h = hist[0]
        old = h.clone()
        h.mul_(self.momentum).add_(diff, alpha=local_rate)
        diff.copy_(h * (1.0 + self.momentum) - old * self.momentum)
        return diff


@register_update("AdaGrad")
class AdaGradUpdate(Update):
    """AdaGrad: history += grad^2; step = local_rate * grad / (sqrt(history) + delta)."""

    def step(self, diff, hist, local_rate, iter):
        h = hist[0]
        h.add_(diff * diff)
        diff.div_(h.sqrt().add_(self.delta)).mul_(local_rate)
        return diff


@register_update("RMSProp")
class RMSPropUpdate(Update):
    """RMSProp: h = rms_decay * h + (1 - rms_decay) * grad^2; step = lr * grad / (sqrt(h) + delta)."""

    def step(self, diff, hist, local_rate, iter):
        h = hist[0]
        h.mul_(self.rms_decay).add_(diff * diff, alpha=_f(1.0 - self.rms_decay))
        diff.div_(h.sqrt().add_(self.delta)).mul_(local_rate)
        return diff


@register_update("AdaDelta")
class AdaDeltaUpdate(Update):
    """AdaDelta with ``momentum`` as the decay: step = lr * grad * sqrt((U + delta) / (G + delta)).

    G (set 0) averages squared gradients before the step, U (set 1) averages squared steps after it,
    and, as in Caffe, U is updated with the step *before* the learning rate multiplies it.
    """

    history_sets = 2

    def step(self, diff, hist, local_rate, iter):
        g, u = hist
        one_minus = _f(1.0 - self.momentum)
        g.mul_(self.momentum).add_(diff * diff, alpha=one_minus)
        ratio = (u + self.delta).div_(g + self.delta).pow_(0.5)
        diff.mul_(ratio)
        u.mul_(self.momentum).add_(diff * diff, alpha=one_minus)
        diff.mul_(local_rate)
        return diff


@register_update("Adam")
class AdamUpdate(Update):
    """Adam: moving averages m (set 0), v (set 1); step = lr * c * m / (sqrt(v) + delta).

    c = sqrt(1 - b2^t) / (1 - b1^t) is the bias correction.

    Caffe folds the bias correction into the rate with t = iter + 1 and adds delta after the square root.
    """

    history_sets = 2

    def step(self, diff, hist, local_rate, iter):
        m, v = hist
        b1, b2 = self.momentum, self.momentum2
        t = iter + 1
        correction = _f(math.sqrt(_f(1.0 - b2**t)) / _f(1.0 - b1**t))
        m.mul_(b1).add_(diff, alpha=_f(1.0 - b1))
        v.mul_(b2).add_(diff * diff, alpha=_f(1.0 - b2))
        val = v.sqrt().add_(self.delta)
        torch.div(m, val, out=val)
        diff.copy_(val).mul_(_f(local_rate * correction))
        return diff


def make_update(solver_type: str, param) -> Update:
    """The update rule for a SolverParameter ``type`` (already upgraded from the legacy enum)."""
    from pixsent.errors import PixsentError

    cls = UPDATES.get(solver_type)
    if cls is None:
        raise PixsentError(f"solver: unknown solver type {solver_type!r} (known: {', '.join(UPDATES)})")
    return cls(param)
