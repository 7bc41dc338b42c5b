"""A full disk as a one-line error naming the file being written, the space it needs and the space left.

The OSError a full disk raises (ENOSPC, or EDQUOT for a quota) carries no file name, and LMDB reports it
as ``mdb_txn_commit: Input/output error``; writers turn both into ``DiskFullError`` with these helpers.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from pixsent.errors import PixsentError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(PixsentError):
    """The disk (or quota) holding an output ran out of space while writing it."""


def is_disk_full(exc: BaseException) -> bool:
    """True for the OSError of a full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Free bytes for an unprivileged writer on the filesystem holding ``path`` (its nearest existing
    parent); None when it cannot be asked."""
    p = Path(path).absolute()
    for candidate in (p, *p.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def human(n: int) -> str:
    """Bytes as a short human figure: 512 B, 3.4 kB, 228.0 MB, 1.2 GB (powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def disk_full_error(
    path: str | os.PathLike[str], needed: int | None, *, at_least: bool = False, what: str = "writing it"
) -> DiskFullError:
    """``PATH: no space left on the device while writing it (needs about N, F free)``; call it after the
    partial output was removed, so that F is what the user has to work with. ``at_least``: N is only
    what was written before the failure (the total was not known)."""
    free = free_bytes(Path(path).parent)
    parts = []
    if needed is not None:
        parts.append(f"needs {'more than' if at_least else 'about'} {human(needed)}")
    if free is not None:
        parts.append(f"{human(free)} free")
    detail = f" ({', '.join(parts)})" if parts else ""
    return DiskFullError(f"{path}: no space left on the device while {what}{detail}; nothing was written")
