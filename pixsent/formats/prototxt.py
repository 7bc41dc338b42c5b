"""Protobuf text format (prototxt) for NetParameter and SolverParameter, with file:line:col errors.

Reading a net or solver applies Caffe's upgrades (see ``upgrade``), as ReadNetParamsFromTextFileOrDie
and ReadSolverParamsFromTextFileOrDie do, so callers always see the current format.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TypeVar

from google.protobuf import text_format
from google.protobuf.message import Message

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import FormatError
from pixsent.formats.atomic import atomic_write_text
from pixsent.formats.upgrade import upgrade_net, upgrade_solver

M = TypeVar("M", bound=Message)
_POSITION = re.compile(r"^\s*\d+:\d+\s*:\s*")


def read_text(path: str | os.PathLike[str]) -> str:
    """The file's text; a missing or unreadable file is a FormatError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FormatError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror})") from None


def parse_message(text: str, message: M, source: str = "<string>") -> M:
    """Parse ``text`` into ``message`` (merged into it) and return it; errors read "SOURCE:LINE:COL: what"."""
    try:
        text_format.Merge(text, message)
    except text_format.ParseError as exc:
        line, col = exc.GetLine(), exc.GetColumn()
        what = _POSITION.sub("", str(exc)).strip()
        where = f"{source}:{line}:{col}" if line is not None else source
        raise FormatError(f"{where}: {what}") from None
    return message


def parse_net(text: str, source: str = "<string>") -> caffe_pb2.NetParameter:
    """A NetParameter from prototxt text, upgraded to the current (V2 ``layer``) format."""
    return upgrade_net(parse_message(text, caffe_pb2.NetParameter(), source), source)


def parse_solver(text: str, source: str = "<string>") -> caffe_pb2.SolverParameter:
    """A SolverParameter from prototxt text, with ``solver_type`` upgraded to ``type``."""
    return upgrade_solver(parse_message(text, caffe_pb2.SolverParameter(), source), source)


def read_net(path: str | os.PathLike[str]) -> caffe_pb2.NetParameter:
    """Read and upgrade a net prototxt."""
    return parse_net(read_text(path), str(path))


def read_solver(path: str | os.PathLike[str]) -> caffe_pb2.SolverParameter:
    """Read and upgrade a solver prototxt."""
    return parse_solver(read_text(path), str(path))


def to_text(message: Message) -> str:
    """Prototxt text of ``message`` (two-space indents, fields in schema order, as Caffe prints)."""
    return text_format.MessageToString(message)


def write_prototxt(message: Message, path: str | os.PathLike[str]) -> Path:
    """Write ``message`` as prototxt, atomically."""
    return atomic_write_text(path, to_text(message))
