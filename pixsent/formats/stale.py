"""Temporaries left behind by a killed writer (``.NAME.tmp-<pid>-<hex>``, ``.NAME.old-<pid>-<hex>``).

``atomic.sibling_path`` names every temporary with the writer's PID, so one whose PID no longer runs was left
by a process that died before renaming it (a kill -9, a power cut): at CaffeNet scale 230 MB per snapshot or
LMDB. The next writer in the folder removes them and says so. PIDs are those of this machine: a folder
written by two machines at once (a network share) is not supported.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from pixsent.formats.locks import pid_alive
from pixsent.formats.space import human

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def _stderr(msg: str) -> None:
    print(f"pixsent: {msg}", file=sys.stderr, flush=True)


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(q.stat().st_size for q in path.rglob("*") if q.is_file() and not q.is_symlink())
    return path.lstat().st_size


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def stale_temporaries(folder: str | os.PathLike[str]) -> list[tuple[Path, int]]:
    """(path, pid) of every temporary in ``folder`` whose writer is no longer running."""
    folder = Path(folder)
    found = []
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for name in names:
        m = _TEMPORARY.match(name)
        if m and not pid_alive(int(m.group("pid"))):
            found.append((folder / name, int(m.group("pid"))))
    return found


def remove_stale_temporaries(
    folder: str | os.PathLike[str], say: Callable[[str], None] | None = None
) -> list[Path]:
    """Delete the temporaries of dead writers in ``folder``, one line each; returns what was removed."""
    say = say or _stderr
    removed = []
    for path, pid in stale_temporaries(folder):
        try:
            size = _size(path)
        except OSError:
            size = 0
        _remove(path)
        if not os.path.lexists(path):
            say(f"removed {path} ({human(size)}), a temporary left by PID {pid}, which is no longer running")
            removed.append(path)
    return removed
