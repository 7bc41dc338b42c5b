"""Parser of Caffe training logs (real Caffe's and pixsent's): losses, rates and net outputs per iteration.

It reads only the message part of glog lines, so both the classic ``I1122 05:08:18.39 ...`` prefix and
glog 0.6's ``I20261122 ...`` (with year) work, as do plain unprefixed lines. The display line may be
``Iteration N (X iter/s, Ys/K iters), loss = L`` (Caffe 1.0; X can be any float, even negative, because
Caffe's first interval is timed from an uninitialised member) or ``Iteration N, loss = L`` (the line after
the last update, and every display line of older Caffe). ``to_csv`` writes the ``.train``/``.test`` tables
of Caffe's tools/extra/parse_log.py.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixsent.errors import FormatError

_FLOAT = r"[-+]?(?:nan|inf|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_PREFIX = re.compile(r"^([IWEF])(\d{4}|\d{8}) (\d{2}):(\d{2}):(\d{2})\.(\d+)\s+\d+\s+\S+\]\s?(.*)$")
_LOSS_RATE = re.compile(rf"Iteration (\d+) \(({_FLOAT}) iter/s, ({_FLOAT})s/(\d+) iters\), loss = ({_FLOAT})")
_LOSS = re.compile(rf"Iteration (\d+), loss = ({_FLOAT})")
_LR = re.compile(rf"Iteration (\d+), lr = ({_FLOAT})")
_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_OUTPUT = re.compile(rf"(Train|Test) net output #(\d+): (\S+) = ({_FLOAT})")


@dataclass
class TestRecord:
    """One test pass: iteration, test net index, seconds since the log start, output name -> mean value."""

    iter: int
    net: int
    seconds: float
    outputs: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainingLog:
    """What a training log says, as numpy arrays; ``test_outputs[name]`` aligns with ``test_iters``."""

    iters: np.ndarray
    loss: np.ndarray
    seconds: np.ndarray
    lr_iters: np.ndarray
    lr: np.ndarray
    train_output_iters: np.ndarray
    train_outputs: dict[str, np.ndarray]
    test_iters: np.ndarray
    test_outputs: dict[str, np.ndarray]
    tests: list[TestRecord]

    def lr_at(self, it: int) -> float:
        """The rate logged for iteration ``it`` (NaN when none was)."""
        hit = np.nonzero(self.lr_iters == it)[0]
        return float(self.lr[hit[-1]]) if hit.size else float("nan")


def _timestamp(m: re.Match[str], year: int) -> _dt.datetime:
    date = m.group(2)
    if len(date) == 8:
        year, month, day = int(date[:4]), int(date[4:6]), int(date[6:])
    else:
        month, day = int(date[:2]), int(date[2:])
    micro = int((m.group(6) + "000000")[:6])
    return _dt.datetime(year, month, day, int(m.group(3)), int(m.group(4)), int(m.group(5)), micro)


def parse_lines(lines, source: str = "<log>") -> TrainingLog:
    """Parse an iterable of log lines (see ``parse_log``)."""
    start: _dt.datetime | None = None
    now = 0.0
    loss: dict[int, tuple[float, float]] = {}
    lr: dict[int, float] = {}
    train_out: dict[int, dict[str, float]] = {}
    tests: list[TestRecord] = []
    current_test: TestRecord | None = None
    last_iter = 0
    year = _dt.date.today().year
    for raw in lines:
        line = raw.rstrip("\n")
        m = _PREFIX.match(line)
        if m:
            when = _timestamp(m, year)
            if start is None:
                start = when
            delta = (when - start).total_seconds()
            now = delta if delta >= 0 else delta + 365 * 86400  # a log spanning new year
            msg = m.group(7)
        else:
            msg = line
        if "Iteration" in msg:
            if mm := _LOSS_RATE.search(msg):
                last_iter = int(mm.group(1))
                loss[last_iter] = (float(mm.group(5)), now)
                current_test = None
                continue
            if mm := _LOSS.search(msg):
                last_iter = int(mm.group(1))
                loss[last_iter] = (float(mm.group(2)), now)
                current_test = None
                continue
            if mm := _LR.search(msg):
                lr[int(mm.group(1))] = float(mm.group(2))
                continue
            if mm := _TESTING.search(msg):
                last_iter = int(mm.group(1))
                current_test = TestRecord(last_iter, int(mm.group(2)), now)
                tests.append(current_test)
                continue
        if "net output #" in msg and (mm := _OUTPUT.search(msg)):
            kind, name, value = mm.group(1), mm.group(3), float(mm.group(4))
            if kind == "Test":
                if current_test is None:
                    raise FormatError(
                        f"{source}: 'Test net output' line without a 'Testing net' line: {line}"
                    )
                key = name if name not in current_test.outputs else f"{name}#{mm.group(2)}"
                current_test.outputs[key] = value
            else:
                outs = train_out.setdefault(last_iter, {})
                outs[name if name not in outs else f"{name}#{mm.group(2)}"] = value
    its = sorted(loss)
    out_its = sorted(train_out)
    out_names = sorted({k for v in train_out.values() for k in v})
    net0 = [t for t in tests if t.net == 0]
    test_names = sorted({k for t in net0 for k in t.outputs})
    return TrainingLog(
        iters=np.array(its, dtype=np.int64),
        loss=np.array([loss[i][0] for i in its], dtype=np.float64),
        seconds=np.array([loss[i][1] for i in its], dtype=np.float64),
        lr_iters=np.array(sorted(lr), dtype=np.int64),
        lr=np.array([lr[i] for i in sorted(lr)], dtype=np.float64),
        train_output_iters=np.array(out_its, dtype=np.int64),
        train_outputs={n: np.array([train_out[i].get(n, np.nan) for i in out_its]) for n in out_names},
        test_iters=np.array([t.iter for t in net0], dtype=np.int64),
        test_outputs={n: np.array([t.outputs.get(n, np.nan) for t in net0]) for n in test_names},
        tests=tests,
    )


def parse_log(path: str | Path) -> TrainingLog:
    """Parse a Caffe training log file (stderr of ``caffe train``, ours or real Caffe's)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return parse_lines(fh, source=str(path))
    except FileNotFoundError:
        raise FormatError(f"{path}: training log not found") from None


def _table(header: list[str], rows: list[list[float]]) -> str:
    def cell(x: float) -> str:
        return "" if x != x else (str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x)))

    return ",".join(header) + "\n" + "".join(",".join(cell(v) for v in r) + "\n" for r in rows)


def to_csv(log: TrainingLog, out_dir: str | Path, basename: str) -> tuple[Path, Path]:
    """Write ``<basename>.train`` and ``<basename>.test`` as parse_log.py does (NumIters, Seconds,
    LearningRate, then the net outputs); returns both paths."""
    from pixsent.formats.atomic import atomic_write_text

    out_dir = Path(out_dir)
    names = list(log.train_outputs)
    rows = []
    for k, it in enumerate(log.train_output_iters):
        hit = np.nonzero(log.iters == it)[0]
        secs = float(log.seconds[hit[0]]) if hit.size else float("nan")
        rows.append([int(it), secs, log.lr_at(int(it))] + [float(log.train_outputs[n][k]) for n in names])
    train = atomic_write_text(
        out_dir / f"{basename}.train", _table(["NumIters", "Seconds", "LearningRate", *names], rows)
    )
    tnames = list(log.test_outputs)
    trows = []
    net0 = [t for t in log.tests if t.net == 0]
    for k, t in enumerate(net0):
        lr_now = log.lr_at(t.iter)
        if lr_now != lr_now and log.lr_iters.size and t.iter > 0:
            lr_now = log.lr_at(t.iter - 1)
        trows.append([t.iter, t.seconds, lr_now] + [float(log.test_outputs[n][k]) for n in tnames])
    test = atomic_write_text(
        out_dir / f"{basename}.test", _table(["NumIters", "Seconds", "LearningRate", *tnames], trows)
    )
    return train, test
