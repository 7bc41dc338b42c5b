"""The `pixsent` command: subcommands are discovered from the modules of this package.

Each module in pixsent/cli/ (other than this one) defines ``register(subparsers)`` which adds
its subcommands and sets ``func`` (a callable taking the parsed namespace and returning an exit
code) on each parser. Heavy imports (torch, cv2) belong inside the handlers so that
`pixsent --help` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import pkgutil
import sys

from pixsent import __version__


class UserError(Exception):
    """An error caused by the user's input: printed as one line, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixsent",
        description="Caffe-faithful visual sentiment toolkit (Campos et al. 2017 on PyTorch).",
    )
    parser.add_argument("--version", action="version", version=f"pixsent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = list(sys.argv[1:] if argv is None else argv)  # as typed, for result files
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("pixsent: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # user-facing errors become one line
        from pixsent.errors import PixsentError

        if isinstance(exc, PixsentError | UserError | FileNotFoundError):
            print(f"pixsent {args.command}: error: {exc}", file=sys.stderr)
            return getattr(exc, "exit_status", 1)
        if isinstance(exc, OSError) and exc.filename is not None:
            print(f"pixsent {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
            return 1
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):  # a writer without a name
            print(f"pixsent {args.command}: error: {exc.strerror} (disk or quota full)", file=sys.stderr)
            return 1
        raise


def os_error_message(exc: OSError) -> str:
    """'PATH: reason' for an OSError about a file the user named (permission, folder, disk full, ...)."""
    where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    return f"{where}: {exc.strerror or exc}"
