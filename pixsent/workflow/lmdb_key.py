"""What a fold's LMDBs are made of, as a cache key: the split files' bytes, the images' manifest, the options.

Two run folders (variants, inits, runs roots) that list the same images with the same labels share one
build: the key names no path of a run folder and no file time of a split file, only contents. The images
enter as a manifest of (listed path, size, mtime) rather than their bytes, which would cost a full read of
the data set on every call.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pixsent.data.imagelist import read_image_list


def file_sha256(path: Path) -> str:
    """sha256 of a (small) file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def image_manifest(root: Path, lists: list[Path]) -> str:
    """sha256 over (path, size, mtime) of every image the lists name under ``root`` (None when missing)."""
    h = hashlib.sha256()
    for listfile in lists:
        for entry in read_image_list(listfile):
            try:
                st = (Path(root) / entry.path).stat()
                h.update(f"{entry.path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{entry.path}\tmissing\n".encode())
    return h.hexdigest()


def lmdb_key(train: Path, test: Path, root: Path, **options: Any) -> dict[str, Any]:
    """The inputs of a fold's LMDB build by content: split bytes, image manifest and build options."""
    return {
        "train_sha256": file_sha256(train),
        "test_sha256": file_sha256(test),
        "images": image_manifest(root, [train, test]),
        **options,
    }
