"""Posts (id, text, one or more image paths) from JSON Lines or CSV, with every rejected line reported.

JSON Lines: one object a line with ``text`` and ``images`` (a list) or ``image`` (a string); ``id`` is
optional (default ``line<N>``). CSV: a header with ``text`` and ``images`` or ``image`` (several paths
separated by ``;`` or ``|``), optionally ``id``. Image paths are relative to the image root (default: the
posts file's folder). A line that cannot be parsed, a post without text, and a post whose images are all
missing are skipped and recorded as a ``Problem`` (file:line: reason); a missing image of a post that has
others is recorded too and only that image is skipped.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pixsent.errors import DataError

MALFORMED, NO_TEXT, NO_IMAGE, MISSING_IMAGE = "malformed", "no_text", "no_image", "missing_image"
POST_REASONS = (MALFORMED, NO_TEXT, NO_IMAGE)
IMAGE_SEP = re.compile(r"[;|]")


@dataclass(frozen=True)
class Problem:
    """One skipped line or image, printed as FILE:LINE: reason: detail."""

    file: Path
    line: int
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}: {self.detail}"


@dataclass(frozen=True)
class Post:
    """A readable post: its id, raw text, existing images (relative to the root) and source line."""

    id: str
    text: str
    images: tuple[str, ...]
    line: int


@dataclass
class PostSet:
    """Everything read from one posts file: the posts, the problems, and the ledger counts."""

    source: Path
    root: Path
    posts: list[Post] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    lines: int = 0  # non-blank records read
    images_listed: int = 0  # image references of posts that have text and parse

    def count(self, reason: str) -> int:
        return sum(1 for p in self.problems if p.reason == reason)


def _records_jsonl(path: Path, text: str) -> Iterator[tuple[int, dict | None, str]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, None, f"not JSON ({exc.msg} at column {exc.colno})"
            continue
        if not isinstance(obj, dict):
            yield number, None, f"expected a JSON object, got {type(obj).__name__}"
            continue
        yield number, obj, ""


def _records_csv(path: Path, text: str) -> Iterator[tuple[int, dict | None, str]]:
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip().lower() for h in header]
    if "text" not in header or not ({"image", "images"} & set(header)):
        raise DataError(f"{path}:1: CSV header needs 'text' and 'image' or 'images' columns, got {header}")
    for row in reader:
        number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield number, None, f"{len(row)} fields, header has {len(header)}"
            continue
        rec = dict(zip(header, row))
        for key in ("image", "images"):
            if key in rec:
                rec[key] = [s.strip() for s in IMAGE_SEP.split(rec[key]) if s.strip()]
        yield number, rec, ""


READERS = {".jsonl": _records_jsonl, ".json": _records_jsonl, ".ndjson": _records_jsonl, ".csv": _records_csv}


def _image_list(rec: dict) -> list[str] | None:
    """The post's image references as strings, or None when the field has the wrong type."""
    value = rec.get("images", rec.get("image"))
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return [v for v in value if v.strip()]


def read_posts(path: str | Path, image_root: str | Path | None = None, fmt: str | None = None) -> PostSet:
    """Parse a posts file; unreadable records become Problems (never raised, never silently dropped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: posts file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    suffix = f".{fmt}" if fmt else path.suffix.lower()
    if suffix not in READERS:
        raise DataError(f"{path}: unknown posts format {suffix!r} (use .jsonl or .csv, or --format)")
    root = Path(image_root) if image_root is not None else path.parent
    out = PostSet(path, root)
    for number, rec, error in READERS[suffix](path, text):
        out.lines += 1
        if rec is None:
            out.problems.append(Problem(path, number, MALFORMED, error))
            continue
        images = _image_list(rec)
        post_text = rec.get("text")
        if images is None or (post_text is not None and not isinstance(post_text, str)):
            out.problems.append(Problem(path, number, MALFORMED, "'text' must be a string, 'images' strings"))
            continue
        if not post_text or not post_text.strip():
            out.problems.append(Problem(path, number, NO_TEXT, "post has no text"))
            continue
        out.images_listed += len(images)
        found = []
        for ref in images:
            if (root / ref).is_file():
                found.append(ref)
            else:
                out.problems.append(Problem(path, number, MISSING_IMAGE, f"image {root / ref} not found"))
        if not found:
            detail = "post lists no image" if not images else "none of the post's images exists"
            out.problems.append(Problem(path, number, NO_IMAGE, detail))
            continue
        post_id = str(rec.get("id") or f"line{number}")
        out.posts.append(Post(post_id, post_text, tuple(found), number))
    return out
