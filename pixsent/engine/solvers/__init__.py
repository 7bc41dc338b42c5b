"""Caffe's solvers on PyTorch: a registry of solver types by Caffe's type name.

``make_solver(param)`` builds the solver for a SolverParameter; ``type`` names (SGD, Nesterov, AdaGrad,
RMSProp, AdaDelta, Adam) and the legacy ``solver_type`` enum are both accepted.
"""

from __future__ import annotations

from pixsent.engine.solvers.types import LEGACY_TYPES, solver_type_name
from pixsent.engine.solvers.updates import UPDATES

SOLVER_TYPES = tuple(UPDATES)


def make_solver(param, **kwargs):
    """A Solver for ``param`` (a SolverParameter); keyword arguments go to ``Solver``."""
    from pixsent.engine.solvers.solver import Solver

    return Solver(param, **kwargs)


__all__ = ["LEGACY_TYPES", "SOLVER_TYPES", "make_solver", "solver_type_name"]
