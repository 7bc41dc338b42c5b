"""Figure 6: training loss and test accuracy against iteration, from Caffe-format training logs (ours or
Caffe's)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixsent.errors import DataError


@dataclass
class Curves:
    """What Figure 6 draws from one log."""

    iters: np.ndarray
    loss: np.ndarray
    test_iters: np.ndarray
    test_accuracy: np.ndarray


_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"
_TRAIN = re.compile(rf"Iteration (\d+)(?: \([^)]*\))?, loss = ({_FLOAT})")
_TEST_START = re.compile(r"Iteration (\d+), Testing net")
_TEST_ACC = re.compile(rf"Test net output #\d+: accuracy = ({_FLOAT})")


def _parse_fallback(path: Path) -> Curves:
    """Minimal reader of glog training logs, used only when pixsent.engine.logparse is unavailable."""
    it, loss, tit, tacc = [], [], [], []
    current_test = None
    for line in Path(path).read_text(errors="replace").splitlines():
        if m := _TEST_START.search(line):
            current_test = int(m.group(1))
        elif (m := _TEST_ACC.search(line)) and current_test is not None:
            tit.append(current_test)
            tacc.append(float(m.group(1)))
            current_test = None
        elif m := _TRAIN.search(line):
            it.append(int(m.group(1)))
            loss.append(float(m.group(2)))
    return Curves(np.array(it), np.array(loss), np.array(tit), np.array(tacc))


def read_curves(path: Path) -> Curves:
    """Training loss per iteration and test accuracy per test of one log."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: training log not found")
    try:
        from pixsent.engine.logparse import parse_log
    except ImportError:
        return _parse_fallback(path)
    log = parse_log(path)
    curves = _from_training_log(log)
    return curves if curves is not None else _parse_fallback(path)


def _from_training_log(log) -> Curves | None:
    """Adapt the engine's TrainingLog (field names probed, since it is written concurrently)."""

    def pick(obj, *names):
        for n in names:
            v = getattr(obj, n, None)
            if v is not None:
                return v
        return None

    iters = pick(log, "iters", "iter", "train_iter", "train_iters")
    loss = pick(log, "loss", "train_loss")
    tit = pick(log, "test_iters", "test_iter")
    tacc = pick(log, "test_accuracy")
    if tacc is None:
        outs = pick(log, "test_outputs")
        if isinstance(outs, dict) and "accuracy" in outs:
            tacc = outs["accuracy"]
    if iters is None or loss is None or tit is None or tacc is None:
        return None
    return Curves(np.asarray(iters), np.asarray(loss), np.asarray(tit), np.asarray(tacc))


def plot_logs(logs: Sequence[Path], out: Path, labels: Sequence[str] | None = None, title: str = "") -> Path:
    """Draw loss (left) and test accuracy (right) of each log into a PNG (matplotlib Agg), written
    atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(labels) if labels else [Path(p).parent.name or Path(p).stem for p in logs]
    if len(labels) != len(logs):
        raise DataError(f"{len(logs)} logs but {len(labels)} labels")
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
    for path, label in zip(logs, labels):
        c = read_curves(Path(path))
        if len(c.iters) == 0:
            raise DataError(f"{path}: no 'Iteration N ..., loss = X' lines (not a Caffe training log?)")
        ax_l.plot(c.iters, c.loss, label=label)
        if len(c.test_iters):
            ax_a.plot(c.test_iters, c.test_accuracy, marker="o", label=label)
    ax_l.set(xlabel="iteration", ylabel="training loss", title="training loss")
    ax_a.set(xlabel="iteration", ylabel="test accuracy", title="test accuracy")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a log without test passes leaves the accuracy panel empty
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
