"""A Table 3 result as files: the per-layer table in markdown, and JSON with every per-fold probe, the net,
the mean, the probe settings, the exact command and the commit (what ``pixsent table`` reads back)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pixsent.analysis.probes import ProbeConfig, Table3

#: {layer: ((svm mean, svm std), (softmax mean, softmax std))}
PaperTable = dict[str, tuple[tuple[float, float], tuple[float, float]]]


@dataclass
class Table3Report:
    """One net's layer probes over the folds of a subset, with where they came from."""

    label: str
    subset: str
    folds: list[int]
    layer_set: str
    init: str | None
    fine_tuned: bool
    models: dict[int, dict[str, str]]
    mean: str | None
    layers: list[str]
    probe: ProbeConfig
    command: str
    commit: str
    table: Table3
    n_folds: int
    paper: PaperTable = field(default_factory=dict)  # published numbers to print beside (CaffeNet's)
    blobs: dict[str, str] = field(default_factory=dict)  # probe name -> the net's blob (fc8 -> fc8_twitter)

    def title(self) -> str:
        what = "fine-tuned" if self.fine_tuned else "off the shelf (no fine-tuning)"
        return (
            f"Table 3: layer-wise linear probes, {self.label}, {what} ({self.subset}-agree, "
            f"{len(self.folds)} folds, mean ± std)"
        )

    def markdown(self, header: bool = False) -> str:
        """The table; with ``header`` also the title, the command and the commit (for results/ files)."""
        body = self.table.to_markdown(self.paper)
        if not header:
            return f"{self.title()}\n{body}"
        lines = [
            f"## {self.title()}",
            "",
            f"- command: `{self.command}`",
            f"- commit: `{self.commit}`",
            f"- layers ({self.layer_set} rule): {', '.join(self.layers)}",
            f"- mean subtracted: {self.mean}; linear SVM and softmax (logistic regression), C from "
            f"{list(self.probe.c_grid)} by {self.probe.inner_folds}-fold cross-validation on each "
            "training fold",
            "",
            body,
        ]
        if self.paper:
            lines += ["", "Paper: Campos et al. 2017, Table 3 (fine-tuned CaffeNet, five-agree)."]
        return "\n".join(lines)

    def to_json(self) -> dict:
        probe = dataclasses.asdict(self.probe)
        return {
            "table": "3",
            "label": self.label,
            "title": self.title(),
            "subset": self.subset,
            "folds": self.folds,
            "layer_set": self.layer_set,
            "init": self.init,
            "fine_tuned": self.fine_tuned,
            "models": {str(k): v for k, v in self.models.items()},
            "mean": self.mean,
            "layers": self.layers,
            "blobs": self.blobs,
            "probe": {**probe, "c_grid": list(probe["c_grid"])},
            "command": self.command,
            "commit": self.commit,
            "summary": self.table.summaries(),
            "results": self.table.to_json(),
        }
