"""Solver snapshots (.solverstate): binary SolverState with iter, learned_net, current_step, history."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import FormatError
from pixsent.formats.atomic import atomic_write_bytes
from pixsent.formats.blob import array_to_blob, blob_to_array


def parse_solverstate(data: bytes, source: str = "<bytes>") -> caffe_pb2.SolverState:
    """A SolverState from bytes; fields foreign to SolverState (e.g. a caffemodel) are a FormatError."""
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise FormatError(f"{source}: truncated or not a solverstate ({exc})") from None
    unknown = UnknownFieldSet(state)
    if len(unknown) or not (state.HasField("iter") or state.HasField("learned_net") or len(state.history)):
        raise FormatError(f"{source}: not a solverstate (no iter/learned_net/history fields)")
    return state


def read_solverstate(path: str | os.PathLike[str]) -> caffe_pb2.SolverState:
    """Read a .solverstate (binary; Caffe's HDF5 snapshots are not supported)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise FormatError(f"{path}: file not found") from None
    if data.startswith(b"\x89HDF"):
        raise FormatError(
            f"{path}: HDF5 solverstates are not supported; snapshot with snapshot_format BINARYPROTO"
        )
    return parse_solverstate(data, str(path))


def write_solverstate(state: caffe_pb2.SolverState, path: str | os.PathLike[str]) -> Path:
    """Write a SolverState, atomically."""
    return atomic_write_bytes(path, state.SerializeToString())


def history_arrays(state: caffe_pb2.SolverState) -> list[np.ndarray]:
    """The history blobs as float32 arrays (one per learnable parameter; two for AdaDelta/Adam)."""
    return [blob_to_array(b, source=f"solverstate history {i}") for i, b in enumerate(state.history)]


def make_solverstate(
    iteration: int, learned_net: str, history: list[np.ndarray], current_step: int = 0
) -> caffe_pb2.SolverState:
    """A SolverState as Caffe's binary solver snapshot fills it (history blobs in ``shape`` form)."""
    state = caffe_pb2.SolverState(
        iter=int(iteration), learned_net=str(learned_net), current_step=int(current_step)
    )
    for array in history:
        state.history.add().CopyFrom(array_to_blob(array))
    return state
