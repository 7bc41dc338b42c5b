"""A results folder for a cross-validation: the table, each fold's metrics and training log, Figure 6 curves,
resources per fold (training wall time, images/s, peak RSS), and the commands and commit that made it.

Only finished folds (metrics.json present and not a capped smoke run) count; the table says how many folds
it holds, so a run that spans several sittings can be reported as it stands and completed later.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from pixsent.formats.atomic import atomic_write_text
from pixsent.workflow.runs import write_json

_STAMP = re.compile(r"^[IWEF](\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d+)")
_ITER = re.compile(r"Iteration (\d+)")
_MAXRSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")
_WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)")


@dataclass
class Reference:
    """A row printed beside ours (a published figure or a baseline)."""

    label: str
    center: tuple[float, float | None] | None
    oversample: tuple[float, float | None] | None


@dataclass
class ReportConfig:
    title: str
    label: str  # what our row is called (e.g. "SqueezeNet v1.0, paper protocol (pixsent)")
    images_per_iteration: int  # batch x iter_size
    references: list[Reference] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    time_dir: Path | None = None  # GNU time -v outputs fold<N>[suffix].time (each process of a fold)
    note: str = ""
    commit: str | None = None  # the commit whose code trained the folds (default: this checkout's HEAD)


def _log_seconds(log: Path) -> tuple[float | None, int]:
    """(seconds of training, iterations trained) from a training log that may span several processes.

    Each process appends a ``# pixsent:`` line before its glog lines; a segment counts from its first to its
    last glog line, so the time between an interrupted run and its resumption is left out, and iterations
    count from where each segment started (a resumed segment repeats at most the iterations since the
    snapshot it starts from)."""
    seconds = 0.0
    iterations = 0
    year = datetime.now().year
    segments: list[list[tuple[float, int | None]]] = [[]]
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("# pixsent:"):
            segments.append([])
            continue
        m = _STAMP.match(line)
        if not m:
            continue
        mo, d, h, mi, s, frac = m.groups()
        t = datetime(year, int(mo), int(d), int(h), int(mi), int(s)).timestamp() + float("0." + frac)
        it = _ITER.search(line)
        segments[-1].append((t, int(it.group(1)) if it else None))
    for seg in segments:
        if not seg:
            continue
        seconds += seg[-1][0] - seg[0][0]
        its = [i for _, i in seg if i is not None]
        if its:
            iterations += max(its) - min(its)
    return (seconds if any(segments) else None), iterations


def _gnu_times(paths: list[Path]) -> dict:
    """Peak RSS (the largest) and wall time (the sum) of the GNU time -v files of one fold's processes."""
    out: dict = {}
    for path in paths:
        for key, value in _gnu_time(path).items():
            out[key] = max(out.get(key, 0), value) if key == "fold_peak_rss_mib" else out.get(key, 0) + value
    if out.get("fold_wall_s") is not None:
        out["fold_wall_s"] = round(out["fold_wall_s"], 1)
    return out


def _gnu_time(path: Path) -> dict:
    if not path.is_file():
        return {}
    text = path.read_text(errors="replace")
    out = {}
    m = _MAXRSS.search(text)
    if m:
        out["fold_peak_rss_mib"] = round(int(m.group(1)) / 1024, 1)
    m = _WALL.search(text)
    if m:
        h, mi, s = m.groups()
        out["fold_wall_s"] = round(int(h or 0) * 3600 + int(mi) * 60 + float(s), 1)
    return out


def _fmt(score) -> str:
    if score is None:
        return "n/a"
    mean, std = score
    return f"{mean:.3f}" + ("" if std is None else f" ± {std:.3f}")


def collect(cv_dir: Path, out: Path, cfg: ReportConfig) -> dict:
    """Copy and summarise the finished folds under ``cv_dir`` (fold<N>/ run folders) into ``out``."""
    import json

    from pixsent.workflow.plots import plot_logs

    out.mkdir(parents=True, exist_ok=True)
    folds: dict[int, dict] = {}
    for fold_dir in sorted(cv_dir.glob("fold[0-9]*")):
        metrics_path = fold_dir / "metrics.json"
        if not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("capped"):
            continue
        k = int(fold_dir.name.removeprefix("fold"))
        seconds, iterations = _log_seconds(fold_dir / "train.log")
        res = {"train_wall_s": None if seconds is None else round(seconds, 1)}
        if seconds:
            res["train_images_per_s"] = round(iterations * cfg.images_per_iteration / seconds, 2)
        if cfg.time_dir is not None:
            # fold<N>.time, and fold<N><suffix>.time of the processes that resumed it
            tdir = Path(cfg.time_dir)
            res |= _gnu_times(sorted({*tdir.glob(f"fold{k}.time"), *tdir.glob(f"fold{k}[!0-9]*.time")}))
        metrics["resources"] = res
        folds[k] = metrics
        dest = out / f"fold{k}"
        dest.mkdir(exist_ok=True)
        write_json(dest / "metrics.json", metrics)
        for name in (
            "train.log",
            "solver.prototxt",
            "train_val.prototxt",
            "deploy.prototxt",
            "predictions.csv",
        ):
            if (fold_dir / name).is_file():
                shutil.copyfile(fold_dir / name, dest / name)
    summary: dict = {"folds": sorted(folds), "title": cfg.title, "label": cfg.label}
    for mode in ("center", "oversample"):
        accs = np.array([folds[k][f"accuracy_{mode}"] for k in sorted(folds)], dtype=float)
        summary[mode] = {
            "per_fold": accs.tolist(),
            "mean": float(accs.mean()) if len(accs) else None,
            "std": float(accs.std(ddof=0)) if len(accs) else None,
        }
    summary["resources"] = {k: folds[k]["resources"] for k in sorted(folds)}
    summary["commit"] = cfg.commit
    try:
        summary["commit"] = (
            summary["commit"]
            or subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).parent,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        summary["commit"] = None
    if folds:
        plot_logs(
            [cv_dir / f"fold{k}" / "train.log" for k in sorted(folds)],
            out / "curves.png",
            [f"fold {k}" for k in sorted(folds)],
            cfg.title,
        )
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "table.md", render(summary, cfg))
    atomic_write_text(out / "commands.txt", "".join(c + "\n" for c in cfg.commands))
    return summary


def render(summary: dict, cfg: ReportConfig) -> str:
    """Markdown: our row (with how many folds it holds) beside the reference rows, then per-fold lines."""
    n = len(summary["folds"])
    ours = {
        mode: None if summary[mode]["mean"] is None else (summary[mode]["mean"], summary[mode]["std"])
        for mode in ("center", "oversample")
    }
    lines = [
        f"# {cfg.title}",
        "",
        "| model | centre crop | 10-crop oversampling | folds |",
        "| --- | --- | --- | --- |",
        f"| {cfg.label} | {_fmt(ours['center'])} | {_fmt(ours['oversample'])} | {n} of 5 |",
    ]
    lines += [f"| {r.label} | {_fmt(r.center)} | {_fmt(r.oversample)} | |" for r in cfg.references]
    lines += ["", "Mean ± population std over the folds run. Per fold:", ""]
    lines += ["| fold | centre | 10-crop | training wall time | images/s | peak RSS (whole fold process) |"]
    lines += ["| --- | --- | --- | --- | --- | --- |"]
    for i, k in enumerate(summary["folds"]):
        res = summary["resources"][k]
        wall = res.get("train_wall_s")
        rss = res.get("fold_peak_rss_mib")
        lines.append(
            f"| {k} | {summary['center']['per_fold'][i]:.4f} | {summary['oversample']['per_fold'][i]:.4f} | "
            f"{'n/a' if wall is None else f'{wall / 60:.1f} min'} | {res.get('train_images_per_s', 'n/a')} | "
            f"{'n/a' if rss is None else f'{rss:.0f} MiB'} |"
        )
    if cfg.note:
        lines += ["", cfg.note]
    lines += ["", f"Commit: {summary.get('commit')}. Commands: commands.txt."]
    return "\n".join(lines) + "\n"
