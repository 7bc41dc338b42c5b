"""Which solver a SolverParameter asks for: ``type``, or the legacy ``solver_type`` enum."""

from __future__ import annotations

# Legacy SolverParameter.solver_type enum values -> type names (caffe.proto SolverType).
LEGACY_TYPES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}


def solver_type_name(param) -> str:
    """The solver type of ``param``: ``type`` when set, else the legacy ``solver_type`` enum, else SGD."""
    if param.HasField("type") and param.type:
        return param.type
    if param.HasField("solver_type"):
        return LEGACY_TYPES.get(int(param.solver_type), "SGD")
    return param.type or "SGD"
