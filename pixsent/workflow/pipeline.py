"""One fold, a cross-validation, or the whole paper: splits -> LMDBs -> prototxts -> training -> evaluation.

Every step records a stamp (pixsent.workflow.runs) and is skipped when its inputs are unchanged and its
outputs exist; training that was interrupted resumes from the newest complete snapshot
(``-snapshot X.solverstate``).
Training runs as a child process (``pixsent caffe train``, or a real Caffe with ENGINE=caffe) inside the run
folder, so relative paths resolve as Caffe resolves them (against the working directory) and a crash or a
kill leaves the snapshots written so far. What is trained is a *recipe* from a registry (``get_recipe``):
``paper`` (pixsent.recipes.paper) or ``demo`` (pixsent.recipes.demo), or any module of pixsent.recipes.

``batch`` x ``iter_size`` (BATCH=, ITER_SIZE=) is the paper recipe's effective batch: Caffe accumulates
``iter_size`` passes per update, so 64 x 4 trains with the solver of 256 in a quarter of the memory.
``max_iter_cap`` (MAX_ITER=) lowers the solver's max_iter for a smoke run of any recipe: the cap is written
into solver.prototxt with a comment, recorded in the prototxt/train stamps and in metrics.json
(``capped``, ``max_iter``, ``full_max_iter``), and a later call without it resumes from the capped run's
snapshot and trains on to the full max_iter.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pixsent.errors import DataError, DivergedError, NetError
from pixsent.workflow import evaluate as ev
from pixsent.workflow.runs import (
    RunPaths,
    content_fingerprint,
    cv_dir,
    file_fingerprint,
    is_done,
    mark_done,
    read_stamp,
    write_json,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("PIXSENT_SHARED", REPO.parent / "shared"))


@dataclass
class FoldConfig:
    """Everything `make foldN` can override (VARIANT, SUBSET, INIT, GPU, ENGINE, DATA, MIRROR, BATCH,
    ITER_SIZE, MAX_ITER)."""

    variant: str = "fc8_twitter"
    subset: str = "five"
    init: str = "caffenet"
    fold: int = 1
    runs: Path = Path("runs")
    images: Path | None = None  # DATA: folder of the images the split files name
    splits: Path | None = None  # folder with <subset>_agrees/test<k>/{train,test}.txt
    lmdb_root: Path = Path("data/lmdb")
    mirror: Path | None = None
    models: Path = Path("models")
    weights: Path | None = None  # explicit initialisation caffemodel (overrides the registry)
    gpu: str | None = None  # None: CPU; "0": cuda:0; "all" or "0,1": data parallel
    engine: str = "pixsent"  # or "caffe": hand the same files to a real BVLC caffe
    recipe: str = "paper"
    workers: int = 2
    progress: bool = True
    echo: bool = True  # copy the training log to stderr while training
    on_log_line: Callable[[str], None] | None = None  # test hook: called with every training log line
    eval_batch: int = 4
    batch: int = 256  # BATCH: TRAIN images per forward/backward pass (paper recipe; the paper's 256)
    iter_size: int = 1  # ITER_SIZE: passes accumulated per update; epochs count batch x iter_size images
    max_iter_cap: int | None = None  # MAX_ITER: smoke-run cap on the solver's max_iter (recorded as capped)
    snapshot_every: int | None = None  # SNAPSHOT: iterations between snapshots (recipe default if None)
    extra: dict[str, Any] = field(default_factory=dict)  # recipe-specific settings

    def __post_init__(self) -> None:
        for name in ("batch", "iter_size", "max_iter_cap", "snapshot_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise NetError(f"{name} must be a whole number >= 1, got {value!r}")

    def run_paths(self) -> RunPaths:
        return RunPaths(Path(self.runs).resolve(), self.subset, self.variant, self.init, self.fold)

    def solver_knobs(self) -> dict[str, int]:
        """BATCH / ITER_SIZE / MAX_ITER where they differ from the paper's defaults (so stamps of runs made
        with the defaults keep their digests)."""
        knobs = {
            "batch": self.batch,
            "iter_size": self.iter_size,
            "max_iter_cap": self.max_iter_cap,
            "snapshot_every": self.snapshot_every,
        }
        defaults = {"batch": 256, "iter_size": 1, "max_iter_cap": None, "snapshot_every": None}
        return {k: v for k, v in knobs.items() if v != defaults[k]}


class Recipe(Protocol):
    """What a pipeline trains: image size, mean, initial weights, and the prototxts it writes."""

    def image_size(self, cfg: FoldConfig) -> int: ...

    def train_mean(self, cfg: FoldConfig, lmdb_dir: Path) -> Path | None: ...

    def eval_mean(self, cfg: FoldConfig, lmdb_dir: Path) -> np.ndarray | None: ...

    def init_weights(self, cfg: FoldConfig) -> Path | None: ...

    def write_files(
        self,
        cfg: FoldConfig,
        run: RunPaths,
        *,
        train_source: Path,
        test_source: Path,
        mean_file: Path | None,
        train_size: int,
        test_size: int,
    ) -> dict[str, Path]: ...


RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, recipe: Recipe) -> None:
    RECIPES[name] = recipe


def get_recipe(name: str) -> Recipe:
    """The recipe registered as ``name``; a recipe not registered yet is looked up as the module
    ``pixsent.recipes.<name>``, which registers itself when imported (a plug-in found by name)."""
    if name not in RECIPES:
        import importlib

        try:
            importlib.import_module(f"pixsent.recipes.{name}")
        except ModuleNotFoundError as exc:
            if exc.name is None or not exc.name.startswith("pixsent.recipes"):
                raise
    if name not in RECIPES:
        raise NetError(f"unknown recipe {name!r} (known: {', '.join(sorted(RECIPES))})")
    return RECIPES[name]


def say(msg: str) -> None:
    print(f"[pixsent] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- steps


def find_split_files(cfg: FoldConfig) -> tuple[Path, Path]:
    """The fold's train/test lists: --splits, ./splits, MIRROR(/splits), then $PIXSENT_SHARED/data/splits."""
    rel = Path(f"{cfg.subset}_agrees") / f"test{cfg.fold}"
    roots = [
        cfg.splits,
        Path("splits"),
        cfg.mirror,
        cfg.mirror and Path(cfg.mirror) / "splits",
        SHARED / "data/splits",
    ]
    for root in roots:
        if (
            root is not None
            and (Path(root) / rel / "train.txt").is_file()
            and (Path(root) / rel / "test.txt").is_file()
        ):
            return Path(root) / rel / "train.txt", Path(root) / rel / "test.txt"
    raise DataError(
        f"split files {rel}/{{train,test}}.txt not found; run `pixsent splits fetch --subset {cfg.subset}` "
        "(or pass MIRROR=dir / --splits DIR)"
    )


def check_fold_files(train: Path, test: Path) -> None:
    """DataError with the first problem `pixsent splits check` finds in a fold's files (FILE:LINE: ...)."""
    from pixsent.data.splits import check_fold

    problems = check_fold(train, test)
    if problems:
        more = f"{len(problems) - 1} more problem(s); " if len(problems) > 1 else ""
        raise DataError(f"{problems[0]} ({more}`pixsent splits check {train.parent.parent}` lists them)")


def step_splits(cfg: FoldConfig, run: RunPaths) -> str:
    """Copy the fold's split files into the run folder, so the run records exactly what it used; files that
    `pixsent splits check` would reject stop the fold here, with its messages."""
    train, test = find_split_files(cfg)
    check_fold_files(train, test)
    inputs = {"train": file_fingerprint(train), "test": file_fingerprint(test)}
    if is_done(run, "splits", inputs):
        return "cached"
    run.dir.mkdir(parents=True, exist_ok=True)
    for src, name in ((train, "train.txt"), (test, "test.txt")):
        tmp = run.dir / f".{name}.tmp"
        shutil.copyfile(src, tmp)
        tmp.replace(run.dir / name)
    mark_done(run, "splits", inputs, ["train.txt", "test.txt"], source=str(train.parent))
    return "done"


def image_root(cfg: FoldConfig, list_file: Path | None = None) -> Path:
    """DATA/twitter/images, DATA/images, DATA, data/twitter/images, MIRROR/images or MIRROR/twitter/images:
    the first holding the first image ``list_file`` names (DATA=data/twitter must not stop at a folder that
    only holds images/), else the first that exists; an error naming `pixsent data fetch` when none does."""
    cands = (
        cfg.images and Path(cfg.images) / "twitter/images",
        cfg.images and Path(cfg.images) / "images",
        cfg.images,
        Path("data/twitter/images"),
        cfg.mirror and Path(cfg.mirror) / "images",
        cfg.mirror and Path(cfg.mirror) / "twitter/images",
    )
    found = [Path(c) for c in cands if c is not None and Path(c).is_dir()]
    probe = _first_image(list_file) if list_file is not None else None
    for cand in found:
        if probe is not None and (cand / probe).is_file():
            return cand
    if found:
        return found[0]  # the images may be partly missing: convert_imageset reports what it skips
    tried = ", ".join(dict.fromkeys(str(c) for c in cands if c is not None))  # each path once, in order
    raise DataError(
        f"image folder not found (tried {tried}); pass DATA=dir / --data DIR, or run `pixsent data fetch` "
        "(or pass MIRROR=dir)"
    )


def _first_image(list_file: Path) -> str | None:
    """The path on the first non-empty line of an image list (None when it has none); a lenient probe, so
    a malformed later line is left for convert_imageset to report with its line number."""
    for line in Path(list_file).read_text().splitlines():
        if line.strip():
            return line.rsplit(None, 1)[0] if len(line.split()) > 1 else line.strip()
    return None


def lmdb_dir(cfg: FoldConfig) -> Path:
    return Path(cfg.lmdb_root) / f"{cfg.subset}_agrees" / f"fold{cfg.fold}"


def step_lmdb(cfg: FoldConfig, run: RunPaths) -> str:
    """Train (shuffled, seeded) and test LMDBs of the fold, resized square as the paper (cached by a
    stamp). Images that cannot be read are skipped, as Caffe's convert_imageset does, and named (list file,
    line, path) on stderr and in the stamps, also when a cached build is reused."""
    from pixsent.data.imageset import convert_imageset
    from pixsent.workflow.lmdb_key import lmdb_key

    recipe = get_recipe(cfg.recipe)
    size = recipe.image_size(cfg)
    root = image_root(cfg, run.dir / "train.txt")
    out = lmdb_dir(cfg)
    inputs = {  # by content (pixsent.workflow.lmdb_key), so every run folder of the fold shares one build
        **lmdb_key(run.dir / "train.txt", run.dir / "test.txt", root, size=size, shuffle_seed=cfg.fold),
        "dbs": [file_fingerprint(out / "train_lmdb"), file_fingerprint(out / "test_lmdb")],
    }
    stamp_inputs = {k: v for k, v in inputs.items() if k != "dbs"}
    if is_done(run, "lmdb", inputs):
        _say_skipped(read_stamp(run, "lmdb").info.get("skipped", []), out)
        return "cached"
    if (out / "train_lmdb").is_dir() and (out / "test_lmdb").is_dir() and _lmdb_stamp_ok(out, stamp_inputs):
        skipped = _lmdb_skipped(out)
        _say_skipped(skipped, out)
        mark_done(run, "lmdb", inputs, [], lmdb=str(out), skipped=skipped)  # built by another run
        return "cached"
    out.mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
    for name, shuffle in (("train", True), ("test", False)):
        report = convert_imageset(
            root,
            run.dir / f"{name}.txt",
            out / f"{name}_lmdb",
            resize=(size, size),
            shuffle=shuffle,
            seed=cfg.fold,
            workers=cfg.workers,
            overwrite=True,
            progress=cfg.progress,
        )
        skipped += report.skipped
    write_json(out / "pipeline-stamp.json", {"digest": _digest(stamp_inputs), "skipped": skipped})
    inputs["dbs"] = [file_fingerprint(out / "train_lmdb"), file_fingerprint(out / "test_lmdb")]
    _say_skipped(skipped, out)
    mark_done(run, "lmdb", inputs, [], lmdb=str(out), skipped=skipped)
    return "done"


def _lmdb_skipped(out: Path) -> list[str]:
    """The images a cached LMDB build skipped, as its pipeline stamp recorded them."""
    import json

    return list(json.loads((out / "pipeline-stamp.json").read_text()).get("skipped", []))


def _say_skipped(skipped: list[str], out: Path) -> None:
    """Name every image left out of the fold's LMDBs (``LIST:LINE: path``)."""
    if skipped:
        say(f"lmdb {out}: {len(skipped)} image(s) missing or unreadable, left out as Caffe does:")
        for line in skipped:
            say(f"  {line}")


def _digest(obj: dict) -> str:
    from pixsent.workflow.runs import digest

    return digest(obj)


def _lmdb_stamp_ok(out: Path, inputs: dict) -> bool:
    import json

    stamp = out / "pipeline-stamp.json"
    return stamp.exists() and json.loads(stamp.read_text()).get("digest") == _digest(inputs)


def _count_lines(path: Path) -> int:
    return sum(1 for line in Path(path).read_text().splitlines() if line.strip())


def step_prototxt(cfg: FoldConfig, run: RunPaths) -> str:
    """The run's own train_val/deploy/solver prototxts (absolute LMDB and mean paths, relative snapshot
    prefix)."""
    recipe = get_recipe(cfg.recipe)
    out = lmdb_dir(cfg).resolve()
    mean_file = recipe.train_mean(cfg, out)
    sizes = (_count_lines(run.dir / "train.txt"), _count_lines(run.dir / "test.txt"))
    inputs = {
        "variant": cfg.variant,
        "init": cfg.init,
        "recipe": cfg.recipe,
        "lmdb": str(out),
        "sizes": sizes,
        "mean": str(mean_file),
        "extra": cfg.extra,
        **cfg.solver_knobs(),
        **({"weights": str(cfg.weights)} if cfg.weights is not None else {}),  # fc9_twitter reads its fc8
    }
    if is_done(run, "prototxt", inputs):
        return "cached"
    files = recipe.write_files(
        cfg,
        run,
        train_source=out / "train_lmdb",
        test_source=out / "test_lmdb",
        mean_file=None if mean_file is None else Path(mean_file),
        train_size=sizes[0],
        test_size=sizes[1],
    )
    full = max_iter(run)
    if cfg.max_iter_cap is not None and cfg.max_iter_cap < full:
        cap_solver(run.solver, cfg.max_iter_cap, full)
    done = max_iter(run)
    say(
        f"{run.name} fold {run.fold}: max_iter {done}"
        + (f" (CAPPED, full run {full})" if done < full else "")
    )
    mark_done(
        run,
        "prototxt",
        inputs,
        [Path(p).name for p in files.values()],
        max_iter=done,
        full_max_iter=full,
        capped=done < full,
    )
    return "done"


_MAX_ITER_LINE = re.compile(r"^max_iter:\s*\d+\s*$", re.MULTILINE)


def cap_solver(solver: Path, cap: int, full: int) -> None:
    """Lower a written solver's max_iter to ``cap`` for a smoke run, with a comment saying it is not the
    recipe's training (the rest of the solver, stepsize and snapshot included, is left as computed)."""
    from pixsent.formats.atomic import atomic_write_text

    text = Path(solver).read_text(encoding="utf-8")
    found = list(_MAX_ITER_LINE.finditer(text))
    if len(found) != 1:
        raise NetError(f"{solver}: expected one 'max_iter: N' line to cap, found {len(found)}")
    note = (
        f"# CAPPED by --max-iter {cap} (MAX_ITER={cap}), a smoke run: the recipe's max_iter is {full}; "
        "a later call without the cap resumes and trains on\n"
    )
    m = found[0]
    atomic_write_text(Path(solver), text[: m.start()] + note + f"max_iter: {cap}" + text[m.end() :])


def max_iter(run: RunPaths) -> int:
    from pixsent.formats.prototxt import read_solver

    return int(read_solver(run.solver).max_iter)


def cap_info(run: RunPaths) -> dict:
    """{max_iter, full_max_iter, capped} of the run's current solver, from the prototxt stamp."""
    stamp = read_stamp(run, "prototxt")
    done = max_iter(run)
    full = int(stamp.info.get("full_max_iter", done)) if stamp is not None else done
    return {"max_iter": done, "full_max_iter": full, "capped": done < full}


def train_command(cfg: FoldConfig, run: RunPaths, resume: Path | None, weights: Path | None) -> list[str]:
    """argv of the training child: `pixsent caffe train` (ENGINE=caffe hands it to a real caffe) or data
    parallel."""
    if cfg.gpu is not None and (cfg.gpu == "all" or "," in cfg.gpu or cfg.gpu.startswith("cpu")):
        cmd = [
            sys.executable,
            "-m",
            "pixsent.workflow.parallel",
            "--solver",
            run.solver.name,
            "--devices",
            cfg.gpu,
        ]
    else:
        cmd = [sys.executable, "-m", "pixsent", "caffe", "train", "-solver", run.solver.name]
        if cfg.gpu is not None:
            cmd += ["-gpu", cfg.gpu]
    if resume is not None:
        cmd += ["-snapshot", str(resume.relative_to(run.dir))]
    elif weights is not None:
        cmd += ["-weights", str(Path(weights).resolve())]
    return cmd


def step_train(cfg: FoldConfig, run: RunPaths) -> str:
    """Train to max_iter, resuming from the newest snapshot when a previous call was interrupted."""
    recipe = get_recipe(cfg.recipe)
    info = cap_info(run)
    final = run.snapshot_model(info["max_iter"])
    weights = recipe.init_weights(cfg)
    inputs = {
        "solver": content_fingerprint(run.solver),
        "train_val": content_fingerprint(run.train_val),
        "weights": str(weights) if weights else None,
        "engine": cfg.engine,
        **({"max_iter_cap": cfg.max_iter_cap} if cfg.max_iter_cap is not None else {}),
    }
    if is_done(run, "train", inputs) and final.exists():
        return "cached"
    if is_done(run, "diverged", inputs):  # the same solver, net and weights diverge again: say so at once
        said = read_stamp(run, "diverged").info.get("error", "")
        raise DivergedError(
            f"{said} (recorded in {run.stamps / 'diverged.json'}; delete it to train these inputs again)"
        )
    if final.exists() and run.newest_solverstate() is not None:
        if read_stamp(run, "train") is None:  # finished before stamps existed (or the stamp was lost): adopt
            mark_done(run, "train", inputs, [final], **info)
            return "cached"
        # finished with other inputs (solver, net, weights or engine changed): keep it aside, train anew
        stale = run.dir / f"snapshots.stale-{time.strftime('%Y%m%d-%H%M%S')}"
        run.snapshots.rename(stale)
        say(f"{run.name} fold {run.fold}: inputs changed since training; old snapshots moved to {stale.name}")
    # a state at or past max_iter (e.g. MAX_ITER below a finished run) cannot be resumed towards it
    resume = run.newest_solverstate(before=info["max_iter"])
    forget_evaluation(run)
    run.snapshots.mkdir(parents=True, exist_ok=True)
    cmd = train_command(cfg, run, resume, weights)
    say(("resuming from " + resume.name) if resume else f"training {run.name} fold {run.fold}")
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    if cfg.engine == "caffe":
        env["ENGINE"] = "caffe"
    try:
        _run_logged(cmd, run, env, cfg)
    except DivergedError as exc:
        mark_done(run, "diverged", inputs, [], error=str(exc))
        raise
    if not final.exists():
        raise NetError(f"{run.log}: training ended without {final.name}; see the log")
    mark_done(run, "train", inputs, [final], **info)
    return "done"


def forget_evaluation(run: RunPaths) -> None:
    """Drop metrics/predictions of earlier weights before training changes them (a capped run's metrics
    must not stand for the full run's while it trains on, nor be read by `pixsent table`)."""
    for path in (run.stamps / "evaluate.json", run.metrics, run.predictions_csv, run.predictions_npz):
        path.unlink(missing_ok=True)


def _run_logged(cmd: list[str], run: RunPaths, env: dict[str, str], cfg: FoldConfig) -> None:
    """Run the training child in the run folder, appending its output to train.log (and echoing it).

    The child shares the run folder's lock (so the folder stays locked while it lives, also when this
    process is killed first) and is told to log to train.log itself should its output pipe close."""
    from pixsent.formats.locks import held

    lock = held(run.dir)
    env = dict(env, PIXSENT_LOG_FALLBACK=str(run.log.resolve()))
    with open(run.log, "a", encoding="utf-8") as log:
        log.write(f"# pixsent: {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=run.dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            pass_fds=(lock.fd,) if lock is not None else (),
        )
        if lock is not None:
            lock.add_holder(proc.pid, "trainer")
        try:
            assert proc.stdout is not None
            error = ""  # the trainer's own one-line error, if it printed one (e.g. a full disk)
            for line in proc.stdout:
                if ": error: " in line and line.startswith("pixsent "):
                    error = line.split(": error: ", 1)[1].strip()
                log.write(line)
                log.flush()
                if cfg.echo:
                    sys.stderr.write(line)
                if cfg.on_log_line is not None:
                    cfg.on_log_line(line)
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if rc != 0:
        said = f": {error}" if error else "; see the log"
        if rc == DivergedError.exit_status and cfg.engine == "pixsent":  # Caffe itself trains on through NaN
            raise DivergedError(f"{run.log}: training diverged{said}")
        raise NetError(f"{run.log}: training exited with status {rc}{said}")


def step_evaluate(cfg: FoldConfig, run: RunPaths) -> str:
    """Centre-crop and 10-crop predictions of the test fold with the final weights, and the fold's metrics."""
    recipe = get_recipe(cfg.recipe)
    info = cap_info(run)
    weights = run.snapshot_model(info["max_iter"])
    mean = recipe.eval_mean(cfg, lmdb_dir(cfg))
    size = recipe.image_size(cfg)
    inputs = {
        "weights": file_fingerprint(weights),
        "deploy": file_fingerprint(run.deploy),
        "test": file_fingerprint(run.dir / "test.txt"),
        "size": size,
        "mean": None if mean is None else float(np.asarray(mean, dtype=np.float64).sum()),
    }
    if is_done(run, "evaluate", inputs):
        return "cached"
    ecfg = ev.EvalConfig(
        image_dims=(size, size),
        mean=mean,
        images_per_batch=cfg.eval_batch,
        device=_device(cfg),
        progress=cfg.progress,
    )
    pred = ev.evaluate_list(
        run.deploy, weights, image_root(cfg, run.dir / "test.txt"), run.dir / "test.txt", ecfg
    )
    ev.save_predictions(pred, run.predictions_csv, run.predictions_npz)
    metrics = ev.fold_metrics(pred) | {
        "subset": cfg.subset,
        "variant": cfg.variant,
        "init": cfg.init,
        "fold": cfg.fold,
        "weights": weights.name,
        **info,
    }
    ev.write_metrics(run.metrics, metrics)
    mark_done(run, "evaluate", inputs, [run.predictions_csv, run.predictions_npz, run.metrics])
    return "done"


def _device(cfg: FoldConfig) -> str:
    return f"cuda:{cfg.gpu}" if cfg.gpu is not None and cfg.gpu.isdigit() else "cpu"


def _step_lock(cfg: FoldConfig, name: str):
    """The fold's LMDB folder is shared by every run folder of the fold: one pipeline builds it while the
    others wait, then find it cached."""
    import contextlib
    import errno

    if name != "lmdb":
        return contextlib.nullcontext()
    from pixsent.formats.locks import acquire

    try:
        return acquire(lmdb_dir(cfg).resolve(), "pipeline building the fold's LMDBs", wait=True, say=say)
    except OSError as exc:  # LMDBs on read-only media: nobody can build there, nothing to guard
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        return contextlib.nullcontext()


STEPS: list[tuple[str, Callable[[FoldConfig, RunPaths], str]]] = [
    ("splits", step_splits),
    ("lmdb", step_lmdb),
    ("prototxt", step_prototxt),
    ("train", step_train),
    ("evaluate", step_evaluate),
]


def run_fold(cfg: FoldConfig) -> dict:
    """Run every step of one fold (skipping what is done) and return its metrics."""
    import json

    from pixsent.formats.locks import acquire

    run = cfg.run_paths()
    run.dir.mkdir(parents=True, exist_ok=True)
    with acquire(run.dir, "pixsent pipeline", say=say):  # one pipeline (and its trainer) per run folder
        for name, step in STEPS:
            with _step_lock(cfg, name):
                status = step(cfg, run)
            say(f"{run.subset}/{run.name}/fold{run.fold}: {name} {status}")
        metrics = json.loads(run.metrics.read_text())
    capped = (
        f" after {metrics['max_iter']} of {metrics['full_max_iter']} iterations (CAPPED smoke run)"
        if metrics.get("capped")
        else ""
    )
    say(
        f"fold {cfg.fold}: accuracy {metrics['accuracy_center']:.4f} (centre), "
        f"{metrics['accuracy_oversample']:.4f} (10-crop){capped}"
    )
    return metrics


def run_cv(cfg: FoldConfig, folds: range = range(1, 6)) -> dict:
    """All folds of one configuration, then cv.json with mean ± std (population) per evaluation mode."""
    from dataclasses import replace

    results = {k: run_fold(replace(cfg, fold=k)) for k in folds}
    summary = ev.cv_summary(results) | {"subset": cfg.subset, "variant": cfg.variant, "init": cfg.init}
    capped = [k for k, m in results.items() if m.get("capped")]
    if capped:
        summary["capped_folds"] = capped  # smoke runs: not the paper's training
    write_json(cv_dir(Path(cfg.runs), cfg.subset, cfg.variant, cfg.init) / "cv.json", summary)
    for mode in ("center", "oversample"):
        s = summary[mode]
        say(
            f"{cfg.subset}/{cfg.variant}-{cfg.init} {mode}: "
            f"{s['mean']:.4f} ± {s['std']:.4f} over {len(folds)} folds"
        )
    return summary
