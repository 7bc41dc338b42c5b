"""Item sources of the prefetching data layers, with a position that can be saved and restored exactly.

``LMDBSource`` walks an LMDB in key order and wraps around (Caffe's DataLayer cursor; master's DataLayer
has no ``rand_skip``). ``ImageListSource`` walks the lines of an image list as Caffe's ImageDataLayer:
``shuffle`` permutes the lines once at set-up and again, in place, each time the last line has been read
(Caffe's own shuffle, from a generator of its own); ``rand_skip`` starts the first pass at a random line.
``state()`` is the position after the last item handed out: restoring it continues with the same items.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from pixsent.engine.rng import CaffeRng
from pixsent.errors import DataError, FormatError

_LMDB_LOCK = threading.Lock()


class LMDBSource:
    """Endless (key, value) pairs of an LMDB in key order, wrapping around.

    It reads ``chunk`` entries at a time and closes the environment in between, because an LMDB
    environment may be open only once per process: a net kept alive must not stop other code (or a
    second net) from opening the same database.
    """

    def __init__(self, path: str, chunk: int, owner: str = "") -> None:
        self.path = Path(path)
        self.chunk = max(16, chunk)
        self.last_key: bytes | None = None
        self._buffer: list[tuple[bytes, bytes]] = []
        self._index = 0
        where = f"{owner}: data_param.source {str(path)!r}" if owner else str(path)
        if not self.path.exists():
            raise DataError(f"{where}: LMDB not found (cwd {Path.cwd()})")
        if not self._read(None):
            raise DataError(f"{where}: LMDB is empty")

    def _read(self, after: bytes | None) -> list[tuple[bytes, bytes]]:
        import lmdb

        with _LMDB_LOCK:
            try:
                env = lmdb.open(
                    str(self.path), readonly=True, lock=False, subdir=self.path.is_dir(), readahead=False
                )
            except lmdb.Error as exc:
                raise FormatError(f"{self.path}: not an LMDB ({exc})") from None
            try:
                with env.begin(buffers=False) as txn:
                    cur = txn.cursor()
                    ok = cur.first() if after is None else cur.set_range(after)
                    if ok and after is not None and cur.key() == after:
                        ok = cur.next()
                    out: list[tuple[bytes, bytes]] = []
                    while ok and len(out) < self.chunk:
                        out.append((cur.key(), cur.value()))
                        ok = cur.next()
            finally:
                env.close()
        return out

    def next(self) -> tuple[bytes, bytes]:
        """The next (key, value), the first again after the last."""
        if self._index >= len(self._buffer):
            self._buffer, self._index = self._read(self.last_key), 0
            if not self._buffer:
                self._buffer = self._read(None)
                if not self._buffer:
                    raise DataError(f"{self.path}: LMDB is empty")
        key, value = self._buffer[self._index]
        self._index += 1
        self.last_key = key
        return key, value

    def state(self) -> dict:
        """The position: the last key handed out (None before the first)."""
        return {"last_key": self.last_key}

    def mismatch(self, state: dict) -> str:
        """Why ``state`` cannot be restored ("" when it can: a key since removed just continues after it)."""
        return "" if state.get("last_key") is None or isinstance(state["last_key"], bytes) else "bad key"

    def restore(self, state: dict) -> None:
        """Continue after ``state["last_key"]`` (from the first key when None)."""
        self.last_key = state["last_key"]
        self._buffer, self._index = [], 0


class ImageListSource:
    """The (path, label) lines of an image list in Caffe's ImageData order."""

    def __init__(
        self,
        lines: list[tuple[str, float]],
        shuffle_rng: CaffeRng | None,
        skip: int = 0,
    ) -> None:
        self.lines = lines
        self.shuffle_rng = shuffle_rng
        self.order = np.arange(len(lines), dtype=np.int64)
        if shuffle_rng is not None:
            self.order = self.order[shuffle_rng.shuffle(len(lines))]
        if skip >= len(lines):
            raise DataError(f"rand_skip drew {skip}: not enough lines ({len(lines)}) to skip")
        self.pos = skip

    def next(self) -> tuple[str, float]:
        """The next line; after the last, the lines are reshuffled (when shuffling) and start over."""
        line = self.lines[int(self.order[self.pos])]
        self.pos += 1
        if self.pos >= len(self.lines):
            self.pos = 0
            if self.shuffle_rng is not None:
                # a new array each time: states handed out earlier keep referring to the old order
                self.order = self.order[self.shuffle_rng.shuffle(len(self.lines))]
        return line

    def state(self) -> dict:
        """The position: line order, index in it, and the shuffling generator's state."""
        rng = self.shuffle_rng.get_state() if self.shuffle_rng is not None else None
        return {"order": self.order, "pos": self.pos, "shuffle_rng": rng}

    def mismatch(self, state: dict) -> str:
        """Why ``state`` cannot be restored here ("" when it can)."""
        order = np.asarray(state["order"])
        if order.shape != (len(self.lines),) or not 0 <= int(state["pos"]) < len(self.lines):
            return f"the saved position is for a list of {order.size} lines, this one has {len(self.lines)}"
        if (state["shuffle_rng"] is None) != (self.shuffle_rng is None):
            return "saved state and layer disagree on shuffle"
        return ""

    def restore(self, state: dict) -> None:
        """Continue from a ``state()``."""
        reason = self.mismatch(state)
        if reason:
            raise DataError(reason)
        self.order, self.pos = np.asarray(state["order"], dtype=np.int64), int(state["pos"])
        if self.shuffle_rng is not None:
            self.shuffle_rng.set_state(state["shuffle_rng"])
