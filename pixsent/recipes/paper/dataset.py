"""The paper's Twitter dataset (You et al. 2015, "DeepSent"): split files, images, per-fold LMDBs, means.

Split files: the 5-fold (image_id, label) lists of the five/four/three-agree subsets that Campos et al.
published in imatge-upc/sentiment-2017-imavis (ground_truth/), checked against splits/SHA256SUMS.
Images: pixsent.recipes.paper.twitter (either public home, every file checked against a committed manifest).
Per-fold LMDBs follow the paper: 256x256 bilinear resize, training list shuffled (fixed seed), the test
list in file order, and the training-set mean beside them; builds are cached by a stamp of their inputs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from pixsent import __version__
from pixsent.errors import DataError

REPO = Path(__file__).resolve().parents[3]
SPLITS_SHA256SUMS = REPO / "splits" / "SHA256SUMS"
SUBSETS = ("five", "four", "three")
FOLDS = (1, 2, 3, 4, 5)
SPLIT_URL = (
    "https://raw.githubusercontent.com/imatge-upc/sentiment-2017-imavis/master/ground_truth/"
    "{subset}_agrees/test{fold}/{name}.txt"
)
ILSVRC_MEAN_URL = (
    "https://raw.githubusercontent.com/BVLC/caffe/master/python/caffe/imagenet/ilsvrc_2012_mean.npy"
)
ILSVRC_MEAN_SHA256 = "97eefba7e046ee097121ad18564329636d2f9c153b748c7313653cae8594a149"
IMAGE_SIZE = 256
TRAIN_SHUFFLE_SEED = 1604


def split_relpath(subset: str, fold: int, name: str) -> str:
    """`five_agrees/test3/train.txt`: the upstream layout, relative to the splits folder."""
    return f"{subset}_agrees/test{fold}/{name}.txt"


def read_sha256sums(path: str | Path = SPLITS_SHA256SUMS) -> dict[str, str]:
    """`sha256  relpath` lines (sha256sum's format) -> {relpath: sha256}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checksum list not found")
    sums = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{path}:{number}: expected 'sha256  path', got {line!r}")
        sums[parts[1].lstrip("*").strip()] = parts[0].lower()
    return sums


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mirror_candidates(
    mirror: str | Path | None, relpath: str, prefixes: tuple[str, ...] = ("",)
) -> list[Path]:
    if mirror is None:
        return []
    return [Path(mirror) / prefix / relpath for prefix in prefixes]


def fetch_file(
    urls: list[str] | tuple[str, ...],
    dest: str | Path,
    *,
    sha256: str | None = None,
    mirrors: list[Path] = (),
    progress: bool = True,
) -> Path:
    """Put one file at DEST from the first mirror copy that exists, else the first URL that works."""
    from pixsent.formats.atomic import atomic_path

    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    for candidate in mirrors:
        if candidate.is_file():
            if sha256 is not None and sha256_of(candidate) != sha256:
                raise DataError(f"{candidate}: sha256 {sha256_of(candidate)} does not match {sha256}")
            with atomic_path(dest) as tmp:
                shutil.copyfile(candidate, tmp)
            return dest
    from pixsent.fetch import fetch_any

    fetch_any(list(urls), dest, sha256=sha256, progress=progress)
    return dest


def fetch_splits(
    subsets: tuple[str, ...] = SUBSETS,
    dest: str | Path = REPO / "splits",
    *,
    mirror: str | Path | None = None,
    sums: str | Path = SPLITS_SHA256SUMS,
) -> list[Path]:
    """The paper's 2 x 5 split files per subset under DEST (upstream layout), sha256-verified."""
    checksums = read_sha256sums(sums)
    out = []
    for subset in subsets:
        if subset not in SUBSETS:
            raise DataError(f"unknown subset {subset!r}: choose from {', '.join(SUBSETS)}")
        for fold in FOLDS:
            for name in ("train", "test"):
                rel = split_relpath(subset, fold, name)
                if rel not in checksums:
                    raise DataError(f"{sums}: no sha256 for {rel}")
                url = SPLIT_URL.format(subset=subset, fold=fold, name=name)
                mirrors = _mirror_candidates(mirror, rel, ("", "splits"))
                out.append(
                    fetch_file(
                        [url], Path(dest) / rel, sha256=checksums[rel], mirrors=mirrors, progress=False
                    )
                )
    return out


def split_image_ids(splits: str | Path, subsets: tuple[str, ...] = SUBSETS) -> dict[str, str]:
    """Every image id named in the split files under SPLITS -> the first file naming it."""
    from pixsent.data.imagelist import read_image_list

    ids: dict[str, str] = {}
    for subset in subsets:
        for fold in FOLDS:
            for name in ("train", "test"):
                path = Path(splits) / split_relpath(subset, fold, name)
                if path.is_file():
                    for e in read_image_list(path):
                        ids.setdefault(e.path, f"{path}:{e.line}")
    return ids


def missing_images(images: str | Path, splits: str | Path) -> list[str]:
    """`FILE:LINE: id` for every split image not present under IMAGES."""
    images = Path(images)
    return [
        f"{where}: {ident}"
        for ident, where in sorted(split_image_ids(splits).items())
        if not (images / ident).is_file()
    ]


def fetch_ilsvrc_mean(dest: str | Path = REPO / "data", *, mirror: str | Path | None = None) -> Path:
    """ilsvrc_2012_mean.npy (sha256-checked) -> DEST/ilsvrc_2012_mean.binaryproto (legacy dims)."""
    import numpy as np

    from pixsent.data.image_mean import save_mean

    dest = Path(dest)
    npy = fetch_file(
        [ILSVRC_MEAN_URL],
        dest / "ilsvrc_2012_mean.npy",
        sha256=ILSVRC_MEAN_SHA256,
        mirrors=_mirror_candidates(mirror, "ilsvrc_2012_mean.npy", ("", "data")),
    )
    mean = np.load(npy)
    if mean.shape != (3, IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{npy}: expected shape (3, 256, 256), got {mean.shape}")
    out = dest / "ilsvrc_2012_mean.binaryproto"
    save_mean(mean.astype(np.float32), binaryproto=out)
    return out


@dataclass(frozen=True)
class FoldData:
    """The files of one fold's build, and whether this call built them (False: cache hit)."""

    train_lmdb: Path
    test_lmdb: Path
    mean_binaryproto: Path
    mean_npy: Path
    stamp: Path
    built: bool


def _listing_digest(images: Path, ids: list[str]) -> str:
    """sha256 over (name, size, mtime_ns) of the listed images: changes when any of them changes."""
    digest = hashlib.sha256()
    for ident in sorted(set(ids)):
        try:
            st = (images / ident).stat()
            digest.update(f"{ident}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(f"{ident}\0missing\n".encode())
    return digest.hexdigest()


def fold_inputs(subset: str, fold: int, images: Path, splits: Path, size: int) -> dict:
    """What a fold build depends on, recorded in its stamp file."""
    from pixsent.data.imagelist import read_image_list

    lists = {name: Path(splits) / split_relpath(subset, fold, name) for name in ("train", "test")}
    for path in lists.values():
        if not path.is_file():
            raise DataError(f"{path}: split file not found (run `pixsent splits fetch --subset {subset}`)")
    ids = [e.path for path in lists.values() for e in read_image_list(path)]
    return {
        "subset": subset,
        "fold": fold,
        "size": size,
        "train_sha256": sha256_of(lists["train"]),
        "test_sha256": sha256_of(lists["test"]),
        "images": str(Path(images).resolve()),
        "images_digest": _listing_digest(Path(images), ids),
        "shuffle_seed": TRAIN_SHUFFLE_SEED,
        "pixsent": __version__,
    }


def ensure_fold_lmdbs(
    subset: str,
    fold: int,
    *,
    images: str | Path = REPO / "data" / "twitter" / "images",
    splits: str | Path = REPO / "splits",
    out: str | Path = REPO / "data" / "lmdb",
    size: int = IMAGE_SIZE,
    workers: int | None = None,
    strict: bool = False,
    progress: bool = True,
) -> FoldData:
    """Build (or reuse, if the stamp matches) OUT/<subset>_agrees/fold<k>/ train+test LMDBs and mean."""
    from pixsent.data.image_mean import compute_image_mean, save_mean
    from pixsent.data.imageset import convert_imageset
    from pixsent.formats.atomic import atomic_write_text

    if subset not in SUBSETS:
        raise DataError(f"unknown subset {subset!r}: choose from {', '.join(SUBSETS)}")
    images, splits = Path(images), Path(splits)
    if not images.is_dir():
        raise DataError(f"{images}: image folder not found (run `pixsent data fetch`)")
    folder = Path(out) / f"{subset}_agrees" / f"fold{fold}"
    data = FoldData(
        folder / "train_lmdb",
        folder / "test_lmdb",
        folder / "mean.binaryproto",
        folder / "mean.npy",
        folder / "stamp.json",
        built=False,
    )
    inputs = fold_inputs(subset, fold, images, splits, size)
    if data.stamp.is_file() and all(
        p.exists() for p in (data.train_lmdb, data.test_lmdb, data.mean_binaryproto)
    ):
        try:
            if json.loads(data.stamp.read_text()).get("inputs") == inputs:
                return data
        except json.JSONDecodeError:
            pass
    data.stamp.unlink(missing_ok=True)
    skipped = []
    for name, db, shuffle in (("train", data.train_lmdb, True), ("test", data.test_lmdb, False)):
        report = convert_imageset(
            images,
            splits / split_relpath(subset, fold, name),
            db,
            resize=(size, size),
            shuffle=shuffle,
            seed=TRAIN_SHUFFLE_SEED,
            workers=workers,
            strict=strict,
            overwrite=True,
            progress=progress,
        )
        skipped += report.skipped
    save_mean(compute_image_mean(data.train_lmdb, progress=progress), data.mean_binaryproto, data.mean_npy)
    atomic_write_text(data.stamp, json.dumps({"inputs": inputs, "skipped": skipped}, indent=1) + "\n")
    if skipped:
        print(
            f"data lmdb: {len(skipped)} images missing or unreadable, left out (listed in {data.stamp}):",
            *(f"  {line}" for line in skipped),
            sep="\n",
            file=sys.stderr,
        )
    return FoldData(**{**asdict(data), "built": True})
