"""Caffe's solvers on PyTorch: a registry of solver types by Caffe's type name.

``make_solver(param)`` builds the solver for a SolverParameter; ``type`` names (SGD, Nesterov, AdaGrad,
RMSProp, AdaDelta, Adam) and the legacy ``solver_type`` enum are both accepted.
"""

from __future__ import annotations

from pixsent.engine.solvers.updates import UPDATES

# Legacy SolverParameter.solver_type enum values -> type names (caffe.proto SolverType).
LEGACY_TYPES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}
SOLVER_TYPES = tuple(UPDATES)


def solver_type_name(param) -> str:
    """The solver type of ``param``: ``type`` when set, else the legacy ``solver_type`` enum, else SGD."""
    if param.HasField("type") and param.type:
        return param.type
    if param.HasField("solver_type"):
        return LEGACY_TYPES.get(int(param.solver_type), "SGD")
    return param.type or "SGD"


def make_solver(param, **kwargs):
    """A Solver for ``param`` (a SolverParameter); keyword arguments go to ``Solver``."""
    from pixsent.engine.solvers.solver import Solver

    return Solver(param, **kwargs)


__all__ = ["LEGACY_TYPES", "SOLVER_TYPES", "make_solver", "solver_type_name"]
