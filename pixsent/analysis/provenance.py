"""Where a result file came from: the exact command line and the git commit of the checkout that ran it."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def commit(repo: Path = REPO) -> str:
    """``git rev-parse HEAD`` of the checkout, ``-dirty`` when tracked files differ; 'unknown' without git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: ``pixsent <arguments>`` (shell-quoted)."""
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["pixsent", *args])
