"""The student on the manually labelled benchmarks: five/four/three-agree, the paper's 5 folds.

Two protocols, each giving 5-fold mean ± std (population, as pixsent.workflow.evaluate): *no fine-tuning*
runs the student as is on every test fold (the training folds are unused), and *fine-tuning* trains the
student's weights on each fold's training part with the paper's recipe and tests on its test fold, exactly
like the paper's CaffeNet runs but starting from the student. Both use centre crop and 10-crop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixsent.workflow import evaluate as ev
from pixsent.workflow.pipeline import FoldConfig, get_recipe, lmdb_dir, run_fold
from pixsent.workflow.runs import SUBSETS, write_json

PROTOCOL = (
    "Protocol (Serra et al., ECAI 2023, following Campos et al.): the student is trained only on weakly "
    "labelled images whose labels come from a text teacher applied to the tweets' texts; it is then "
    "evaluated on the manually labelled Twitter benchmark (five-, four- and three-agree subsets) with the "
    "5 cross-validation folds of Campos et al.: once directly on each test fold (no fine-tuning), and once "
    "after fine-tuning on the fold's training part. Reported: mean ± std of accuracy over the 5 folds."
)


@dataclass
class Student:
    """A trained student as evaluation needs it: deploy net, weights, input size and mean."""

    name: str
    variant: str
    base: str
    deploy: Path
    weights: Path
    image_size: int
    mean: np.ndarray | None
    extra: dict = field(default_factory=dict)


def student_from_fold(fcfg: FoldConfig) -> Student:
    """Read what the student's training run produced (after ``train_student``)."""
    from pixsent.formats.prototxt import read_solver

    run = fcfg.run_paths()
    recipe = get_recipe(fcfg.recipe)
    weights = run.snapshot_model(int(read_solver(run.solver).max_iter))
    return Student(
        name=f"student-{fcfg.init}",
        variant=fcfg.variant,
        base=fcfg.extra["distill"]["base"],
        deploy=run.deploy,
        weights=weights,
        image_size=recipe.image_size(fcfg),
        mean=recipe.eval_mean(fcfg, lmdb_dir(fcfg)),
        extra={k: v for k, v in fcfg.extra.items() if k != "distill"},
    )


@dataclass
class BenchmarkConfig:
    """Where the benchmark lives and what to run; the folds' files as pixsent.workflow.pipeline finds them."""

    images: Path | None = None
    splits: Path | None = None
    subsets: tuple[str, ...] = SUBSETS
    folds: int = 5
    runs: Path = Path("runs/distill")
    lmdb_root: Path = Path("data/lmdb")
    mirror: Path | None = None
    notune: bool = True
    finetune: bool = True
    gpu: str | None = None
    engine: str = "pixsent"
    progress: bool = True
    echo: bool = False


def _fold_cfg(st: Student, b: BenchmarkConfig, subset: str, k: int) -> FoldConfig:
    return FoldConfig(
        variant=st.variant,
        subset=subset,
        init=st.name,
        fold=k,
        runs=Path(b.runs),
        images=b.images,
        splits=b.splits,
        lmdb_root=Path(b.lmdb_root),
        mirror=b.mirror,
        weights=st.weights,
        gpu=b.gpu,
        engine=b.engine,
        recipe=st.base,
        workers=1,
        progress=b.progress,
        echo=b.echo,
        extra=dict(st.extra),
    )


def evaluate_notune(st: Student, b: BenchmarkConfig, subset: str, k: int) -> dict:
    """The student as is on test fold k; predictions and metrics under <runs>/<subset>/<name>-notune/."""
    from pixsent.workflow.pipeline import find_split_files, image_root

    fcfg = _fold_cfg(st, b, subset, k)
    _, test = find_split_files(fcfg)
    cfg = ev.EvalConfig(image_dims=(st.image_size, st.image_size), mean=st.mean, progress=b.progress)
    pred = ev.evaluate_list(st.deploy, st.weights, image_root(fcfg), test, cfg)
    out = Path(b.runs) / subset / f"{st.variant}-{st.name}-notune" / f"fold{k}"
    out.mkdir(parents=True, exist_ok=True)
    ev.save_predictions(pred, out / "predictions.csv", out / "predictions.npz")
    metrics = ev.fold_metrics(pred) | {"subset": subset, "fold": k, "protocol": "no fine-tuning"}
    write_json(out / "metrics.json", metrics)
    return metrics


def evaluate_finetune(st: Student, b: BenchmarkConfig, subset: str, k: int) -> dict:
    """Fine-tune the student on fold k's training part with the pipeline, evaluate on its test part."""
    return run_fold(_fold_cfg(st, b, subset, k))


PROTOCOLS = {"no fine-tuning": ("notune", evaluate_notune), "fine-tuning": ("finetune", evaluate_finetune)}


def evaluate_student(st: Student, b: BenchmarkConfig) -> dict:
    """Both protocols on every subset; writes <runs>/<student>-benchmark.json and returns it."""
    results: dict = {"student": st.name, "variant": st.variant, "subsets": {}}
    for subset in b.subsets:
        per: dict = {}
        for label, (flag, fn) in PROTOCOLS.items():
            if not getattr(b, flag):
                continue
            folds = {k: fn(st, b, subset, k) for k in range(1, b.folds + 1)}
            per[label] = ev.cv_summary(folds) | {"n_test": [folds[k]["n_images"] for k in sorted(folds)]}
            per[label]["majority"] = _majority(folds)
        results["subsets"][subset] = per
    write_json(Path(b.runs) / f"{st.variant}-{st.name}-benchmark.json", results)
    return results


def _majority(folds: dict[int, dict]) -> float:
    pos = sum(m["n_positive"] for m in folds.values())
    n = sum(m["n_images"] for m in folds.values())
    return max(pos, n - pos) / n if n else float("nan")


def render_table(results: dict) -> str:
    """Markdown: the student under both protocols beside the paper's fine-tuned CaffeNet and PCNN."""
    from pixsent.recipes.paper.results import PCNN, PUBLISHED, majority_accuracy

    subsets = list(results["subsets"])
    head = "| model | " + " | ".join(f"{s}-agree (centre / 10-crop)" for s in subsets) + " |"
    rows = [f"## Student `{results['student']}` ({results['variant']})", "", head]
    rows.append("| --- |" + " --- |" * len(subsets))

    def cell(s: dict | None) -> str:
        if not s:
            return "n/a"
        c, o = s["center"], s["oversample"]
        return f"{c['mean']:.3f} ± {c['std']:.3f} / {o['mean']:.3f} ± {o['std']:.3f}"

    for label in PROTOCOLS:
        vals = [cell(results["subsets"][s].get(label)) for s in subsets]
        rows.append(f"| student, {label} (ours) | " + " | ".join(vals) + " |")
    maj = []
    for s in subsets:
        any_run = next(iter(results["subsets"][s].values()), None)
        maj.append(f"{any_run['majority']:.3f}" if any_run else "n/a")
    rows.append("| majority class (these folds) | " + " | ".join(maj) + " |")
    paper = {p.subset: p for p in PUBLISHED if p.table == "2"}

    def pub(s: str) -> str:
        p = paper.get(s)
        if p is None or p.center is None or p.oversample is None:
            return "n/a"
        return f"{p.center[0]:.3f} ± {p.center[1]:.3f} / {p.oversample[0]:.3f} ± {p.oversample[1]:.3f}"

    rows.append("| fine-tuned CaffeNet (Campos et al. 2017) | " + " | ".join(pub(s) for s in subsets) + " |")
    rows.append(
        "| PCNN (You et al. 2015) | "
        + " | ".join(f"{PCNN[s]:.3f}" if s in PCNN else "n/a" for s in subsets)
        + " |"
    )
    published_majority = [majority_accuracy(s) for s in subsets]
    rows.append(
        "| majority class (paper) | "
        + " | ".join(f"{m:.3f}" if m else "n/a" for m in published_majority)
        + " |"
    )
    rows += ["", PROTOCOL, ""]
    return "\n".join(rows)
