"""The resume sidecar: what a ``.solverstate`` cannot hold, so a resumed run equals the uninterrupted one.

``<prefix>_iter_N.solverstate.pixsent`` is written (atomically) just before its solverstate and holds the
sha256 of that solverstate's bytes, the state of the training thread's Caffe generator (Dropout; its
draws at net set-up are replayed by building the nets), the smoothed-loss window, and per net and data
layer the position where the next forward continues (source cursor, transformer and shuffling
generators). Real Caffe never looks at it. The file is an ``.npz`` (no pickles): arrays as members, the
rest as a JSON member ``meta`` in which arrays are ``{"__array__": name}`` and bytes ``{"__bytes__": hex}``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from pixsent.errors import FormatError

FORMAT = "pixsent-resume/1"
SUFFIX = ".pixsent"


def sidecar_path(solverstate: str | os.PathLike[str]) -> Path:
    """The sidecar beside a solverstate: its name plus ``.pixsent``."""
    return Path(f"{os.fspath(solverstate)}{SUFFIX}")


def digest(data: bytes) -> str:
    """sha256 hex of a solverstate's bytes (ties a sidecar to its solverstate)."""
    return hashlib.sha256(data).hexdigest()


def _pack(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = value
        return {"__array__": name}
    if isinstance(value, bytes):
        return {"__bytes__": value.hex()}
    if isinstance(value, dict):
        return {str(k): _pack(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_pack(v, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unpack(value: Any, arrays: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return np.asarray(arrays[value["__array__"]])
        if set(value) == {"__bytes__"}:
            return bytes.fromhex(value["__bytes__"])
        return {k: _unpack(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v, arrays) for v in value]
    return value


def to_bytes(tree: dict) -> bytes:
    """The sidecar file's bytes for a state tree (dicts, lists, numbers, strings, bytes, arrays)."""
    arrays: dict[str, np.ndarray] = {}
    meta = _pack({"format": FORMAT, **tree}, arrays)
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


def write_sidecar(path: str | os.PathLike[str], tree: dict) -> Path:
    """Write a state tree to ``path`` atomically."""
    from pixsent.formats.atomic import atomic_write_bytes

    return atomic_write_bytes(path, to_bytes(tree))


def read_sidecar(path: str | os.PathLike[str]) -> dict:
    """Read a sidecar back into its state tree; FormatError naming the file when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: not a pixsent resume state ({exc})") from None
    if meta.get("format") != FORMAT:
        raise FormatError(f"{path}: unknown resume state format {meta.get('format')!r} (expected {FORMAT})")
    return _unpack(meta, arrays)
