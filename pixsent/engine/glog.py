"""Log lines in Google glog's format, which Caffe's logs use and Caffe-era parsers expect.

A line is ``<S><MMDD> <HH:MM:SS.micro> <thread id> <file:line>] <message>`` with S one of I, W, E, F.
The file:line part names a Caffe-like pseudo source (``solver.cpp:239``) because parsers only read the
message; multi-line messages (parameter dumps) carry the prefix on the first line only, as glog does.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import TextIO

SEVERITIES = {"INFO": "I", "WARNING": "W", "ERROR": "E", "FATAL": "F"}
_LEVEL = {"I": 0, "W": 1, "E": 2, "F": 3}


@dataclass
class GlogConfig:
    """Where lines go: stderr unless disabled, plus any open files; ``enabled`` is False on non-root ranks."""

    enabled: bool = True
    to_stderr: bool = True
    files: list[TextIO] = field(default_factory=list)
    min_level: int = int(os.environ.get("GLOG_minloglevel", "0") or 0)  # noqa: SIM112 - glog's own name
    output_closed: bool = False  # stderr's reader has gone (see output_lost); the solver polls this


CONFIG = GlogConfig()
_lock = threading.Lock()


def format_line(severity: str, message: str, src: str, when: _dt.datetime | None = None) -> str:
    """One glog line (without the trailing newline) for ``message`` logged at ``src``."""
    when = when or _dt.datetime.now()
    letter = SEVERITIES.get(severity, severity[:1])
    stamp = when.strftime("%m%d %H:%M:%S") + f".{when.microsecond:06d}"
    return f"{letter}{stamp} {threading.get_native_id():5d} {src}] {message}"


def log(severity: str, message: str, src: str = "caffe.cpp:0") -> None:
    """Write ``message`` to every sink when logging is enabled and the severity passes the threshold."""
    letter = SEVERITIES.get(severity, severity[:1])
    if not CONFIG.enabled or _LEVEL.get(letter, 0) < CONFIG.min_level:
        return
    line = format_line(severity, message, src) + "\n"
    with _lock:
        if CONFIG.to_stderr:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except BrokenPipeError:  # the process reading our pipe has exited
                output_lost()
        for fh in CONFIG.files:
            fh.write(line)
            fh.flush()


def output_lost() -> None:
    """Stderr's pipe has no reader any more (e.g. the pipeline that ran us was killed by SIGHUP): point the
    descriptors sharing it at /dev/null so no later write (nor the exit) fails, go on in the file named by
    $PIXSENT_LOG_FALLBACK when set, and raise ``output_closed`` so the solver snapshots and stops."""
    CONFIG.to_stderr = False
    CONFIG.output_closed = True
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        broken = os.fstat(2)
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == (broken.st_dev, broken.st_ino):
                    os.dup2(null, fd)
    except OSError:
        pass
    finally:
        os.close(null)
    fallback = os.environ.get("PIXSENT_LOG_FALLBACK")
    if fallback:  # log() goes on to write ``line`` (and all later ones) there
        try:
            fh = add_file(fallback)
        except OSError:
            return
        note = "output pipe closed (its reader has exited); logging here, stopping after a snapshot"
        fh.write(format_line("WARNING", note, "caffe.cpp:0") + "\n")


def info(message: str, src: str = "caffe.cpp:0") -> None:
    """Log at INFO (``I`` lines, the ones training-log parsers read)."""
    log("INFO", message, src)


def warning(message: str, src: str = "caffe.cpp:0") -> None:
    """Log at WARNING."""
    log("WARNING", message, src)


def error(message: str, src: str = "caffe.cpp:0") -> None:
    """Log at ERROR."""
    log("ERROR", message, src)


def add_file(path: str | os.PathLike[str]) -> TextIO:
    """Also append every line to ``path`` (like glog's --log_dir, but one named file); returns the handle."""
    fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the process lifetime
    CONFIG.files.append(fh)
    return fh


def remove_file(fh: TextIO) -> None:
    """Stop writing to a file added with ``add_file`` and close it."""
    if fh in CONFIG.files:
        CONFIG.files.remove(fh)
    fh.close()


def fmt(x: float) -> str:
    """A number as C++ ostream prints a float by default (6 significant digits, %g), e.g. 0.693377."""
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return f"{float(x):.6g}"
