"""Solver pieces on plain tensors and a tiny fake net: lr policies, update rules, decay, clipping, signals,
NaN stop, snapshot/restore. Tolerances: float32 update math vs float64 references, relative 1e-5."""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine import glog
from pixsent.engine.logparse import parse_lines
from pixsent.engine.solvers import solver_type_name
from pixsent.engine.solvers.fused import build_plan, run_update
from pixsent.engine.solvers.lr_policy import LrState, learning_rate
from pixsent.engine.solvers.signals import Action, SignalHandler
from pixsent.engine.solvers.solver import DivergedError, Solver, SolverHooks
from pixsent.engine.solvers.updates import make_update
from pixsent.formats.blob import array_to_blob, blob_to_array

# ---------------------------------------------------------------------------- lr policies


def _param(**kw) -> caffe_pb2.SolverParameter:
    return caffe_pb2.SolverParameter(**kw)


@pytest.mark.parametrize(
    ("kw", "closed"),
    [
        (dict(lr_policy="fixed", base_lr=0.01), lambda it: 0.01),
        (dict(lr_policy="step", base_lr=0.01, gamma=0.5, stepsize=6), lambda it: 0.01 * 0.5 ** (it // 6)),
        (dict(lr_policy="exp", base_lr=0.1, gamma=0.9), lambda it: 0.1 * 0.9**it),
        (
            dict(lr_policy="inv", base_lr=0.1, gamma=1e-3, power=0.75),
            lambda it: 0.1 * (1 + 1e-3 * it) ** -0.75,
        ),
        (dict(lr_policy="poly", base_lr=0.1, power=2.0, max_iter=50), lambda it: 0.1 * (1 - it / 50) ** 2),
        (
            dict(lr_policy="sigmoid", base_lr=0.1, gamma=-0.2, stepsize=20),
            lambda it: 0.1 / (1 + math.exp(0.2 * (it - 20))),
        ),
    ],
)
def test_lr_policy_matches_closed_form(kw, closed):
    p = _param(**kw)
    state = LrState(0)
    for it in range(0, 50):
        state.iter = it
        assert learning_rate(p, state) == pytest.approx(closed(it), rel=1e-5)  # float32 fields, as Caffe


def test_step_and_multistep_current_step():
    p = _param(lr_policy="step", base_lr=1.0, gamma=0.1, stepsize=4)
    s = LrState(9)
    learning_rate(p, s)
    assert s.current_step == 2
    p = _param(lr_policy="multistep", base_lr=1.0, gamma=0.5, stepvalue=[3, 7])
    s = LrState(0)
    rates = []
    for it in range(10):
        s.iter = it
        rates.append(learning_rate(p, s))
    assert rates == [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    assert s.current_step == 2
    restored = LrState(8, current_step=2)  # current_step comes back from a solverstate
    assert learning_rate(p, restored) == 0.25


def test_unknown_policy_and_legacy_type():
    from pixsent.errors import PixsentError

    with pytest.raises(PixsentError, match="lr_policy"):
        learning_rate(_param(lr_policy="cosine"), LrState(0))
    assert solver_type_name(_param(solver_type=caffe_pb2.SolverParameter.ADAM)) == "Adam"
    assert solver_type_name(_param(type="RMSProp")) == "RMSProp"
    assert solver_type_name(_param()) == "SGD"


# ---------------------------------------------------------------------------- update rules


def _reference(kind: str, grads: list[np.ndarray], lr: float, p: dict) -> tuple[list[np.ndarray], list]:
    """Textbook float64 forms of Caffe's rules: the steps and the final history sets.

    Hyper-parameters are float proto fields, so they (and 1 - them, as Caffe forms it in float) are rounded
    to float32 first: 1 - float32(0.999) is 1.3e-5 away from 0.001 in relative terms.
    """
    f = lambda x: float(np.float32(x))  # noqa: E731
    m, m2, d, rd = f(p["momentum"]), f(p["momentum2"]), f(p["delta"]), f(p["rms_decay"])
    h = np.zeros_like(grads[0])
    h2 = np.zeros_like(grads[0])
    steps = []
    for t, g in enumerate(grads):
        if kind == "SGD":
            h = m * h + lr * g
            steps.append(h.copy())
        elif kind == "Nesterov":
            old = h
            h = m * h + lr * g
            steps.append(h + m * (h - old))
        elif kind == "AdaGrad":
            h = h + g * g
            steps.append(lr * g / (np.sqrt(h) + d))
        elif kind == "RMSProp":
            h = rd * h + f(1 - rd) * g * g
            steps.append(lr * g / (np.sqrt(h) + d))
        elif kind == "AdaDelta":
            h = m * h + f(1 - m) * g * g
            u = g * np.sqrt((h2 + d) / (h + d))
            h2 = m * h2 + f(1 - m) * u * u
            steps.append(lr * u)
        elif kind == "Adam":
            h = m * h + f(1 - m) * g
            h2 = m2 * h2 + f(1 - m2) * g * g
            c = math.sqrt(1 - m2 ** (t + 1)) / (1 - m ** (t + 1))
            steps.append(lr * c * h / (np.sqrt(h2) + d))
    return steps, [h, h2]


@pytest.mark.parametrize("kind", ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
def test_update_rules_match_reference(kind):
    hp = dict(momentum=0.9, momentum2=0.999, delta=1e-6, rms_decay=0.98)
    if kind == "AdaDelta":
        hp["momentum"] = 0.95
    rule = make_update(kind, _param(**hp))
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(4, 5)).astype(np.float32) for _ in range(6)]
    hist = [torch.zeros(4, 5) for _ in range(rule.history_sets)]
    lr = 0.01
    ref_steps, ref_hist = _reference(kind, [g.astype(np.float64) for g in grads], lr, hp)
    for t, g in enumerate(grads):
        step = rule.step(torch.from_numpy(g.copy()), hist, lr, t).numpy()
        ref = ref_steps[t]
        assert np.abs(step - ref).max() / np.abs(ref).max() < 1e-5, (kind, t)
    for k in range(rule.history_sets):
        assert np.abs(hist[k].numpy() - ref_hist[k]).max() / np.abs(ref_hist[k]).max() < 1e-5
    assert rule.history_sets == (2 if kind in ("AdaDelta", "Adam") else 1)


# ---------------------------------------------------------------------------- fused (slab) update

KINDS = ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"]


def _fused_case(seed: int):
    """Parameters of several shapes and (lr_mult, decay_mult) groups, one non-contiguous, with grads and
    non-zero histories: W, diffs, histories, lr_mults, decay_mults."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3, 3, 3), (4,), (6, 5), (6,), (37,), (2, 6), (3, 4)]
    lr_mults = [1.0, 2.0, 1.0, 2.0, 0.0, 10.0, 1.0]
    decay_mults = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    ws = [torch.randn(s, generator=g) for s in shapes]
    ws[-1] = torch.randn(4, 3, generator=g).t()  # a transposed (non-contiguous) parameter stays whole
    diffs = [torch.randn(w.shape, generator=g) for w in ws]
    diffs[-1] = torch.randn(4, 3, generator=g).t()
    return ws, diffs, lr_mults, decay_mults


def _reference_update(rule, ws, diffs, hist, rates, decays, kind, normalize, it):
    """The per-tensor path: each parameter in turn, ``Update.step`` on whole tensors."""
    for i, (w, d) in enumerate(zip(ws, diffs)):
        if normalize is not None:
            d.mul_(normalize)
        if decays[i]:
            d.add_(w if kind == "L2" else torch.sign(w), alpha=decays[i])
        w.sub_(rule.step(d, [h[i] for h in hist], rates[i], it))


@pytest.mark.parametrize("reg", ["L2", "L1"])
@pytest.mark.parametrize("kind", KINDS)
def test_fused_update_matches_per_tensor_rule(kind, reg):
    hp = dict(momentum=0.9, momentum2=0.999, delta=1e-6, rms_decay=0.98)
    rule = make_update(kind, _param(**hp))
    ws, diffs, lr_mults, decay_mults = _fused_case(7)
    ref_ws, ref_diffs = [w.clone() for w in ws], [d.clone() for d in diffs]
    hist = [[torch.rand(w.shape) * 0.1 for w in ws] for _ in range(rule.history_sets)]
    ref_hist = [[h.clone() for h in hs] for hs in hist]
    sets = max(rule.scratch_sets, 1)
    plan = build_plan(ws, diffs, hist, lr_mults, decay_mults, sets, slab_elements=16)
    assert len(plan.mults) == 4 and max(s.size for s in plan.slabs if len(s.data) > 1) <= 16
    assert any(len(s.data) > 1 for s in plan.slabs)  # small tensors share slabs, large ones are cut
    for it, normalize in enumerate([None, 0.5, None]):
        rates = [0.01 * m for m, _ in plan.mults]
        decays = [0.005 * dm for _, dm in plan.mults]
        run_update(plan, rule, rates, decays, reg, normalize, it)
        per_param = [plan.mults.index((lr, dm)) for lr, dm in zip(lr_mults, decay_mults)]
        _reference_update(
            rule,
            ref_ws,
            ref_diffs,
            ref_hist,
            [rates[k] for k in per_param],
            [decays[k] for k in per_param],
            reg,
            normalize,
            it,
        )
        pairs = list(zip(ws, ref_ws)) + list(zip(diffs, ref_diffs))
        pairs += [(h, r) for hs, rs in zip(hist, ref_hist) for h, r in zip(hs, rs)]
        for got, want in pairs:
            scale = max(float(want.abs().max()), 1e-30)
            assert float((got - want).abs().max()) / scale <= 1e-6, (kind, reg, it)
        for i, d in enumerate(diffs):  # the next iteration's gradients, written in place as backward does
            d.copy_(torch.randn(d.shape, generator=torch.Generator().manual_seed(100 * it + i)))
            ref_diffs[i].copy_(d)


def test_update_plan_follows_replaced_diffs():
    s = _solver(momentum=0.0, weight_decay=0.0)
    s.net.W.grad = torch.full((2, 3), 1.0)
    s.net.b.grad = torch.zeros(2)
    s.apply_update()
    W1 = s.net.W.detach().clone()
    s.net.W.grad = torch.full((2, 3), 2.0)  # a new diff tensor: the cached slabs must not keep the old one
    s.apply_update()
    assert torch.allclose(s.net.W.detach(), W1 - 0.2, rtol=1e-6, atol=1e-7)
    assert torch.allclose(s.net.W.grad, torch.full((2, 3), 0.2), rtol=1e-6)  # diff holds the step (Caffe)


def test_clear_diffs_zeroes_without_net_method():
    s = _solver()
    s.net.clear_param_diffs = None  # a net without ClearParamDiffs: the solver zeroes the diffs itself
    s.net.W.grad = torch.ones(2, 3)
    s._clear_diffs()
    assert torch.count_nonzero(s.net.W.grad) == 0 and s.net.b.grad is None


# ---------------------------------------------------------------------------- a tiny fake net


class FakeNet:
    """Softmax regression on fixed data with the Net interface (ip weights lr_mult 1, bias lr_mult 2)."""

    def __init__(self, net_param, phase, stages=(), level=0, nan_at: int | None = None):
        g = torch.Generator().manual_seed(3)
        self.name = net_param.name
        self.layer_names = ["ip", "loss"]
        self.W = torch.nn.Parameter(torch.randn(2, 3, generator=g) * 0.1)
        self.b = torch.nn.Parameter(torch.zeros(2))
        self.x = torch.randn(8, 3, generator=g)
        self.y = (self.x[:, 0] > 0).long()
        self.params_lr = [1.0, 2.0]
        self.params_weight_decay = [1.0, 0.0]
        self.learnable_param_names = ["ip/0", "ip/1"]
        self.calls = 0
        self.nan_at = nan_at
        self._loss = None

    @property
    def learnable_params(self):
        return [self.W, self.b]

    def forward(self):
        self.calls += 1
        logits = self.x @ self.W.t() + self.b
        self._loss = torch.nn.functional.cross_entropy(logits, self.y)
        if self.nan_at is not None and self.calls >= self.nan_at:
            self._loss = self._loss * float("nan")
        return float(self._loss.detach())

    def backward(self):
        self._loss.backward()

    def clear_param_diffs(self):
        for p in self.learnable_params:
            if p.grad is not None:
                p.grad.zero_()

    def output_values(self):
        return {"loss": float(self._loss.detach())}

    def share_weights(self, other):
        self.W, self.b = other.W, other.b

    def to_proto(self, write_diff=False):
        net = caffe_pb2.NetParameter(name=self.name)
        layer = net.layer.add(name="ip", type="InnerProduct")
        for p in self.learnable_params:
            layer.blobs.add().CopyFrom(array_to_blob(p.detach().numpy()))
        return net

    def copy_trained_layers_from(self, src):
        from pixsent.formats.caffemodel import read_caffemodel

        net = src if isinstance(src, caffe_pb2.NetParameter) else read_caffemodel(src)
        for layer in net.layer:
            if layer.name == "ip":
                with torch.no_grad():
                    for p, blob in zip(self.learnable_params, layer.blobs):
                        p.copy_(torch.from_numpy(blob_to_array(blob)))


def _solver_param(**kw) -> caffe_pb2.SolverParameter:
    net = caffe_pb2.NetParameter(name="Fake")
    net.layer.add(name="ip", type="InnerProduct", top=["ip"])
    net.layer.add(name="loss", type="SoftmaxWithLoss", top=["loss"])
    base = dict(
        net_param=net,
        base_lr=0.1,
        momentum=0.9,
        weight_decay=0.01,
        lr_policy="fixed",
        max_iter=6,
        display=1,
        snapshot_prefix="fake",
        random_seed=1,
    )
    base.update(kw)
    return caffe_pb2.SolverParameter(**base)


def _solver(hooks=None, nan_at=None, **kw) -> Solver:
    return Solver(
        _solver_param(**kw),
        hooks=hooks,
        net_factory=lambda p, ph, st, lv: FakeNet(p, ph, st, lv, nan_at=nan_at),
    )


def test_l1_and_l2_regularisation_with_decay_mult():
    for kind in ("L1", "L2"):
        s = _solver(regularization_type=kind, momentum=0.0)
        W0, b0 = s.net.W.detach().clone(), s.net.b.detach().clone()
        s.net.W.grad = torch.full_like(W0, 0.5)
        s.net.b.grad = torch.full_like(b0, 0.25)
        s.apply_update()
        reg = torch.sign(W0) if kind == "L1" else W0
        expected_w = W0 - 0.1 * (0.5 + 0.01 * reg)
        expected_b = b0 - 0.2 * 0.25  # lr_mult 2, decay_mult 0: no decay on the bias
        assert torch.allclose(s.net.W.detach(), expected_w, rtol=1e-6, atol=1e-7)
        assert torch.allclose(s.net.b.detach(), expected_b, rtol=1e-6, atol=1e-7)


def test_clip_gradients_scales_global_norm(capsys):
    s = _solver(clip_gradients=1.0, weight_decay=0.0, momentum=0.0)
    s.net.W.grad = torch.full((2, 3), 3.0)
    s.net.b.grad = torch.full((2,), 4.0)
    norm = math.sqrt(6 * 9 + 2 * 16)
    W0 = s.net.W.detach().clone()
    s.apply_update()
    assert torch.allclose(s.net.W.detach(), W0 - 0.1 * 3.0 / norm, rtol=1e-6)
    assert "Gradient clipping: scaling down gradients (L2 norm" in capsys.readouterr().err


def test_iter_size_divides_accumulated_gradient():
    one = _solver(iter_size=1, max_iter=1, snapshot_after_train=False)
    two = _solver(iter_size=3, max_iter=1, snapshot_after_train=False)
    one.solve()
    two.solve()
    assert torch.allclose(one.net.W.detach(), two.net.W.detach(), rtol=1e-5, atol=1e-7)


def test_nan_loss_stops_with_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = _solver(nan_at=4)
    with pytest.raises(DivergedError, match="iteration 3"):
        s.solve()


def test_log_lines_parse_back(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    s = _solver(test_iter=[2], test_interval=3, lr_policy="step", gamma=0.5, stepsize=2)
    s.solve()
    err = capsys.readouterr().err
    assert "Optimization Done." in err
    log = parse_lines(err.splitlines())
    assert list(log.iters) == list(range(7))
    assert list(log.lr_iters) == list(range(6))
    assert np.allclose(log.lr, [0.1 * 0.5 ** (i // 2) for i in range(6)], rtol=1e-6)
    assert list(log.test_iters) == [0, 3, 6]
    assert "loss" in log.test_outputs and "loss" in log.train_outputs
    line = next(x for x in err.splitlines() if "Train net output #0" in x)
    assert line.endswith(" loss)") and "(* 1 = " in line
    assert (tmp_path / "fake_iter_6.caffemodel").exists() and (tmp_path / "fake_iter_6.solverstate").exists()


def test_snapshot_resume_continues_identically(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    straight = _solver(type="Adam", momentum=0.9, max_iter=6, snapshot=3)
    straight.solve()
    state = caffe_pb2.SolverState.FromString((tmp_path / "fake_iter_3.solverstate").read_bytes())
    assert state.iter == 3 and state.learned_net == "fake_iter_3.caffemodel"
    assert len(state.history) == 4  # Adam: m of both params, then v of both
    assert list(state.history[0].shape.dim) == [2, 3] and list(state.history[2].shape.dim) == [2, 3]
    resumed = _solver(type="Adam", momentum=0.9, max_iter=6, snapshot=3, snapshot_prefix="again")
    resumed.restore("fake_iter_3.solverstate")
    assert resumed.iter == 3
    resumed.solve()
    assert torch.allclose(straight.net.W.detach(), resumed.net.W.detach(), rtol=1e-6, atol=0)


def _signal_at(k: int, sig: int):
    def cb(solver):
        if solver.iter == k:
            os.kill(os.getpid(), sig)

    return cb


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_snapshots_and_continues(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with SignalHandler() as handler:
        hooks = SolverHooks(on_start=[_signal_at(2, signal.SIGHUP)], action=handler.requested_action)
        s = _solver(hooks=hooks, snapshot_after_train=False)
        s.solve()
    assert s.iter == 6
    assert (tmp_path / "fake_iter_3.caffemodel").exists() and (tmp_path / "fake_iter_3.solverstate").exists()
    assert "Optimization Done." in capsys.readouterr().err


def test_sigint_snapshots_and_stops(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with SignalHandler() as handler:
        hooks = SolverHooks(on_start=[_signal_at(2, signal.SIGINT)], action=handler.requested_action)
        s = _solver(hooks=hooks)
        s.solve()
    assert s.iter == 3
    assert (tmp_path / "fake_iter_3.solverstate").exists()
    err = capsys.readouterr().err
    assert "Optimization stopped early." in err and "Optimization Done." not in err


def test_signal_effect_none_is_ignored():
    with SignalHandler(Action.NONE, Action.NONE) as handler:
        os.kill(os.getpid(), signal.SIGINT)
        assert handler.requested_action() == Action.NONE


def test_glog_line_format(capsys):
    glog.info("hello world", "solver.cpp:45")
    line = capsys.readouterr().err.strip()
    import re

    assert re.fullmatch(r"I\d{4} \d{2}:\d{2}:\d{2}\.\d{6} +\d+ solver\.cpp:45\] hello world", line)
    assert (
        glog.fmt(0.6933771) == "0.693377"
        and glog.fmt(125.0) == "125"
        and glog.fmt(1.13267e-41) == "1.13267e-41"
    )
