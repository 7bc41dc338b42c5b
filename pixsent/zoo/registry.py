"""Registry of the pre-trained models the paper starts from (Table 5) and the released weights.

The data live in models/registry.json (name, URLs, checksum where published, file, mean, architecture,
number of outputs, how to build its deploy net); this module reads it, builds deploy nets, and fetches files
through pixsent.fetch (mirror folder first, resumable HTTP, checksum check). Archives (Places205) are unpacked
after the download into the same folder.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import DataError, NetError

REGISTRY_PATH = Path(__file__).resolve().parents[2] / "models" / "registry.json"
ARCHITECTURES = ("caffenet", "caffenet-fullconv")


@dataclass(frozen=True)
class MeanSpec:
    """A mean image: where the generated prototxts expect it, and its public .npy (if any)."""

    name: str
    file: str | None = None
    npy: str | None = None
    url: str | None = None
    values: tuple[float, ...] | None = None  # per-channel B, G, R (``mean_value``) instead of a mean image
    note: str = ""


@dataclass(frozen=True)
class ModelEntry:
    """One pre-trained model of the registry."""

    name: str
    description: str
    urls: tuple[str, ...]
    sha1: str | None
    sha256: str | None
    file: str
    mean: MeanSpec
    architecture: str
    num_outputs: int | None
    deploy: dict[str, Any]
    homepage: str = ""
    note: str = ""
    archive: str | None = (
        None  # what the URL gives when it is an archive holding ``file`` (or a file to decode)
    )
    extract: dict[str, str] | None = None  # archive member -> file name in the models folder
    files: tuple[dict[str, Any], ...] = ()  # more downloads: {"name", "urls", "sha256"} (a deploy prototxt)
    decode: str | None = None  # zoo.decoders name that turns ``archive`` (+ deploy) into ``file``
    input_size: int = 227  # crop the deploy net takes
    classifier: str | None = None  # the ImageNet classifier layer a fine-tune replaces
    top_stage: str | None = None  # first layer of the last stage (what ``-top`` trains)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def download_name(self) -> str:
        """The file the URL (or a mirror) provides: the archive, or the caffemodel itself."""
        return self.archive or self.file

    @property
    def mean_prototxt_path(self) -> str:
        return self.mean.file


def _entry(raw: dict[str, Any], means: dict[str, MeanSpec], source: Path) -> ModelEntry:
    try:
        mean = means[raw["mean"]]
        return ModelEntry(
            name=raw["name"],
            description=raw["description"],
            urls=tuple(raw["urls"]),
            sha1=raw["sha1"],
            sha256=raw.get("sha256"),
            file=raw["file"],
            mean=mean,
            architecture=raw["architecture"],
            num_outputs=raw["num_outputs"],
            deploy=dict(raw["deploy"]),
            homepage=raw.get("homepage", ""),
            note=raw.get("note", ""),
            archive=raw.get("archive"),
            extract=raw.get("extract"),
            files=tuple(raw.get("files", ())),
            decode=raw.get("decode"),
            input_size=int(raw.get("input_size", 227)),
            classifier=raw.get("classifier"),
            top_stage=raw.get("top_stage"),
            raw=raw,
        )
    except KeyError as exc:
        raise DataError(f"{source}: model {raw.get('name', '?')!r} lacks field or mean {exc}") from None


def load_registry(path: str | os.PathLike[str] = REGISTRY_PATH) -> dict[str, ModelEntry]:
    """{name: entry} from a registry JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read model registry ({exc})") from None
    means = {
        name: MeanSpec(name=name, **{**spec, "values": tuple(spec["values"]) if spec.get("values") else None})
        for name, spec in data.get("means", {}).items()
    }
    entries = [_entry(raw, means, path) for raw in data.get("models", [])]
    return {e.name: e for e in entries}


@cache
def registry() -> dict[str, ModelEntry]:
    """The repository's registry (models/registry.json), read once."""
    return load_registry()


def names() -> list[str]:
    return list(registry())


def get(name: str) -> ModelEntry:
    """The entry called ``name``; DataError listing the known names otherwise."""
    try:
        return registry()[name]
    except KeyError:
        raise DataError(f"unknown model {name!r} (known: {', '.join(registry())})") from None


DeployGenerator = Callable[[dict[str, Any], str, "int | None"], caffe_pb2.NetParameter]
DEPLOY_GENERATORS: dict[str, DeployGenerator] = {}


def register_deploy_generator(kind: str, generator: DeployGenerator) -> None:
    """Let a registry entry's ``deploy.generator: kind`` build its deploy net with ``generator(spec, name,
    num_outputs)``. Recipes register theirs (the paper's fine-tuned variants) when imported."""
    DEPLOY_GENERATORS[kind] = generator


def _reference(spec: dict[str, Any], name: str, num_outputs: int | None) -> caffe_pb2.NetParameter:
    """An unmodified CaffeNet-architecture model (CaffeNet, Places205, DeepSentiBank, MVSO)."""
    from pixsent.zoo.caffenet import reference_deploy

    width = spec.get("num_outputs") or num_outputs
    if width is None:
        raise NetError(f"model {name!r}: number of outputs unknown; pass it (read fc8 of the caffemodel)")
    return reference_deploy(int(width), name=f"CaffeNet_{name}")


register_deploy_generator("reference", _reference)
register_deploy_generator("prototxt", lambda spec, name, n: _prototxt(spec, name, n))


def _prototxt(spec: dict[str, Any], name: str, num_outputs: int | None) -> caffe_pb2.NetParameter:
    """A deploy prototxt published with the model (downloaded beside it: ``deploy.prototxt``)."""
    return read_deploy(name)


def deploy_net(name: str, *, num_outputs: int | None = None) -> caffe_pb2.NetParameter:
    """The deploy NetParameter matching a registry model (``num_outputs`` fills an unknown width).

    A generator named by the entry and not registered yet comes from the recipe the entry names
    (``deploy.recipe``: the module ``pixsent.recipes.<recipe>`` registers it when imported).
    """
    entry = get(name)
    spec = entry.deploy
    kind = spec.get("generator")
    if kind not in DEPLOY_GENERATORS and spec.get("recipe"):
        import importlib

        importlib.import_module(f"pixsent.recipes.{spec['recipe']}")
    generator = DEPLOY_GENERATORS.get(kind)
    if generator is None:
        raise NetError(f"model {name!r}: unknown deploy generator {kind!r}")
    return generator(spec, name, num_outputs)


def deploy_path(name: str, models: str | os.PathLike[str] = "models") -> Path:
    """Where the published deploy prototxt of ``name`` lands (``deploy.prototxt`` of its registry entry)."""
    entry = get(name)
    file = entry.deploy.get("prototxt")
    if not file:
        raise NetError(f"model {name!r}: its deploy net is generated, not published as a prototxt")
    return Path(models) / file


def find_deploy(
    name: str, models: str | os.PathLike[str] = "models", mirror: str | os.PathLike | None = None
):
    """The deploy prototxt of ``name``: in ``models``, else in the mirror folder; DataError naming both."""
    path = deploy_path(name, models)
    candidates = [path] + ([Path(mirror) / path.name] if mirror else [])
    # the project's reference copies beside the checkout (tests, CI): shared/models/<folder>/<file>
    shared = Path(os.environ.get("PIXSENT_SHARED", REGISTRY_PATH.parents[2] / "shared"))
    candidates += sorted((shared / "models").glob(f"*/{path.name}"))
    for cand in candidates:
        if cand.is_file():
            return cand
    raise DataError(
        f"deploy prototxt of {name!r} not found at {' or '.join(map(str, candidates))}; "
        f"run `pixsent models fetch {name}` (or pass MIRROR=dir)"
    )


def read_deploy(name: str, models: str | os.PathLike[str] = "models", mirror=None) -> caffe_pb2.NetParameter:
    """The published deploy net of ``name``, upgraded to the current format."""
    from pixsent.formats.prototxt import read_net

    return read_net(find_deploy(name, models, mirror))


def _safe_extract(archive: Path, members: dict[str, str], dest: Path) -> None:
    """Copy the named members of a tar archive to ``dest``/<target> (nothing else, no path tricks)."""
    from pixsent.formats.atomic import atomic_write_bytes

    with tarfile.open(archive) as tar:
        for member_name, target in members.items():
            try:
                member = tar.getmember(member_name)
            except KeyError:
                raise DataError(f"{archive}: member {member_name} not found") from None
            handle = tar.extractfile(member)
            if handle is None or Path(target).name != target:
                raise DataError(
                    f"{archive}: {member_name} is not a regular file or target {target!r} is a path"
                )
            atomic_write_bytes(dest / target, handle.read())


def fetch(
    name: str,
    *,
    dest: str | os.PathLike[str] = "models",
    mirror: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """Download (or copy from ``mirror``) model ``name`` into ``dest``, verified; returns the caffemodel."""
    from pixsent import fetch as fetcher

    entry = get(name)
    dest = Path(dest)
    target = dest / entry.download_name
    checks = dict(
        sha1=entry.sha1,
        sha256=entry.sha256,
        mirror=mirror,
        mirror_name=entry.download_name,
        progress=progress,
    )
    if entry.urls:
        fetcher.fetch_any(list(entry.urls), target, **checks)
    elif mirror is not None and (Path(mirror) / entry.download_name).is_file():
        fetcher.download(str(Path(mirror) / entry.download_name), target, **checks)
    elif not target.is_file():
        raise DataError(
            f"model {name!r}: no public URL known; put {entry.download_name} in {dest} or a mirror folder"
            f" ({entry.homepage})"
        )
    if entry.extract:
        _safe_extract(target, entry.extract, dest)
    for extra in entry.files:
        extra_target = dest / extra["name"]
        extra_checks = dict(
            sha256=extra.get("sha256"), mirror=mirror, mirror_name=extra["name"], progress=progress
        )
        if extra.get("urls"):
            fetcher.fetch_any(list(extra["urls"]), extra_target, **extra_checks)
        elif mirror is not None and (Path(mirror) / extra["name"]).is_file():
            fetcher.download(str(Path(mirror) / extra["name"]), extra_target, **extra_checks)
    if entry.decode:
        from pixsent.zoo.decoders import DECODERS

        out = dest / entry.file
        if not out.is_file() or out.stat().st_mtime < target.stat().st_mtime:
            DECODERS[entry.decode](target, find_deploy(name, dest), out)
    return dest / entry.file
