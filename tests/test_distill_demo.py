"""The distillation demo end to end at reduced size: generated posts -> VADER labels -> student (trained by
the pipeline's `pixsent caffe train` child) -> benchmark folds with and without fine-tuning. Soft labels are
checked in test_distill_soft_loss.py (value, gradient, LMDB alignment)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pixsent.engine.net", reason="engine Net not available yet")

from pixsent.distill.demo import DistillDemoConfig, run_demo  # noqa: E402
from pixsent.recipes import demo as paper_demo  # noqa: E402


def test_demo_reduced_student_beats_majority(tmp_path):
    net = paper_demo.DemoConfig(epochs=12, progress=False)
    cfg = DistillDemoConfig(
        out=tmp_path, n_posts=160, bench_images=60, run_folds=2, soft=False, net=net, progress=False
    )
    out = run_demo(cfg)
    agree = out["agreement"]
    assert agree["agreement_with_text"] >= 0.9  # stated rate
    im = out["report"]["images"]
    assert im["input"] == im["kept"] + sum(im["dropped"].values())
    bench = out["benchmark"]["subsets"]["demo"]
    notune, tuned = bench["no fine-tuning"], bench["fine-tuning"]
    # held-out generated images (never seen by the student): beat the majority class (0.5 here)
    assert notune["center"]["mean"] > notune["majority"] + 0.1, notune
    assert tuned["center"]["mean"] > tuned["majority"], tuned
    run_dir = out["student"]["run_dir"]
    train_val = (tmp_path / run_dir / "train_val.prototxt").read_text()
    assert "SoftmaxWithLoss" in train_val and "train_soft_lmdb" not in train_val
    assert "student, no fine-tuning" in (tmp_path / "table.md").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["agreement"]["kept"] == agree["kept"]
