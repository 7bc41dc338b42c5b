"""Solverstates: golden files round-trip byte for byte, history arrays, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from pixsent.errors import FormatError
from pixsent.formats.solverstate import history_arrays, make_solverstate, read_solverstate, write_solverstate

GOLDEN_STATES = [
    "solver_run/snap_iter_10.solverstate",
    "solver_run/snap_iter_20.solverstate",
    *(
        f"solver_types/{t}_iter_10.solverstate"
        for t in ("Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
    ),
]


@pytest.mark.parametrize("name", GOLDEN_STATES)
def test_golden_solverstates_round_trip(golden, tmp_path, name):
    data = (golden / name).read_bytes()
    state = read_solverstate(golden / name)
    assert state.SerializeToString() == data
    assert write_solverstate(state, tmp_path / "s.solverstate").read_bytes() == data


def test_history_contents(golden):
    state = read_solverstate(golden / "solver_run/snap_iter_10.solverstate")
    assert (state.iter, state.learned_net, state.current_step) == (10, "snap_iter_10.caffemodel", 1)
    shapes = [h.shape for h in history_arrays(state)]
    assert shapes == [(8, 3, 3, 3), (8,), (8, 4, 3, 3), (8,), (16, 648), (16,), (2, 16), (2,)]
    adam = read_solverstate(golden / "solver_types/Adam_iter_10.solverstate")
    assert len(history_arrays(adam)) == 16


def test_make_solverstate_round_trip(tmp_path):
    hist = [np.ones((2, 3), np.float32), np.zeros(2, np.float32)]
    path = write_solverstate(make_solverstate(5, "x.caffemodel", hist, 2), tmp_path / "x.solverstate")
    state = read_solverstate(path)
    assert state.iter == 5 and state.current_step == 2
    assert [h.shape for h in history_arrays(state)] == [(2, 3), (2,)]


def test_caffemodel_is_not_a_solverstate(golden, tmp_path):
    with pytest.raises(FormatError, match="not a solverstate"):
        read_solverstate(golden / "solver_run/snap_iter_10.caffemodel")
    with pytest.raises(FormatError, match="file not found"):
        read_solverstate(tmp_path / "none.solverstate")
