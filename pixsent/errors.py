"""Exceptions that reach the user as a one-line message naming the culprit (file, line, layer)."""

from __future__ import annotations


class PixsentError(Exception):
    """Base of every error pixsent reports to the user without a traceback."""


class FormatError(PixsentError):
    """A Caffe file (prototxt, caffemodel, binaryproto, solverstate, LMDB) is malformed."""


class NetError(PixsentError):
    """A network definition cannot be built or weights do not fit it."""


class DivergedError(NetError):
    """The training loss became NaN or infinite. A training process stops with ``exit_status`` so that the
    workflow running it can tell a diverged configuration from a broken one."""

    exit_status = 3


class DataError(PixsentError):
    """Input data (image lists, images, split files) is missing or malformed."""


class ChecksumError(DataError):
    """A file's sha1/sha256 differs from the one published for it."""


class UnreachableError(DataError):
    """A download could not reach its host at all (name lookup, refused or timed-out connection)."""
