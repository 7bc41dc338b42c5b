"""The results folder of a cross-validation: finished folds only, resources per fold, reference rows."""

from __future__ import annotations

import json

from pixsent.workflow.report import Reference, ReportConfig, collect

LOG = """I1201 10:00:00.000000  1 solver.cpp:347] Iteration 0, Testing net (#0)
I1201 10:00:01.000000  1 solver.cpp:414]     Test net output #0: accuracy = 0.5
I1201 10:00:10.000000  1 solver.cpp:239] Iteration 0 (0 iter/s, 10s/1 iters), loss = 0.69
I1201 10:01:40.000000  1 solver.cpp:239] Iteration 9 (0.1 iter/s, 10s/1 iters), loss = 0.5
I1201 10:01:50.000000  1 solver.cpp:327] Iteration 10, loss = 0.4
"""
TIME = """\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03.5
\tMaximum resident set size (kbytes): 2097152
"""


def _fold(root, k, center, over, capped=False):
    d = root / f"fold{k}"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(
        json.dumps({"accuracy_center": center, "accuracy_oversample": over, "capped": capped})
    )
    (d / "train.log").write_text(LOG)


def test_collect_counts_finished_folds_and_their_resources(tmp_path):
    cv = tmp_path / "cv"
    _fold(cv, 1, 0.8, 0.9)
    _fold(cv, 2, 0.6, 0.7)
    _fold(cv, 3, 0.1, 0.1, capped=True)  # a smoke run never counts
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "fold1.time").write_text(TIME)
    cfg = ReportConfig(
        title="T",
        label="ours",
        images_per_iteration=256,
        references=[Reference("paper", (0.817, 0.038), (0.83, 0.034))],
        commands=["pixsent cv ..."],
        time_dir=tmp_path / "t",
        commit="abc",
    )
    out = tmp_path / "out"
    summary = collect(cv, out, cfg)
    assert summary["folds"] == [1, 2]
    assert (
        abs(summary["oversample"]["mean"] - 0.8) < 1e-12 and abs(summary["oversample"]["std"] - 0.1) < 1e-12
    )
    res = summary["resources"][1]
    assert res["train_wall_s"] == 110.0 and res["train_images_per_s"] == round(10 * 256 / 110, 2)
    assert res["fold_peak_rss_mib"] == 2048.0 and res["fold_wall_s"] == 3723.5
    table = (out / "table.md").read_text()
    assert "| ours | 0.700 ± 0.100 | 0.800 ± 0.100 | 2 of 5 |" in table
    assert "| paper | 0.817 ± 0.038 | 0.830 ± 0.034 | |" in table and "Commit: abc" in table
    assert (out / "curves.png").stat().st_size > 1000 and (out / "fold2" / "train.log").is_file()
    assert (out / "commands.txt").read_text() == "pixsent cv ...\n"
    assert not (out / "fold3").exists()


RESUMED = """# pixsent: python -m pixsent caffe train -solver solver.prototxt
I1201 10:00:00.000000  1 solver.cpp:239] Iteration 0 (0 iter/s, 10s/1 iters), loss = 0.69
I1201 10:01:40.000000  1 solver.cpp:239] Iteration 12 (0.1 iter/s, 10s/1 iters), loss = 0.5
# pixsent: python -m pixsent caffe train -solver solver.prototxt -snapshot snapshots/x_iter_10.solverstate
I1201 13:00:00.000000  2 solver.cpp:239] Iteration 10 (0 iter/s, 10s/1 iters), loss = 0.5
I1201 13:00:50.000000  2 solver.cpp:327] Iteration 20, loss = 0.4
"""


def test_a_fold_resumed_by_a_later_process_counts_its_segments_not_the_pause(tmp_path):
    cv = tmp_path / "cv"
    _fold(cv, 1, 0.8, 0.9)
    (cv / "fold1" / "train.log").write_text(RESUMED)
    t = tmp_path / "t"
    t.mkdir()
    (t / "fold1.time").write_text(TIME)
    (t / "fold1b.time").write_text(TIME.replace("1:02:03.5", "0:10.0").replace("2097152", "3145728"))
    (t / "fold10.time").write_text(TIME.replace("2097152", "9999999"))  # another fold's file
    cfg = ReportConfig(title="T", label="ours", images_per_iteration=256, time_dir=t, commit="abc")
    res = collect(cv, tmp_path / "out", cfg)["resources"][1]
    assert res["train_wall_s"] == 150.0  # 100 s + 50 s; the three hours between them are not training
    assert res["train_images_per_s"] == round((12 + 10) * 256 / 150, 2)
    assert res["fold_peak_rss_mib"] == 3072.0 and res["fold_wall_s"] == 3733.5
