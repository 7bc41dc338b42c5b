"""Snapshots as Caffe writes them: ``<prefix>_iter_<N>.caffemodel`` then ``<prefix>_iter_<N>.solverstate``
(with pixsent's resume sidecar ``.solverstate.pixsent`` written just before it, see resume_state.py).

The solverstate records ``iter``, ``learned_net`` (the caffemodel name exactly as formed from the prefix,
so a relative prefix gives a path relative to the working directory), ``current_step`` and the history
blobs in learnable-parameter order (all of set 0, then all of set 1 for AdaDelta and Adam). Restoring
reads the weights back from ``learned_net`` resolved against the working directory, as Caffe does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixsent.engine import glog
from pixsent.errors import FormatError


def snapshot_filename(prefix: str, iteration: int, extension: str) -> str:
    """Caffe's snapshot name: prefix + ``_iter_`` + N + extension (no path normalisation)."""
    return f"{prefix}_iter_{iteration}{extension}"


def write_model(net, prefix: str, iteration: int, write_diff: bool = False) -> str:
    """Save the train net's weights as ``<prefix>_iter_N.caffemodel`` (atomic), log it, return the name."""
    from pixsent.formats.caffemodel import write_caffemodel

    name = snapshot_filename(prefix, iteration, ".caffemodel")
    glog.info(f"Snapshotting to binary proto file {name}", "solver.cpp:464")
    write_caffemodel(net.to_proto(write_diff=write_diff), name)
    return name


def write_state(
    model_name: str,
    prefix: str,
    iteration: int,
    current_step: int,
    history: list[np.ndarray],
    resume: dict | None = None,
) -> str:
    """Save ``<prefix>_iter_N.solverstate`` pointing at ``model_name`` (atomic) and log it.

    With ``resume`` (a state tree), its sidecar ``<name>.pixsent`` is written first, tied to the
    solverstate by the sha256 of its bytes: a solverstate on disk always has its sidecar complete.
    """
    from pixsent.formats.atomic import atomic_write_bytes
    from pixsent.formats.solverstate import make_solverstate

    name = snapshot_filename(prefix, iteration, ".solverstate")
    glog.info(f"Snapshotting solver state to binary proto file {name}", "sgd_solver.cpp:284")
    data = make_solverstate(iteration, model_name, history, current_step).SerializeToString()
    if resume is not None:
        from pixsent.engine.solvers import resume_state

        side = resume_state.sidecar_path(name)
        resume_state.write_sidecar(side, {**resume, "solverstate_sha256": resume_state.digest(data)})
    atomic_write_bytes(name, data)
    return name


@dataclass
class RestoredState:
    """What a solverstate gives back: iteration, weights file (resolved), step counter, history arrays."""

    iter: int
    learned_net: Path | None
    current_step: int
    history: list[np.ndarray]


def read_state(path: str | os.PathLike[str]) -> RestoredState:
    """Read a solverstate; ``learned_net`` is resolved against the working directory as in Caffe.

    If it is not there but exists next to the solverstate, that file is used with a warning (a
    convenience for snapshots moved to another folder; Caffe would fail).
    """
    from pixsent.formats.solverstate import history_arrays, read_solverstate

    state = read_solverstate(path)
    learned: Path | None = None
    if state.HasField("learned_net") and state.learned_net:
        learned = Path(state.learned_net)
        if not learned.exists():
            beside = Path(path).parent / Path(state.learned_net).name
            if beside.exists():
                glog.warning(
                    f"{state.learned_net} not found in the working directory; using {beside}", "solver.cpp:0"
                )
                learned = beside
            else:
                raise FormatError(
                    f"{path}: learned_net {state.learned_net!r} not found (relative to {os.getcwd()})"
                )
    return RestoredState(int(state.iter), learned, int(state.current_step), history_arrays(state))
