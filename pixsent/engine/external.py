"""``ENGINE=caffe``: hand the same command line to a real BVLC ``caffe`` binary instead of pixsent's engine.

The binary is ``$CAFFE_BIN`` when set, else the first ``caffe`` on PATH that is not pixsent's own
``tools/caffe`` wrapper (which would loop back here). Its output streams through unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pixsent.errors import PixsentError

OWN_TOOL = (Path(__file__).resolve().parents[2] / "tools" / "caffe").resolve()
MISSING = (
    "ENGINE=caffe: no BVLC caffe binary found (set CAFFE_BIN=/path/to/build/tools/caffe "
    "or put Caffe's build/tools on PATH; unset ENGINE to use pixsent's engine)"
)


def engine_requested(explicit: str | None = None) -> str:
    """The engine asked for: ``--engine`` when given, else ``$ENGINE``, else ``pixsent``."""
    return (explicit or os.environ.get("ENGINE") or "pixsent").strip().lower()


def _is_own(path: str) -> bool:
    """True for pixsent's tools/caffe (or a link to it), and for scripts that say they are pixsent's."""
    real = Path(path).resolve()
    if real == OWN_TOOL:
        return True
    try:
        head = real.read_bytes()[:600]
    except OSError:
        return False
    return b"pixsent" in head and head.startswith(b"#!")


def find_caffe_binary() -> str | None:
    """Path of a real caffe executable, or None when none is installed."""
    given = os.environ.get("CAFFE_BIN")
    if given:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            raise PixsentError(f"CAFFE_BIN={given}: not an executable file")
        return given
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which("caffe", path=folder) if folder else None
        if found and not _is_own(found):
            return found
    return None


def run_external(argv: list[str]) -> int:
    """Run the real caffe with ``argv`` (action and flags), streaming its output; returns its exit code."""
    binary = find_caffe_binary()
    if binary is None:
        raise PixsentError(MISSING)
    env = dict(os.environ)
    env.setdefault("GLOG_logtostderr", "1")
    return subprocess.call([binary, *argv], env=env)
