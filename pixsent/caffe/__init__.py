"""pycaffe-compatible facade: ``import pixsent.caffe as caffe`` lets old pycaffe scripts run unchanged.

Everything heavy (torch, the engine, net_spec) is loaded lazily through a PEP 562 ``__getattr__``:
the formats layer imports ``pixsent.caffe.proto.caffe_pb2``, which executes this file, and must stay
free of torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from pixsent.caffe.proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

#: the Caffe version pycaffe reports (BVLC 1.0; ``caffe --version`` prints "caffe version 1.0.0")
__version__ = "1.0.0"

# attribute -> module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    **{
        name: "pixsent.caffe.pycaffe"
        for name in (
            "Net",
            "Blob",
            "SGDSolver",
            "NesterovSolver",
            "AdaGradSolver",
            "RMSPropSolver",
            "AdaDeltaSolver",
            "AdamSolver",
            "get_solver",
            "set_mode_cpu",
            "set_mode_gpu",
            "set_device",
            "set_random_seed",
            "layer_type_list",
            "init_log",
            "log",
            "has_nccl",
            "solver_count",
            "set_solver_count",
            "solver_rank",
            "set_solver_rank",
            "set_multiprocess",
            "Timer",
        )
    },
    "Layer": "pixsent.caffe.layer",
    "Classifier": "pixsent.caffe.classifier",
    "Detector": "pixsent.caffe.detector",
    **{
        name: "pixsent.caffe.net_spec"
        for name in ("NetSpec", "layers", "params", "to_proto", "Top", "Function")
    },
}
_SUBMODULES = ("io", "pycaffe", "classifier", "detector", "net_spec", "proto", "draw", "coord_map", "layer")

__all__ = ["TRAIN", "TEST", "__version__", *_LAZY, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    """Import the module that provides ``name`` on first use and cache the attribute here."""
    if name in _SUBMODULES:
        value: Any = importlib.import_module(f"{__name__}.{name}")
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
