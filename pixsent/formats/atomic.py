"""Atomic output: write to a temporary sibling, rename onto the final name only when complete.

An interrupted or failed write therefore never leaves a partial file (or LMDB folder) under the
final name, which is what lets every long pixsent step be re-run or resumed safely.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from pixsent.errors import PixsentError
from pixsent.formats.space import disk_full_error, is_disk_full


def sibling_path(path: Path, tag: str) -> Path:
    """A hidden, unique name in the same folder (same filesystem, so rename is atomic)."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove(path: Path) -> None:
    """Delete a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def replace_path(tmp: Path, path: Path) -> None:
    """Move ``tmp`` onto ``path``; an existing folder at ``path`` is moved aside first, then deleted."""
    if tmp.is_dir() and path.is_dir() and not path.is_symlink():
        old = sibling_path(path, "old")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], size: int | None = None) -> Iterator[Path]:
    """Yield a not-yet-existing temporary Path next to ``path``; create a file or folder there.

    On normal exit it is renamed onto ``path`` (replacing what was there); on an exception it is removed,
    and a full disk becomes a DiskFullError naming ``path`` and ``size`` (the bytes it needs, when known).
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise PixsentError(f"{final}: cannot write here, {_blocking_file(final.parent)} is a file") from None
    tmp = sibling_path(final, "tmp")
    try:
        yield tmp
    except BaseException as exc:
        _remove(tmp)
        if is_disk_full(exc):
            raise disk_full_error(final, size) from None
        raise
    if not tmp.exists():
        raise FileNotFoundError(f"{final}: nothing was written to the temporary path {tmp.name}")
    if final.is_dir() and not final.is_symlink() and not tmp.is_dir():
        _remove(tmp)
        raise PixsentError(f"{final}: is a folder; give a file name for the output")
    replace_path(tmp, final)


def _blocking_file(folder: Path) -> Path:
    """The first part of ``folder``'s path that exists as a non-folder (why it cannot be created)."""
    for part in [*reversed(folder.parents), folder]:
        if part.exists() and not part.is_dir():
            return part
    return folder


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsync'ed before the rename)."""
    with atomic_path(path, size=len(data)) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))
