"""SIGINT/SIGHUP handling for training, as Caffe's tool does it: a signal only sets a flag.

The solver polls ``requested_action()`` after every iteration (and between test batches); the flag is
cleared when read. Defaults are Caffe's: SIGINT stops (the solver then snapshots via snapshot_after_train),
SIGHUP snapshots and continues. Each effect can be ``stop``, ``snapshot`` or ``none``. A log pipe whose reader
has gone (``glog.CONFIG.output_closed``, e.g. ``make`` killed by SIGHUP) asks once to stop, like SIGINT.
"""

from __future__ import annotations

import enum
import signal
import threading
from dataclasses import dataclass, field

from pixsent.engine import glog
from pixsent.errors import PixsentError


class Action(enum.Enum):
    """What a signal asks the solver to do."""

    NONE = "none"
    STOP = "stop"
    SNAPSHOT = "snapshot"


def parse_effect(name: str, flag: str = "sigint_effect") -> Action:
    """``stop``/``snapshot``/``none`` -> Action, with a one-line error naming the flag otherwise."""
    try:
        return Action(name)
    except ValueError:
        raise PixsentError(f"-{flag}: invalid effect {name!r} (use stop, snapshot or none)") from None


@dataclass
class SignalHandler:
    """Installs the handlers while used as a context manager; restores the previous ones on exit."""

    sigint_effect: Action = Action.STOP
    sighup_effect: Action = Action.SNAPSHOT
    _got: dict[int, bool] = field(default_factory=dict)
    _output_closed_seen: bool = False
    _previous: dict[int, object] = field(default_factory=dict)

    def _signals(self) -> list[int]:
        sigs = [signal.SIGINT]
        if hasattr(signal, "SIGHUP"):
            sigs.append(signal.SIGHUP)
        return sigs

    def _handle(self, signum, frame) -> None:
        self._got[signum] = True

    def __enter__(self) -> SignalHandler:
        if threading.current_thread() is threading.main_thread():
            for sig in self._signals():
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()

    def requested_action(self) -> Action:
        """The action of a pending signal (SIGINT first), clearing it; NONE when nothing arrived."""
        if self._got.pop(signal.SIGINT, False):
            return self.sigint_effect
        if glog.CONFIG.output_closed and not self._output_closed_seen:  # no one reads our log any more
            self._output_closed_seen = True
            return Action.STOP
        if hasattr(signal, "SIGHUP") and self._got.pop(signal.SIGHUP, False):
            return self.sighup_effect
        return Action.NONE
