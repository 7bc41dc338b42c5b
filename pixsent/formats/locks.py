"""One writer at a time on an output path, and whoever comes second told which process holds it.

The lock of ``DIR/NAME`` is the file ``DIR/.NAME.lock`` held with flock(2); the kernel drops the lock when
every process holding the open file has exited, so a kill -9 never leaves a path locked. The file lists
``PID role`` of the holders so a refused writer can name them. A holder can hand the lock to a child (the
fd in ``pass_fds``, and ``add_holder``): the child then keeps the path locked if the parent dies first.
The last holder to release deletes the file; a file that still lists PIDs when the lock is taken was left
by holders that died without releasing it (a kill -9, or a child that outlived the parent that gave it the
lock), and taking it over is said. Whoever gets the lock checks that its open file is still the one at the
path (a release may have deleted it meanwhile) and starts again on the new file otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pixsent.errors import PixsentError


class LockedError(PixsentError):
    """Another process holds the lock of an output path."""


def _stderr(msg: str) -> None:
    print(f"pixsent: {msg}", file=sys.stderr, flush=True)


def lock_file(target: str | os.PathLike[str]) -> Path:
    """The lock file of ``target``: a hidden sibling, so it survives the target being replaced."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def pid_alive(pid: int) -> bool:
    """True when a process with this PID exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _same_file(fd: int, path: Path) -> bool:
    """True when ``path`` still names the file open as ``fd`` (not deleted or replaced since)."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_holders(fd: int) -> list[tuple[int, str]]:
    text = os.pread(fd, 1 << 16, 0).decode("utf-8", errors="replace")
    holders = []
    for line in text.splitlines():
        pid, _, role = line.strip().partition(" ")
        if pid.isdigit():
            holders.append((int(pid), role or "?"))
    return holders


def describe(holders: list[tuple[int, str]]) -> str:
    """'PID 12 (pipeline, exited) and PID 13 (trainer)'."""
    parts = [f"PID {pid} ({role}{'' if pid_alive(pid) else ', exited'})" for pid, role in holders]
    return " and ".join(parts) if parts else "another process"


@dataclass
class PathLock:
    """A held lock: ``fd`` is the open lock file (pass it to a child to share the lock)."""

    target: Path
    file: Path
    fd: int
    holders: list[tuple[int, str]] = field(default_factory=list)

    def _write(self) -> None:
        data = "".join(f"{pid} {role}\n" for pid, role in self.holders).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def add_holder(self, pid: int, role: str) -> None:
        """Record a child that shares the lock (it stays locked while the child lives)."""
        self.holders.append((pid, role))
        self._write()

    def release(self) -> None:
        """Drop this process's hold; holders still alive (children given the fd) keep the path locked."""
        if self.fd < 0:
            return
        me = os.getpid()
        self.holders = [(pid, role) for pid, role in self.holders if pid != me and pid_alive(pid)]
        with contextlib.suppress(OSError):  # a full disk must not keep the lock: closing the fd releases it
            if self.holders:
                self._write()
            elif _same_file(self.fd, self.file):
                os.unlink(self.file)
        os.close(self.fd)  # no LOCK_UN: that would also release it for the children sharing it
        self.fd = -1
        _HELD.pop(self.target, None)

    def __enter__(self) -> PathLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_HELD: dict[Path, PathLock] = {}


def held(target: str | os.PathLike[str]) -> PathLock | None:
    """The lock this process holds on ``target``, if any."""
    return _HELD.get(Path(target).absolute())


def acquire(
    target: str | os.PathLike[str],
    role: str,
    *,
    wait: bool = False,
    say: Callable[[str], None] | None = None,
) -> PathLock:
    """Lock ``target`` for this process (``role`` says what it does there, for the message others get).

    Held by another process: LockedError naming its PIDs, or with ``wait`` a line saying whom we wait
    for, then block until it is free.
    """
    say = say or _stderr
    target = Path(target).absolute()
    path = lock_file(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    waiting = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                others = describe(_read_holders(fd))
                if not wait:
                    raise LockedError(
                        f"{target}: in use by {others}; wait for it to finish or stop it "
                        f"(lock file {path.name})"
                    ) from None
                if not waiting:
                    say(f"{target}: waiting for {others} to finish with it")
                    waiting = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if not _same_file(fd, path):  # released and deleted meanwhile: lock the file there now
                os.close(fd)
                continue
            left = _read_holders(fd)
        except BaseException:
            os.close(fd)
            raise
        break
    if left:
        say(f"{target}: taking over the lock left by {describe(left)}, which did not release it")
    lock = PathLock(target, path, fd, [(os.getpid(), role)])
    with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, its holders go unnamed
        lock._write()
    _HELD[target] = lock
    return lock
