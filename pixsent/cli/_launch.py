"""Start-up shared by the Caffe-named executables in tools/: run inside the repository's .venv, then the
pixsent command of the same name.

The executables only call ``run_tool`` under a ``__main__`` guard: importing a script (a test, a process
started with spawn or forkserver) must not run the command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_NO_REEXEC = "PIXSENT_NO_REEXEC"


def _reexec_in_venv(script: str) -> None:
    """Replace this process by ``script`` run under ``REPO/.venv`` when that exists and is not in use."""
    venv_py = REPO / ".venv" / "bin" / "python"
    in_venv = Path(sys.prefix).resolve() == (REPO / ".venv").resolve()
    if venv_py.exists() and not in_venv and _NO_REEXEC not in os.environ:
        os.environ[_NO_REEXEC] = "1"
        os.execv(str(venv_py), [str(venv_py), script, *sys.argv[1:]])


def run_tool(script: str, command: list[str]) -> int:
    """``pixsent <command...> <this process's arguments>`` (after the venv re-exec); returns the exit code."""
    _reexec_in_venv(script)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from pixsent.cli import main

    return main([*command, *sys.argv[1:]])
