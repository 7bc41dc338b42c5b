"""Caffe's learning-rate policies, one function each in a registry keyed by the `lr_policy` name.

Caffe evaluates each formula in double precision from the float fields of SolverParameter and stores the
result in a float (the solver's Dtype); ``learning_rate`` does the same so logged rates print identically.
Only `step` and `multistep` change ``current_step``, which Caffe saves in the solverstate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pixsent.errors import PixsentError


@dataclass
class LrState:
    """What a policy reads and may advance: the iteration and the step counter saved in solverstates."""

    iter: int
    current_step: int = 0


Policy = Callable[[object, LrState], float]
POLICIES: dict[str, Policy] = {}


def register_policy(name: str) -> Callable[[Policy], Policy]:
    """Register ``fn(param, state) -> rate`` as the policy called ``name`` in solver prototxts."""

    def deco(fn: Policy) -> Policy:
        POLICIES[name] = fn
        return fn

    return deco


def _f(x: float) -> float:
    """Round a parameter through float32 first, as Caffe's float proto fields are."""
    return float(np.float32(x))


@register_policy("fixed")
def _fixed(p, s: LrState) -> float:
    return _f(p.base_lr)


@register_policy("step")
def _step(p, s: LrState) -> float:
    if p.stepsize <= 0:
        raise PixsentError("solver: lr_policy step needs stepsize > 0")
    s.current_step = s.iter // p.stepsize
    return _f(p.base_lr) * _f(p.gamma) ** s.current_step


@register_policy("exp")
def _exp(p, s: LrState) -> float:
    return _f(p.base_lr) * _f(p.gamma) ** s.iter


@register_policy("inv")
def _inv(p, s: LrState) -> float:
    return _f(p.base_lr) * (1.0 + _f(p.gamma) * s.iter) ** (-_f(p.power))


@register_policy("multistep")
def _multistep(p, s: LrState) -> float:
    """Advance at most one step per call, as Caffe does, when ``iter`` reaches the next stepvalue."""
    values = list(p.stepvalue)
    if s.current_step < len(values) and s.iter >= values[s.current_step]:
        s.current_step += 1
        from pixsent.engine import glog

        glog.info(f"MultiStep Status: Iteration {s.iter}, step = {s.current_step}", src="sgd_solver.cpp:54")
    return _f(p.base_lr) * _f(p.gamma) ** s.current_step


@register_policy("poly")
def _poly(p, s: LrState) -> float:
    if p.max_iter <= 0:
        raise PixsentError("solver: lr_policy poly needs max_iter > 0")
    return _f(p.base_lr) * (1.0 - s.iter / p.max_iter) ** _f(p.power)


@register_policy("sigmoid")
def _sigmoid(p, s: LrState) -> float:
    return _f(p.base_lr) * (1.0 / (1.0 + math.exp(-_f(p.gamma) * (s.iter - p.stepsize))))


def learning_rate(param, state: LrState) -> float:
    """The rate for ``state.iter`` under ``param.lr_policy``, rounded to float32 like Caffe's Dtype."""
    policy = POLICIES.get(param.lr_policy)
    if policy is None:
        raise PixsentError(f"solver: unknown lr_policy {param.lr_policy!r} (known: {', '.join(POLICIES)})")
    return float(np.float32(policy(param, state)))
