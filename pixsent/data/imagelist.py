"""Parse Caffe image-list files (`relative/path label` per line) with line-numbered errors.

Caffe's convert_imageset (BVLC master) reads each line whole and splits it at the LAST space, so a
path may itself contain spaces; we do the same (also accepting a tab) and, unlike Caffe, which would
silently read a missing label as 0, reject a line without an integer label.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pixsent.errors import DataError


@dataclass(frozen=True)
class ListEntry:
    """One list line: image path (as written), integer label, 1-based line number."""

    path: str
    label: int
    line: int


def parse_line(text: str, *, source: str | Path = "<list>", line: int = 0) -> ListEntry:
    """Split one non-blank line at its last whitespace into (path, label)."""
    stripped = text.rstrip("\r\n").rstrip()
    parts = stripped.rsplit(maxsplit=1)
    if len(parts) != 2:
        raise DataError(f"{source}:{line}: expected 'path label', got {stripped!r} (no label)")
    path, label = parts
    try:
        value = int(label)
    except ValueError:
        raise DataError(f"{source}:{line}: label {label!r} is not an integer (line {stripped!r})") from None
    return ListEntry(path.strip(), value, line)


def parse_lines(lines: Iterable[str], *, source: str | Path = "<list>") -> list[ListEntry]:
    """Parse list lines, skipping blank ones; line numbers are 1-based."""
    return [
        parse_line(text, source=source, line=number)
        for number, text in enumerate(lines, start=1)
        if text.strip()
    ]


def read_image_list(path: str | Path) -> list[ListEntry]:
    """Read a `path label` list file; DataError names the file and line of the first bad line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: list file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text list ({exc.reason})") from None
    return parse_lines(text.splitlines(), source=path)


def write_image_list(entries: Iterable[ListEntry | tuple[str, int]], path: str | Path) -> None:
    """Write `path label` lines (newline after each), atomically."""
    from pixsent.formats.atomic import atomic_write_text

    rows = [(e.path, e.label) if isinstance(e, ListEntry) else e for e in entries]
    atomic_write_text(path, "".join(f"{p} {label}\n" for p, label in rows))
