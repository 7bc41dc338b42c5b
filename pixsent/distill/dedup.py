"""Duplicate images: exact copies by SHA-256 of the file bytes, near copies by perceptual hash.

Near duplicates use ImageHash's 64-bit DCT ``phash``; two images are near duplicates when their hashes
differ in at most ``max_distance`` bits (default 8 of 64: a re-encoded or resized copy typically differs
in 0-4 bits, unrelated photos in about 32). Candidates are found with the pigeonhole rule: split the hash
into ``max_distance + 1`` bands, and two hashes within that distance share at least one band exactly.
The first occurrence (in input order) is kept.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pixsent.errors import DataError

EXACT, NEAR = "duplicate_exact", "duplicate_near"
DEFAULT_MAX_DISTANCE = 8


def content_hash(path: Path) -> str:
    """SHA-256 of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def perceptual_hash(path: Path) -> int:
    """ImageHash phash (8x8 DCT bits) of the decoded image as a 64-bit integer."""
    import imagehash
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(str(imagehash.phash(im)), 16)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot decode image for the perceptual hash ({exc})") from None


@dataclass
class Deduplicator:
    """Streaming duplicate check: ``check(path)`` returns None (new, remembered) or (reason, first path)."""

    near: bool = True
    max_distance: int = DEFAULT_MAX_DISTANCE
    _exact: dict[str, str] = field(default_factory=dict)
    _hashes: list[tuple[int, str]] = field(default_factory=list)
    _bands: dict[tuple[int, int], list[int]] = field(default_factory=lambda: defaultdict(list))

    def _band_keys(self, h: int) -> list[tuple[int, int]]:
        n = self.max_distance + 1
        edges = [round(64 * i / n) for i in range(n + 1)]
        return [(i, (h >> lo) & ((1 << (hi - lo)) - 1)) for i, (lo, hi) in enumerate(zip(edges, edges[1:]))]

    def check(self, path: Path, name: str | None = None) -> tuple[str, str] | None:
        name = name or str(path)
        digest = content_hash(path)
        if digest in self._exact:
            return EXACT, self._exact[digest]
        if self.near:
            h = perceptual_hash(path)
            keys = self._band_keys(h)
            seen: set[int] = set()
            for key in keys:
                for idx in self._bands.get(key, ()):
                    if idx in seen:
                        continue
                    seen.add(idx)
                    other, other_name = self._hashes[idx]
                    if (h ^ other).bit_count() <= self.max_distance:
                        return NEAR, other_name
            for key in keys:
                self._bands[key].append(len(self._hashes))
            self._hashes.append((h, name))
        self._exact[digest] = name
        return None
