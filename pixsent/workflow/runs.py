"""Run folders (runs/<subset>/<variant>-<init>/fold<N>/) and the step stamps that make the pipeline resumable.

A stamp is a small JSON file under ``<run>/stamps/<step>.json`` holding a digest of the step's inputs; a step
is skipped when its stamp exists, its digest matches and every output it lists still exists.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUBSETS = ("five", "four", "three")
_SNAP_RE = re.compile(r"_iter_(\d+)\.solverstate$")


@dataclass(frozen=True)
class RunPaths:
    """Every file one fold run uses or produces, in one folder."""

    root: Path
    subset: str
    variant: str
    init: str
    fold: int

    @property
    def name(self) -> str:
        return f"{self.variant}-{self.init}"

    @property
    def dir(self) -> Path:
        return Path(self.root) / self.subset / self.name / f"fold{self.fold}"

    @property
    def train_val(self) -> Path:
        return self.dir / "train_val.prototxt"

    @property
    def deploy(self) -> Path:
        return self.dir / "deploy.prototxt"

    @property
    def solver(self) -> Path:
        return self.dir / "solver.prototxt"

    @property
    def log(self) -> Path:
        return self.dir / "train.log"

    @property
    def snapshots(self) -> Path:
        return self.dir / "snapshots"

    @property
    def snapshot_prefix(self) -> str:
        """Relative to the run folder, which is the working directory training runs in (as Caffe resolves
        it)."""
        return f"snapshots/{self.variant}"

    @property
    def predictions_csv(self) -> Path:
        return self.dir / "predictions.csv"

    @property
    def predictions_npz(self) -> Path:
        return self.dir / "predictions.npz"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def stamps(self) -> Path:
        return self.dir / "stamps"

    def snapshot_model(self, iteration: int) -> Path:
        return self.dir / f"{self.snapshot_prefix}_iter_{iteration}.caffemodel"

    def solverstates(self) -> list[tuple[int, Path]]:
        """(iteration, path) of every complete snapshot, oldest first (a state without its caffemodel is
        ignored)."""
        found = []
        if self.snapshots.is_dir():
            for p in self.snapshots.glob("*.solverstate"):
                m = _SNAP_RE.search(p.name)
                if m and p.with_suffix(".caffemodel").exists():
                    found.append((int(m.group(1)), p))
        return sorted(found)

    def newest_solverstate(self, before: int | None = None) -> Path | None:
        """The newest complete snapshot's .solverstate (only those of an iteration < ``before`` if given)."""
        states = [(it, p) for it, p in self.solverstates() if before is None or it < before]
        return states[-1][1] if states else None


def cv_dir(root: Path, subset: str, variant: str, init: str) -> Path:
    """Folder holding the five fold runs of one configuration and its cv.json summary."""
    return Path(root) / subset / f"{variant}-{init}"


def digest(inputs: dict[str, Any]) -> str:
    """A stable sha256 of a JSON-able description of a step's inputs (paths are described by size and
    mtime)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Cheap identity of a file or folder for stamps: size and mtime (content hashing would cost minutes
    on LMDBs)."""
    p = Path(path)
    if not p.exists():
        return {"path": str(p), "missing": True}
    if p.is_dir():
        items = sorted((q for q in p.rglob("*") if q.is_file() and q.name != "lock.mdb"), key=str)
        return {"path": str(p), "files": [(q.name, q.stat().st_size, q.stat().st_mtime_ns) for q in items]}
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime": st.st_mtime_ns}


def content_fingerprint(path: Path) -> dict[str, Any]:
    """Identity of a small file by its bytes (prototxts): regenerating identical text is no change."""
    p = Path(path)
    if not p.is_file():
        return {"path": str(p), "missing": True}
    return {"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}


@dataclass
class Stamp:
    """Record that a step finished with given inputs and outputs."""

    step: str
    inputs_digest: str
    outputs: list[str] = field(default_factory=list)
    finished: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def read_stamp(run: RunPaths, step: str) -> Stamp | None:
    path = run.stamps / f"{step}.json"
    if not path.exists():
        return None
    try:
        return Stamp(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def is_done(run: RunPaths, step: str, inputs: dict[str, Any]) -> bool:
    """True when ``step`` has a stamp for exactly these inputs and all its outputs still exist."""
    stamp = read_stamp(run, step)
    if stamp is None or stamp.inputs_digest != digest(inputs):
        return False
    return all((run.dir / o).exists() for o in stamp.outputs)


def mark_done(
    run: RunPaths, step: str, inputs: dict[str, Any], outputs: list[Path | str], **info: Any
) -> Stamp:
    """Write the stamp of a finished step atomically (outputs stored relative to the run folder)."""
    rel = [
        str(Path(o).resolve().relative_to(run.dir.resolve())) if Path(o).is_absolute() else str(o)
        for o in outputs
    ]
    stamp = Stamp(step, digest(inputs), rel, time.time(), info)
    write_json(run.stamps / f"{step}.json", stamp.__dict__)
    return stamp


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (a temporary of this process in the same folder, then rename; a full disk is a
    one-line error naming ``path``)."""
    from pixsent.formats.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def run_mean(train_val: Path) -> str | None:
    """The mean the TEST-phase data layer of a run's train_val subtracts, as a ``--mean`` spec: 'B,G,R' for
    ``mean_value`` (SqueezeNet, open_nsfw), the ``mean_file`` path for a mean image, None for neither. What
    a fold's snapshot saw at test time, so predictions and probes from it subtract the same."""
    from pixsent.caffe.proto import caffe_pb2
    from pixsent.formats.prototxt import read_net

    for layer in read_net(train_val).layer:
        if any(r.HasField("phase") and r.phase != caffe_pb2.TEST for r in layer.include):
            continue
        if not layer.HasField("transform_param"):
            continue
        t = layer.transform_param
        if len(t.mean_value):
            values = list(t.mean_value) * (3 if len(t.mean_value) == 1 else 1)
            return ",".join(f"{v:g}" for v in values)
        if t.mean_file:
            return t.mean_file
    return None


def run_folder_of(weights: Path) -> Path | None:
    """The fold run folder holding a snapshot (``<fold>/snapshots/<name>.caffemodel`` beside a
    ``train_val.prototxt``), or None."""
    folder = Path(weights).resolve().parent
    if folder.name == "snapshots" and (folder.parent / "train_val.prototxt").is_file():
        return folder.parent
    return None
