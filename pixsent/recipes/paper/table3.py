"""The paper's Table 3 (layer probes of the fine-tuned CaffeNet) beside ours, read from ``pixsent layers
--json`` files (results/table3/*.json, a run folder's table3.json).

A CaffeNet result shares the paper's layer names and gets the published numbers and the difference on
the same rows; another backbone (SqueezeNet, open_nsfw) has other layers, so it gets a table of its own
under the paper's, with its best layer named for the comparison.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pixsent.recipes.paper import results

DEFAULT_SOURCES = (Path("results/table3"),)
CLASSIFIERS = ("svm", "softmax")
PAPER_ONLY = "paper only (no CaffeNet probes run)"


def find_reports(sources: Iterable[Path] = DEFAULT_SOURCES, runs: Path | None = None) -> list[dict]:
    """Every Table 3 JSON (``"table": "3"``) in the given files/folders and under runs/<subset>/<run>/."""
    paths: list[Path] = []
    for source in sources:
        source = Path(source)
        paths += sorted(source.glob("*.json")) if source.is_dir() else [source] if source.is_file() else []
    if runs is not None and Path(runs).is_dir():
        paths += sorted(Path(runs).glob("*/*/table3.json"))
    reports = []
    for path in paths:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("table") == "3" and doc.get("summary"):
            reports.append({**doc, "path": str(path)})
    return reports


def _cells(report: dict) -> dict[tuple[str, str], tuple[float, float, int]]:
    return {(s["layer"], s["classifier"]): (s["mean"], s["std"], s["folds"]) for s in report["summary"]}


def _layers(report: dict) -> list[str]:
    seen: list[str] = []
    for s in report["summary"]:
        if s["layer"] not in seen:
            seen.append(s["layer"])
    return seen


def _fmt(cell: tuple[float, float, int] | None) -> str:
    return "–" if cell is None else f"{cell[0]:.3f} ± {cell[1]:.3f}"


def _is_caffenet(report: dict) -> bool:
    return report.get("layer_set") == "caffenet"


def rows(reports: list[dict]) -> list[dict[str, str]]:
    """Row dicts (section, layer, paper/ours per classifier, difference) of every table printed."""
    out = []
    caffenet = [r for r in reports if _is_caffenet(r)]
    for report in caffenet or [None]:
        cells = _cells(report) if report else {}
        section = report["label"] if report else PAPER_ONLY
        for layer, paper in results.TABLE3.items():
            row = {"section": section, "layer": layer}
            for name, (mean, std) in zip(CLASSIFIERS, paper):
                ours = cells.get((layer, name))
                row[f"paper_{name}"] = f"{mean:.3f} ± {std:.3f}"
                row[f"ours_{name}"] = _fmt(ours) if report else "not run"
                row[f"diff_{name}"] = f"{ours[0] - mean:+.3f}" if ours else ""
            out.append(row)
    for report in reports:
        if _is_caffenet(report):
            continue
        cells = _cells(report)
        for layer in _layers(report):
            row = {"section": report["label"], "layer": layer}
            for name in CLASSIFIERS:
                row[f"paper_{name}"] = ""
                row[f"ours_{name}"] = _fmt(cells.get((layer, name)))
                row[f"diff_{name}"] = ""
            out.append(row)
    return out


def _best(report: dict, name: str) -> tuple[str, float] | None:
    picks = [(s["mean"], s["layer"]) for s in report["summary"] if s["classifier"] == name]
    if not picks:
        return None
    mean, layer = max(picks)
    return layer, mean


def render_markdown(reports: list[dict]) -> str:
    """The paper's Table 3 with ours beside it (CaffeNet), then one table per other net."""
    parts = [f"### {results.TABLE_TITLES['3']}\n"]
    head = "| layer | paper SVM | ours SVM | diff | paper softmax | ours softmax | diff |"
    caffenet = [r for r in reports if _is_caffenet(r)]
    by_section: dict[str, list[dict[str, str]]] = {}
    for row in rows(reports):
        by_section.setdefault(row["section"], []).append(row)
    for report in caffenet or [None]:
        section = report["label"] if report else PAPER_ONLY
        parts.append(f"Fine-tuned CaffeNet, paper beside ours: {section}\n")
        parts += [head, "|" + " --- |" * 7]
        for r in by_section[section]:
            parts.append(
                f"| {r['layer']} | {r['paper_svm']} | {r['ours_svm']} | {r['diff_svm']} | "
                f"{r['paper_softmax']} | {r['ours_softmax']} | {r['diff_softmax']} |"
            )
        parts.append("")
    paper_best = max(m[0] for m, _ in results.TABLE3.values())
    for report in reports:
        if _is_caffenet(report):
            continue
        kind = "fine-tuned" if report.get("fine_tuned") else "no fine-tuning"
        folds = len(report.get("folds", []))
        parts.append(f"{report['label']} ({kind}, {report.get('subset', 'five')}-agree, {folds} folds)\n")
        parts += ["| layer | SVM | softmax |", "| --- | --- | --- |"]
        for r in by_section[report["label"]]:
            parts.append(f"| {r['layer']} | {r['ours_svm']} | {r['ours_softmax']} |")
        best = _best(report, "svm")
        if best:
            parts.append(
                f"\nBest SVM layer: {best[0]} {best[1]:.3f} (the paper's best, fine-tuned CaffeNet fc8: "
                f"{paper_best:.3f}). Source: {report['path']}, commit {report.get('commit', '?')[:12]}."
            )
        parts.append("")
    if not reports:
        parts.append("(no Table 3 results found: run `pixsent layers --json results/table3/NAME.json`)\n")
    return "\n".join(parts)
