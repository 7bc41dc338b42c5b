"""The paper's solver, computed from a fold's real training-set size and batch size (SPEC section 2).

Rules (one for every subset; five-agree has 704 training images per fold):
- iterations per epoch = train_size / (batch_size x iter_size) (704 / 256 = 2.75): Caffe's ``iter_size``
  accumulates the gradients of that many forward/backward passes and divides by it before each update, so
  one iteration (and the learning-rate schedule counted in iterations) sees the EFFECTIVE batch; batch 64 x
  iter_size 4 therefore gets the same max_iter, stepsize and rates as batch 256 (``iter_size`` is written
  only when it is not 1, so the paper's files are unchanged);
- max_iter = epochs x iterations per epoch rounded UP to a multiple of 10 (65 x 2.75 = 178.75 -> 180, the
  released ``_iter_180``); at least 65 full epochs are seen;
- stepsize = 6 epochs rounded UP to whole iterations (16.5 -> 17), so every learning-rate stage spans at
  least 6 epochs;
- weight_decay 0.0005 is not in the paper: it is BVLC CaffeNet's value;
- the TEST Data batch is balanced over the test fold: test_iter = ceil(test_size / cap), batch =
  ceil(test_size / test_iter) with cap 50 (five-agree: 4 x 44 = 176 exactly); Caffe's Data layer wraps, so a
  few images of a fold whose size does not divide evenly are counted twice in the logged accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from google.protobuf import text_format

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import DataError


def test_batching(test_size: int, cap: int = 50) -> tuple[int, int]:
    """(batch_size, test_iter) covering ``test_size`` images with balanced batches of at most ``cap``."""
    if test_size <= 0:
        raise DataError(f"test fold is empty (size {test_size})")
    iters = math.ceil(test_size / cap)
    return math.ceil(test_size / iters), iters


def _round_up(value: float, multiple: int) -> int:
    """Smallest multiple of ``multiple`` >= value (tolerant of float noise)."""
    return multiple * math.ceil(round(value / multiple, 9))


@dataclass(frozen=True)
class SolverConfig:
    """SGD settings of the paper and the numbers derived from the fold's sizes."""

    net: str
    snapshot_prefix: str
    train_size: int
    test_size: int
    batch_size: int = 256
    iter_size: int = 1  # forward/backward passes accumulated per update (Caffe's SolverParameter.iter_size)
    test_batch_cap: int = 50
    base_lr: float = 0.001
    epochs: int = 65
    step_epochs: int = 6
    max_iter_multiple: int = 10
    momentum: float = 0.9
    gamma: float = 0.1
    weight_decay: float = 0.0005
    snapshot_every: int | None = None  # SNAPSHOT=: iterations between snapshots (default: one half way)
    display: int = 1
    random_seed: int = 1701
    solver_mode: str = "CPU"

    def __post_init__(self) -> None:
        if self.train_size <= 0 or self.batch_size <= 0 or self.iter_size <= 0:
            raise DataError(
                f"training set size {self.train_size} / batch {self.batch_size} / iter_size {self.iter_size}"
                " must be positive"
            )

    @property
    def effective_batch(self) -> int:
        """Images per update: batch_size x iter_size (what an epoch is counted in)."""
        return self.batch_size * self.iter_size

    @property
    def iters_per_epoch(self) -> float:
        return self.train_size / self.effective_batch

    def _per(self) -> str:
        """How the effective batch is written in comments: ``256`` or ``(64 x 4)``."""
        if self.iter_size == 1:
            return str(self.batch_size)
        return f"({self.batch_size} x {self.iter_size})"

    @property
    def max_iter(self) -> int:
        return _round_up(self.epochs * self.iters_per_epoch, self.max_iter_multiple)

    @property
    def stepsize(self) -> int:
        return math.ceil(round(self.step_epochs * self.iters_per_epoch, 9))

    @property
    def test_batch_size(self) -> int:
        return test_batching(self.test_size, self.test_batch_cap)[0]

    @property
    def test_iter(self) -> int:
        return test_batching(self.test_size, self.test_batch_cap)[1]

    @property
    def test_interval(self) -> int:
        """One test pass per epoch (rounded up), for a per-epoch accuracy curve."""
        return math.ceil(round(self.iters_per_epoch, 9))

    @property
    def snapshot(self) -> int:
        """A snapshot half way (for resuming), rounded down to a multiple of 10, unless ``snapshot_every``
        says otherwise (long CPU runs resume with less lost); Caffe adds the final one."""
        if self.snapshot_every is not None:
            return self.snapshot_every
        return max(10, (self.max_iter // 2) // 10 * 10)

    def fields(self) -> list[tuple[str, object, str]]:
        """(field, value, comment) in the order written to solver.prototxt."""
        e, ipe = self.epochs, self.iters_per_epoch
        tb, ti = self.test_batch_size, self.test_iter
        return [
            ("net", self.net, "TRAIN and TEST nets of this fold"),
            (
                "test_iter",
                ti,
                f"{ti} batches x {tb} (TEST batch_size) = {ti * tb} >= {self.test_size} test images",
            ),
            (
                "test_interval",
                self.test_interval,
                f"test once per epoch: ceil({self.train_size} / {self._per()})",
            ),
            ("base_lr", self.base_lr, "paper: 0.001 (0.0001 for fc6-2)"),
            ("lr_policy", "step", "paper: divide the rate by 10 every 6 epochs"),
            ("gamma", self.gamma, "paper"),
            (
                "stepsize",
                self.stepsize,
                f"{self.step_epochs} epochs = ceil({self.step_epochs} x {self.train_size} / {self._per()}"
                f" = {self.step_epochs * ipe:g}) iterations",
            ),
            (
                "max_iter",
                self.max_iter,
                f"{e} epochs = {e} x {self.train_size} / {self._per()} = {e * ipe:g} iterations, "
                f"rounded up to a multiple of {self.max_iter_multiple}",
            ),
            *self._iter_size_field(),
            ("display", self.display, "log every iteration (runs are a few hundred iterations)"),
            ("momentum", self.momentum, "paper"),
            ("weight_decay", self.weight_decay, "not in the paper: BVLC CaffeNet's value"),
            (
                "snapshot",
                self.snapshot,
                "one snapshot half way for resuming; Caffe also snapshots at max_iter"
                if self.snapshot_every is None
                else f"every {self.snapshot_every} iterations (SNAPSHOT=); Caffe also snapshots at max_iter",
            ),
            ("snapshot_prefix", self.snapshot_prefix, "<prefix>_iter_<N>.caffemodel / .solverstate"),
            ("solver_mode", self.solver_mode, "CPU unless -gpu N is given on the command line"),
            ("random_seed", self.random_seed, "fixed seed: repeatable crops, mirrors, dropout and fillers"),
            ("type", "SGD", "paper: SGD with momentum"),
        ]

    def _iter_size_field(self) -> list[tuple[str, object, str]]:
        """``iter_size`` with its explanation, only when it is not Caffe's default 1."""
        if self.iter_size == 1:
            return []
        b, k, eff = self.batch_size, self.iter_size, self.effective_batch
        return [
            (
                "iter_size",
                k,
                f"TRAIN batch {b} x iter_size {k} = effective batch {eff}: Caffe accumulates {k} passes and "
                f"divides by {k} before each update, so epochs, stepsize and max_iter count {eff}-image "
                "iterations",
            )
        ]

    def to_proto(self) -> caffe_pb2.SolverParameter:
        msg = caffe_pb2.SolverParameter()
        for name, value, _ in self.fields():
            if name == "solver_mode":
                value = caffe_pb2.SolverParameter.SolverMode.Value(str(value))
            if name == "test_iter":
                msg.test_iter.append(int(value))  # type: ignore[arg-type]
            else:
                setattr(msg, name, value)
        return msg

    def to_text(self, header: str = "") -> str:
        """Solver prototxt with a ``#`` comment above each field saying how its value was derived."""
        full = self.to_proto()
        lines = [f"# {line}" if line else "#" for line in header.splitlines()]
        per = (
            f"batch {self.batch_size}"
            if self.iter_size == 1
            else f"(batch {self.batch_size} x iter_size {self.iter_size} = {self.effective_batch} an update)"
        )
        lines.append(
            f"# {self.train_size} training images / {per} = {self.iters_per_epoch:g} iterations per epoch"
        )
        for name, _, comment in self.fields():
            single = caffe_pb2.SolverParameter()
            single.MergeFrom(full)
            for other in single.DESCRIPTOR.fields:
                if other.name != name:
                    single.ClearField(other.name)
            lines.append(f"# {comment}")
            lines.append(text_format.MessageToString(single).rstrip("\n"))
        return "\n".join(lines) + "\n"
