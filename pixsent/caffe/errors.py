"""pycaffe's Python exception types for errors pixsent also reports as its own (so both ``except`` work).

Caffe's pycaffe raises builtin types where numpy or the C++ layer does (ValueError from a reshape,
RuntimeError from std::runtime_error, TypeError from net_spec); these classes are those types and
pixsent errors at once.
"""

from __future__ import annotations

from pixsent.errors import FormatError, NetError


class BlobValueError(FormatError, ValueError):
    """A BlobProto whose values do not fit its shape (numpy's reshape ValueError in pycaffe)."""


class NetValueError(NetError, ValueError):
    """A layer or blob name the net does not have (``list.index`` raises ValueError in pycaffe)."""


class NetRuntimeError(NetError, RuntimeError):
    """What pycaffe's C++ side reports with std::runtime_error (set_input_arrays checks, bad files)."""


class NetSpecTypeError(NetError, TypeError):
    """net_spec given something that is not a Top where a bottom belongs."""
