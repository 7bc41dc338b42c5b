"""The paper's Tables 2, 4, 5 and 6 from run folders, and Table 3 from probe JSON files (recipes/paper/
table3.py), with the published numbers and the difference beside ours.

Our cell is the mean ± population std over the folds that have a metrics.json; a configuration with fewer than
5 evaluated folds is marked "(k/5 folds)", one with none "not run". Folds of capped smoke runs (--max-iter)
never count: they are skipped and said so.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixsent.recipes.paper import results, table3
from pixsent.workflow.runs import RunPaths

N_FOLDS = 5
MODES = ("center", "oversample")


@dataclass
class Cell:
    """Our result for one configuration and evaluation mode."""

    accs: list[float]
    capped: int = 0  # folds whose metrics come from a --max-iter smoke run (not counted)

    @property
    def n(self) -> int:
        return len(self.accs)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.accs)) if self.accs else None

    @property
    def std(self) -> float | None:
        return float(np.std(self.accs, ddof=0)) if self.accs else None


def collect(runs: Path, subset: str, variant: str, init: str, folds: int = N_FOLDS) -> dict[str, Cell]:
    """Per-mode accuracies of the folds of one configuration that have been evaluated."""
    cells = {m: Cell([]) for m in MODES}
    for k in range(1, folds + 1):
        path = RunPaths(Path(runs), subset, variant, init, k).metrics
        if path.exists():
            m = json.loads(path.read_text())
            for mode in MODES:
                if m.get("capped"):
                    cells[mode].capped += 1
                else:
                    cells[mode].accs.append(float(m[f"accuracy_{mode}"]))
    return cells


def _fmt(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def table_rows(table: str, runs: Path) -> list[dict[str, str]]:
    """Rows of one table as strings: model, subset, and for each mode paper / ours / difference."""
    out = []
    for pub in results.rows(table):
        cells = collect(runs, pub.subset, pub.variant, pub.init)
        row = {"model": pub.label, "subset": f"{pub.subset}-agree", "run": f"{pub.variant}-{pub.init}"}
        for mode in MODES:
            paper = pub.center if mode == "center" else pub.oversample
            cell = cells[mode]
            ours = "not run" if cell.n == 0 else _fmt(cell.mean, cell.std)
            if 0 < cell.n < N_FOLDS:
                ours += f" ({cell.n}/{N_FOLDS} folds)"
            if cell.capped:
                ours += f" ({cell.capped} capped smoke-run folds skipped)"
            diff = f"{cell.mean - paper[0]:+.3f}" if (paper and cell.mean is not None) else ""
            row[f"paper_{mode}"] = _fmt(*paper) if paper else "n/a"
            row[f"ours_{mode}"] = ours
            row[f"diff_{mode}"] = diff
        out.append(row)
    if table == "2":
        out.append(_reference_row("PCNN (You et al. 2015)", {s: results.PCNN[s] for s in results.PCNN}))
        maj = {s: results.majority_accuracy(s) for s in results.MAJORITY}
        out.append(_reference_row("majority class", maj))
    return out


def _reference_row(label: str, values: dict[str, float | None]) -> dict[str, str]:
    text = ", ".join(f"{s}: {v:.3f}" for s, v in values.items() if v is not None)
    row = {"model": label, "subset": "reference", "run": ""}
    for mode in MODES:
        row.update(
            {f"paper_{mode}": text if mode == "center" else "", f"ours_{mode}": "", f"diff_{mode}": ""}
        )
    return row


COLUMNS = [
    "model",
    "subset",
    "run",
    "paper_center",
    "ours_center",
    "diff_center",
    "paper_oversample",
    "ours_oversample",
    "diff_oversample",
]
HEADERS = [
    "model",
    "subset",
    "run",
    "paper",
    "ours",
    "diff",
    "paper (10-crop)",
    "ours (10-crop)",
    "diff (10-crop)",
]


def render_markdown(tables: list[str], runs: Path, probes: list[Path] | None = None) -> str:
    """Markdown text of the chosen tables (Table 3 from the probe JSON files in ``probes``)."""
    parts = []
    for t in tables:
        if t == "3":
            reports = table3.find_reports(probes if probes is not None else table3.DEFAULT_SOURCES, runs)
            parts.append(table3.render_markdown(reports))
            continue
        parts.append(f"### {results.TABLE_TITLES[t]}\n")
        parts.append("| " + " | ".join(HEADERS) + " |")
        parts.append("|" + " --- |" * len(HEADERS))
        for row in table_rows(t, runs):
            parts.append("| " + " | ".join(row[c] for c in COLUMNS) + " |")
        parts.append("")
    parts.append("Ours: mean ± population std (ddof=0) over evaluated folds; diff = ours - paper (means).")
    return "\n".join(parts) + "\n"


def render_csv(tables: list[str], runs: Path, probes: list[Path] | None = None) -> str:
    """CSV of the chosen tables, one row per paper row, with a `table` column. Table 3 rows put the net in
    ``model``, the layer in ``run``, the SVM in the centre columns and the softmax in the 10-crop ones."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", *COLUMNS])
    for t in tables:
        if t == "3":
            reports = table3.find_reports(probes if probes is not None else table3.DEFAULT_SOURCES, runs)
            for r in table3.rows(reports):
                svm = [r["paper_svm"], r["ours_svm"], r["diff_svm"]]
                softmax = [r["paper_softmax"], r["ours_softmax"], r["diff_softmax"]]
                w.writerow(["3", r["section"], "five-agree", r["layer"], *svm, *softmax])
            continue
        for row in table_rows(t, runs):
            w.writerow([t, *(row[c] for c in COLUMNS)])
    return buf.getvalue()


RENDERERS = {"md": render_markdown, "csv": render_csv}


def render(tables: list[str], runs: Path, fmt: str = "md", probes: list[Path] | None = None) -> str:
    return RENDERERS[fmt](tables, Path(runs), probes)
