"""LMDB databases as Caffe writes and reads them: keys in byte order, values serialized Datums.

Reading opens read-only with ``lock=False`` (Caffe's LMDBs ship with a stale lock.mdb and are often on
read-only media). Writing builds into a hidden sibling folder and renames it onto the final name only
on a clean close, so a failed ``convert_imageset`` never leaves a half-built database behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import lmdb

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import DataError, FormatError
from pixsent.formats.atomic import replace_path, sibling_path
from pixsent.formats.datum import parse_datum
from pixsent.formats.locks import acquire
from pixsent.formats.space import disk_full_error, free_bytes, is_disk_full
from pixsent.formats.stale import remove_stale_temporaries


class LMDBReader:
    """Read-only view of an LMDB folder (data.mdb + lock.mdb): len, keys, ordered iteration, endless cycle."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: LMDB not found")
        subdir = self.path.is_dir()
        if subdir and not (self.path / "data.mdb").is_file():
            raise FormatError(f"{self.path}: not an LMDB (no data.mdb in the folder)")
        try:
            self._env = lmdb.open(
                str(self.path), readonly=True, lock=False, subdir=subdir, readahead=False, max_readers=1
            )
        except lmdb.Error as exc:
            raise FormatError(f"{self.path}: not an LMDB ({exc})") from None
        self._keys: list[bytes] | None = None

    def __len__(self) -> int:
        return int(self._env.stat()["entries"])

    def keys(self) -> list[bytes]:
        """All keys in LMDB (byte) order; cached after the first call."""
        if self._keys is None:
            with self._env.begin(buffers=False) as txn:
                self._keys = list(txn.cursor().iternext(keys=True, values=False))
        return list(self._keys)

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in key order."""
        with self._env.begin(buffers=False) as txn:
            yield from txn.cursor().iternext(keys=True, values=True)

    def get(self, key: bytes) -> bytes | None:
        """The value stored under ``key`` (None when absent)."""
        with self._env.begin(buffers=False) as txn:
            return txn.get(key)

    def datums(self) -> Iterator[tuple[bytes, caffe_pb2.Datum]]:
        """(key, Datum) pairs in key order."""
        for key, value in self:
            yield key, parse_datum(value, f"{self.path}: key {key.decode(errors='replace')}")

    def cycle(self) -> Iterator[tuple[bytes, bytes]]:
        """Endless (key, value) pairs, wrapping to the first key after the last (Caffe's Data layer)."""
        if len(self) == 0:
            raise DataError(f"{self.path}: LMDB is empty")
        while True:
            yield from self

    def close(self) -> None:
        """Close the environment (idempotent)."""
        self._env.close()

    def __enter__(self) -> LMDBReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LMDBWriter:
    """Builds an LMDB in a hidden sibling folder; ``close()`` moves it onto ``path``, ``discard()`` drops it.

    Puts are committed every ``commit_every`` entries (as convert_imageset commits every 1000); when the
    map is full the map size doubles and the pending batch is replayed, as Caffe's LMDB wrapper grows it.
    A failed commit (LMDB reports a full disk as an I/O error) drops the temporary database and raises a
    one-line error naming ``path``: DiskFullError with the space needed (``expected_bytes`` when given)
    when the filesystem has no room left. Only one writer at a time may build ``path`` (a lock beside it).
    """

    INITIAL_MAP_SIZE = 64 << 20

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        commit_every: int = 1000,
        map_size: int = INITIAL_MAP_SIZE,
        expected_bytes: int = 0,
    ) -> None:
        self.path = Path(path)
        self._env: lmdb.Environment | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = acquire(self.path, "writing this LMDB")
        if self.path.exists() and not overwrite:
            self._lock.release()
            raise DataError(f"{self.path}: already exists (pass overwrite=True to replace it)")
        remove_stale_temporaries(self.path.parent)
        self.commit_every = max(1, int(commit_every))
        self.expected_bytes = int(expected_bytes)
        self._written_bytes = 0
        self._pending: list[tuple[bytes, bytes]] = []  # written since the last commit, kept to replay
        self._txn: lmdb.Transaction | None = None
        self.count = 0
        self._tmp = sibling_path(self.path, "tmp")
        try:
            # no sync per commit: the database is synced once in close() before it takes its final name
            self._env = lmdb.open(str(self._tmp), map_size=int(map_size), subdir=True, sync=False)
        except lmdb.Error as exc:
            self._failed(exc, 0)

    def put(self, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key``: written into the open transaction at once (so the copying is spread
        over the build), committed every ``commit_every`` entries."""
        if self._env is None:
            raise DataError(f"{self.path}: writer already closed")
        item = (bytes(key), bytes(value))
        self._pending.append(item)
        self.count += 1
        try:
            self._txn_put(*item)
        except lmdb.MapFullError:
            self._grow()
            self._replay()
        if len(self._pending) >= self.commit_every:
            self.flush()

    def _txn_put(self, key: bytes, value: bytes) -> None:
        """One put into the open write transaction (begun when none is open); MapFullError passes through."""
        try:
            if self._txn is None:
                self._txn = self._env.begin(write=True)
            self._txn.put(key, value)
        except lmdb.MapFullError:
            raise
        except lmdb.Error as exc:
            self._failed(exc, len(key) + len(value))

    def _grow(self) -> None:
        """Drop the open transaction and double the map size (Caffe's wrapper grows the map the same way)."""
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        self._env.set_mapsize(self._env.info()["map_size"] * 2)

    def _replay(self) -> None:
        """Write the uncommitted batch into a fresh transaction, growing the map until it fits."""
        while True:
            try:
                for key, value in self._pending:
                    self._txn_put(key, value)
                return
            except lmdb.MapFullError:
                self._grow()

    def flush(self) -> None:
        """Commit the open transaction (the pending batch)."""
        if self._env is None or not self._pending:
            return
        batch = sum(len(k) + len(v) for k, v in self._pending)
        while True:
            if self._txn is None:
                self._replay()
            txn, self._txn = self._txn, None
            try:
                txn.commit()
                break
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as exc:
                self._failed(exc, batch)
        self._written_bytes += batch
        self._pending.clear()

    def _failed(self, exc: BaseException, batch: int) -> None:
        """Drop the temporary database and raise the one-line error of a failed write (disk full or not)."""
        full = is_disk_full(exc) or (free_bytes(self._tmp) or 0) < max(batch, 1 << 20)
        self.discard()
        if full:
            needed = max(self.expected_bytes, self._written_bytes + batch)
            raise disk_full_error(self.path, needed, at_least=not self.expected_bytes) from None
        raise DataError(f"{self.path}: writing the database failed ({exc})") from None

    def close(self) -> Path:
        """Commit, close and move the finished database onto ``path``."""
        if self._env is None:
            return self.path
        self.flush()
        try:
            self._env.sync(True)
        except (lmdb.Error, OSError) as exc:
            self._failed(exc, 0)
        self._env.close()
        self._env = None
        try:
            replace_path(self._tmp, self.path)
        finally:
            self._lock.release()
        return self.path

    def discard(self) -> None:
        """Drop everything written; nothing appears at ``path``."""
        if getattr(self, "_txn", None) is not None:
            self._txn.abort()
            self._txn = None
        if self._env is not None:
            self._env.close()
            self._env = None
        self._pending.clear()
        if hasattr(self, "_tmp"):
            shutil.rmtree(self._tmp, ignore_errors=True)
        if hasattr(self, "_lock"):
            self._lock.release()

    def __enter__(self) -> LMDBWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def __del__(self) -> None:
        if getattr(self, "_env", None) is not None:
            self.discard()
