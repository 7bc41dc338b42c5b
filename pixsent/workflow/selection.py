"""Choosing a configuration on the training folds only, through inner validation splits.

For an outer fold k the training list is split, stratified by label and seeded, into inner-train and
inner-validation lists, written as the split files ``<root>/<subset>_agrees/test<k>/{train,test}.txt``; the
unchanged fold workflow then trains each candidate on inner-train and evaluates it on the inner validation
images. The outer fold's test list is never read, so a configuration chosen here can be reported on the
outer test folds without having seen them. Candidates are variants (and recipe settings) of one recipe;
the choice is the best mean inner-validation accuracy (10-crop, ties to the earlier candidate). A candidate
whose training diverges (NaN or infinite loss) is recorded as such and cannot be chosen; the others go on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pixsent.data.imagelist import read_image_list
from pixsent.errors import DataError, DivergedError, NetError
from pixsent.formats.atomic import atomic_write_text
from pixsent.workflow.pipeline import FoldConfig, find_split_files, run_fold, say
from pixsent.workflow.runs import write_json

VAL_FRACTION = 0.2
SEED = 1604


@dataclass(frozen=True)
class Candidate:
    """One configuration to compare: a variant and recipe settings (FoldConfig.extra)."""

    variant: str
    extra: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        return self.variant + "".join(f"+{k}={v}" for k, v in self.extra)


def inner_split(
    train_list: Path, out_dir: Path, *, val_fraction: float = VAL_FRACTION, seed: int = SEED
) -> tuple[Path, Path]:
    """Write ``out_dir``/train.txt and test.txt: a stratified split of ``train_list`` (lines kept verbatim
    and in their order); every label keeps at least one image on each side."""
    entries = read_image_list(train_list)
    if len(entries) < 4:
        raise DataError(f"{train_list}: {len(entries)} images, too few for an inner validation split")
    rng = np.random.RandomState(seed)
    labels = np.array([e.label for e in entries])
    val = np.zeros(len(entries), dtype=bool)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        take = min(len(idx) - 1, max(1, round(len(idx) * val_fraction)))
        val[rng.choice(idx, size=take, replace=False)] = True
    lines = [f"{e.path} {e.label}\n" for e in entries]
    atomic_write_text(out_dir / "train.txt", "".join(x for x, v in zip(lines, val) if not v))
    atomic_write_text(out_dir / "test.txt", "".join(x for x, v in zip(lines, val) if v))
    return out_dir / "train.txt", out_dir / "test.txt"


def select(
    cfg: FoldConfig,
    candidates: list[Candidate],
    folds: list[int],
    root: Path,
    *,
    val_fraction: float = VAL_FRACTION,
) -> dict:
    """Train every candidate on the inner splits of ``folds`` under ``root`` and return (and write
    ``root``/selection.json) the inner accuracies and the chosen candidate."""
    if not candidates:
        raise DataError("select: no candidate configurations")
    splits = root / "splits"
    for k in folds:
        outer_train, _ = find_split_files(replace(cfg, fold=k))
        inner = splits / f"{cfg.subset}_agrees" / f"test{k}"
        inner_split(outer_train, inner, val_fraction=val_fraction, seed=SEED + k)
    table: dict[str, dict[str, dict]] = {}
    for cand in candidates:
        per_fold = {}
        for k in folds:
            fcfg = replace(
                cfg,
                variant=cand.variant,
                extra={**cfg.extra, **dict(cand.extra)},
                fold=k,
                splits=splits,
                runs=root / "runs",
                lmdb_root=root / "lmdb",
            )
            try:
                metrics = run_fold(fcfg)
            except DivergedError as exc:
                say(f"{cand.label} fold {k}: diverged, not a candidate any more ({exc})")
                per_fold[str(k)] = {"diverged": str(exc)}
                break
            per_fold[str(k)] = {m: metrics[f"accuracy_{m}"] for m in ("center", "oversample")}
        table[cand.label] = per_fold
    means = {label: _mean_oversample(per_fold) for label, per_fold in table.items()}
    diverged = [label for label, mean in means.items() if mean is None]
    if len(diverged) == len(means):
        raise NetError(f"select: every candidate diverged ({', '.join(means)}); see {root / 'runs'}")
    finished = [label for label in means if label not in diverged]
    chosen = max(finished, key=lambda label: (means[label], -list(means).index(label)))
    result = {
        "what": "inner validation of the training folds only (outer test folds never read)",
        "subset": cfg.subset,
        "init": cfg.init,
        "folds": folds,
        "val_fraction": val_fraction,
        "seed": SEED,
        "inner_accuracy": table,
        "mean_inner_accuracy_oversample": means,
        "chosen": chosen,
    }
    if diverged:
        result["diverged"] = diverged
    write_json(root / "selection.json", result)
    say(f"selection on inner splits of folds {folds}: " + json.dumps(means) + f" -> {chosen}")
    return result


def _mean_oversample(per_fold: dict[str, dict]) -> float | None:
    """A candidate's mean 10-crop inner accuracy, or None when one of its folds diverged."""
    if any("diverged" in v for v in per_fold.values()):
        return None
    return float(np.mean([v["oversample"] for v in per_fold.values()]))
