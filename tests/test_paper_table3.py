"""`pixsent table --tables 3`: the paper's Table 3 (SPEC section 2) beside ours, from `pixsent layers --json`.

A CaffeNet report shares the paper's layer names: each row gets the published SVM/softmax numbers, ours
and the difference. A SqueezeNet report has other layers: it gets a table of its own after the paper's.
"""

from __future__ import annotations

import json

import numpy as np

from pixsent.analysis.probes import ProbeConfig, ProbeResult, Table3
from pixsent.analysis.report import Table3Report
from pixsent.cli import main
from pixsent.recipes.paper import results


def _report(label: str, layer_set: str, layers: list[str], accs: dict[str, float]) -> dict:
    table = Table3(
        [
            ProbeResult(layer, fold, clf, accs[layer] + 0.01 * (fold - 3), 1.0, "dual")
            for fold in range(1, 6)
            for layer in layers
            for clf in ("svm", "softmax")
        ]
    )
    return Table3Report(
        label, "five", [1, 2, 3, 4, 5], layer_set, None, True, {}, "104,117,123", layers,
        ProbeConfig(), "pixsent layers ...", "abc123", table, 5,
    ).to_json()  # fmt: skip


def test_paper_values_are_spec_section_2():
    assert len(results.TABLE3) == 13 and list(results.TABLE3)[0] == "conv1"
    assert results.TABLE3["fc8"] == ((0.82, 0.055), (0.821, 0.046))
    assert results.TABLE3["conv4"] == ((0.794, 0.026), (0.781, 0.020))
    assert results.TABLE3["conv1"] == ((0.667, 0.049), (0.67, 0.032))


def test_table3_prints_the_paper_beside_ours(tmp_path, capsys):
    caffenet = _report("fc8_twitter-caffenet", "caffenet", ["conv1", "fc8"], {"conv1": 0.70, "fc8": 0.80})
    squeeze = _report(
        "squeezenet-dc", "squeezenet", ["conv1", "fire9/concat"], {"conv1": 0.6, "fire9/concat": 0.75}
    )
    for name, doc in (("a.json", caffenet), ("b.json", squeeze)):
        (tmp_path / name).write_text(json.dumps(doc))
    (tmp_path / "not_table3.json").write_text(json.dumps([{"layer": "x"}]))  # an old list file: ignored
    assert main(["table", "--tables", "3", "--probes", str(tmp_path), "--runs", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    # ours: mean over folds 1..5 of acc + 0.01 (fold - 3) is acc, population std 0.01 * sqrt(2)
    std = 0.01 * np.sqrt(2)
    assert (
        f"| fc8 | 0.820 ± 0.055 | 0.800 ± {std:.3f} | -0.020 | 0.821 ± 0.046 | 0.800 ± {std:.3f} | -0.021 |"
        in out
    )
    assert "| conv2 | 0.735 ± 0.019 | – |  | 0.738 ± 0.030 | – |  |" in out  # a layer we did not probe
    assert "squeezenet-dc (fine-tuned, five-agree, 5 folds)" in out
    assert f"| fire9/concat | 0.750 ± {std:.3f} | 0.750 ± {std:.3f} |" in out
    assert "Best SVM layer: fire9/concat 0.750" in out


def test_table3_without_results_prints_the_paper_alone(tmp_path, capsys):
    assert main(["table", "--tables", "3", "--probes", str(tmp_path), "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| conv1 | 0.667 ± 0.049 | not run |" in out and "no Table 3 results found" in out
    assert main(["table", "--tables", "3", "--probes", str(tmp_path), "--format", "csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("table,model,") and len(rows) == 1 + 13
