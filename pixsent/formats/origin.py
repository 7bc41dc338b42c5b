"""Errors that name the file they came from: a context that prefixes the origin when a message lacks it.

Code that works on an already-parsed message (a NetParameter, a SolverParameter) cannot name the file it
was read from; the caller that opened the file wraps that work in ``naming(path)`` so the user still sees
which file is at fault.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pixsent.errors import PixsentError


def with_origin(exc: PixsentError, origin: str, placeholder: str | None = None) -> PixsentError:
    """The same error class with ``origin`` in its message, or ``exc`` itself when it needs none.

    Without ``placeholder`` the origin is prefixed to any message that does not already contain it; with
    one, only a message starting "PLACEHOLDER: " is renamed (others name their own, different file).
    """
    message = str(exc)
    if not origin or origin in message:
        return exc
    if placeholder is not None:
        head = f"{placeholder}: "
        return type(exc)(origin + ": " + message[len(head) :]) if message.startswith(head) else exc
    return type(exc)(f"{origin}: {message}")


@contextlib.contextmanager
def naming(origin: str | None, placeholder: str | None = None) -> Iterator[None]:
    """Re-raise PixsentErrors raised inside with ``origin`` (a file name) in the message (see with_origin)."""
    try:
        yield
    except PixsentError as exc:
        if not origin:
            raise
        named = with_origin(exc, str(origin), placeholder)
        if named is exc:
            raise
        raise named from exc
