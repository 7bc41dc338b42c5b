"""Caffe's training loop (Solver::Solve/Step/Test and SGDSolver::ApplyUpdate) over a pixsent Net.

Order per iteration, as in Caffe 1.0: test when ``iter % test_interval == 0`` (at 0 only with
test_initialization); zero the parameter diffs; ``iter_size`` forward/backward passes whose mean loss feeds
the smoothed loss over ``average_loss``; the display lines; then the update: rate from the lr policy
(logged), clip by the global L2 norm of the *accumulated* diffs, and per parameter: divide by iter_size,
add L2 or L1 weight decay times decay_mult, type-specific step with rate times lr_mult, ``W -= step``
(all parameters at once, slab by slab: ``fused.py``).
Then iter += 1 and the periodic snapshot. After max_iter: snapshot unless just done, one extra train
forward (a single batch) logged as ``Iteration N, loss = L``, a final test, ``Optimization Done.``.
Parameters with lr_mult 0 still go through decay and history, exactly as in Caffe (their history is saved).

Exact resume: each snapshot also writes ``.solverstate.pixsent`` (resume_state.py) with what a solverstate
cannot hold: the training thread's Caffe generator (Dropout), the smoothed-loss window and every data
layer's position. During a test round (a snapshot by signal, or a stop) the test nets' positions and the
generator are those at the round's start, because a resumed run repeats the test of its first iteration.
A solverstate without a usable sidecar resumes as Caffe does, with a warning.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from google.protobuf import text_format

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine import glog
from pixsent.engine import rng as caffe_rng
from pixsent.engine.solvers import resume_state
from pixsent.engine.solvers import snapshot as snap
from pixsent.engine.solvers.fused import UpdatePlan, build_plan, plan_key, run_update
from pixsent.engine.solvers.lr_policy import LrState, learning_rate
from pixsent.engine.solvers.signals import Action
from pixsent.engine.solvers.updates import make_update
from pixsent.errors import DivergedError, PixsentError
from pixsent.formats.origin import naming

F32 = np.float32


@dataclass
class SolverHooks:
    """Optional callbacks: ``on_start(solver)`` before each iteration's passes, ``on_gradients_ready``
    after them, and ``action()`` polled like Caffe's signal handler (returns an Action)."""

    on_start: list[Callable[[Solver], None]] = field(default_factory=list)
    on_gradients_ready: list[Callable[[Solver], None]] = field(default_factory=list)
    action: Callable[[], Action] | None = None


def _dist_world() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _seed_everything(seed: int) -> None:
    """Seed torch (and the engine's context RNG when it offers one) like Caffe::set_random_seed."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    try:
        from pixsent.engine import context
    except ImportError:
        return
    setter = getattr(context, "set_random_seed", None)
    if setter is not None:
        setter(seed)


def _loss_weights(net, net_param: caffe_pb2.NetParameter) -> dict[str, float]:
    """Top blob name -> loss weight (``loss_weight`` or 1 for the first top of a ``*Loss`` layer)."""
    given = getattr(net, "blob_loss_weights", None)
    if isinstance(given, dict):
        return {k: float(v) for k, v in given.items()}
    names = set(getattr(net, "layer_names", []))
    weights: dict[str, float] = {}
    for layer in net_param.layer:
        if names and layer.name not in names:
            continue
        for i, top in enumerate(layer.top):
            if i < len(layer.loss_weight):
                w = float(layer.loss_weight[i])
            else:
                w = 1.0 if (i == 0 and layer.type.endswith("Loss")) else 0.0
            if w:
                weights[top] = w
            else:
                weights.pop(top, None)
    return weights


def _flat_outputs(values: dict) -> list[tuple[str, float]]:
    """Output blobs in Caffe's order (sorted names), one entry per element."""
    out: list[tuple[str, float]] = []
    for name in sorted(values):
        arr = np.asarray(values[name], dtype=np.float32).ravel()
        out.extend((name, float(v)) for v in arr)
    return out


def _output_line(kind: str, k: int, name: str, value: float, weight: float) -> str:
    tail = f" (* {glog.fmt(weight)} = {glog.fmt(float(F32(weight) * F32(value)))} loss)" if weight else ""
    return f"    {kind} net output #{k}: {name} = {glog.fmt(value)}{tail}"


class Solver:
    """Builds the train and test nets of a SolverParameter and runs Caffe's loop on them."""

    def __init__(
        self,
        param: caffe_pb2.SolverParameter,
        *,
        device: str | torch.device = "cpu",
        hooks: SolverHooks | None = None,
        net_factory: Callable | None = None,
    ) -> None:
        from pixsent.engine.solvers.types import solver_type_name

        self.param = param
        self.device = torch.device(device)
        self.hooks = hooks or SolverHooks()
        self.rank, self.world = _dist_world()
        glog.CONFIG.enabled = glog.CONFIG.enabled and self.rank == 0
        self.type = solver_type_name(param)
        self.rule = make_update(self.type, param)
        if param.average_loss < 1:
            raise PixsentError("solver: average_loss should be at least 1")
        glog.info(
            "Initializing solver from parameters: \n" + text_format.MessageToString(param), "solver.cpp:45"
        )
        if param.random_seed >= 0:
            _seed_everything(int(param.random_seed) + self.rank)
        self._net_factory = net_factory or self._default_factory
        self._weights_cache: dict[str, caffe_pb2.NetParameter] = {}
        self.net, self.net_param = self._init_train_net()
        self.test_nets: list = []
        self._init_test_nets()
        # every net holds its own copy of the weights now: the parsed caffemodels (as large as the weights,
        # 228 MB for CaffeNet) are not needed any more (Caffe frees them after CopyTrainedLayersFrom too)
        self._weights_cache.clear()
        self.iter = 0
        self.lr_state = LrState(0, 0)
        self.history: list[list[torch.Tensor]] = [
            [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
            for _ in range(self.rule.history_sets)
        ]
        self._update_plan: UpdatePlan | None = None
        self.losses: list[float] = []
        self.smoothed_loss = 0.0
        self.requested_early_exit = False
        self.last_snapshot_iter = -1
        self._loss_start_iter = 0
        self._resume_loss: dict | None = None  # a smoothed-loss window restored from a sidecar
        self._test_round: dict | None = None  # random state at the start of an unfinished test round
        glog.info("Solver scaffolding done.", "solver.cpp:57")

    # ------------------------------------------------------------------ nets
    def _default_factory(self, net_param, phase, stages, level):
        from pixsent.engine.net import Net

        # a test net's layers named like the train net's take its parameters right after set-up
        train = phase == caffe_pb2.TRAIN or getattr(self, "net", None) is None
        shared = () if train else self._shared_names()
        return Net(
            net_param,
            phase,
            stages=tuple(stages),
            level=level,
            device=self.device,
            log=True,
            shared_layers=shared,
        )

    def _shared_names(self) -> frozenset[str]:
        return frozenset(name for name, layer in zip(self.net.layer_names, self.net.layers) if layer.blobs)

    def _read_net(self, path: str) -> caffe_pb2.NetParameter:
        from pixsent.formats.prototxt import read_net

        return read_net(path)

    def _make(self, src: caffe_pb2.NetParameter, phase: int, extra: caffe_pb2.NetState | None):
        """Merge NetState as Caffe does (phase, the net's own state, the solver's), then build the net."""
        state = caffe_pb2.NetState(phase=phase)
        state.MergeFrom(src.state)
        if extra is not None:
            state.MergeFrom(extra)
        net_param = caffe_pb2.NetParameter()
        net_param.CopyFrom(src)
        net_param.state.CopyFrom(state)
        stages = [s for s in state.stage if s]
        return self._net_factory(net_param, phase, stages, int(state.level)), net_param

    def _init_train_net(self):
        p = self.param
        given = [
            p.HasField("net"),
            p.HasField("net_param"),
            p.HasField("train_net"),
            p.HasField("train_net_param"),
        ]
        if sum(given) == 0:
            raise PixsentError(
                "solver: specify a train net with net, net_param, train_net or train_net_param"
            )
        if sum(given) > 1:
            raise PixsentError("solver: give only one of net, net_param, train_net, train_net_param")
        if p.HasField("train_net_param"):
            glog.info("Creating training net specified in train_net_param.", "solver.cpp:94")
            src = p.train_net_param
        elif p.HasField("train_net"):
            glog.info(f"Creating training net from train_net file: {p.train_net}", "solver.cpp:98")
            src = self._read_net(p.train_net)
        elif p.HasField("net_param"):
            glog.info("Creating training net specified in net_param.", "solver.cpp:102")
            src = p.net_param
        else:
            glog.info(f"Creating training net from net file: {p.net}", "solver.cpp:102")
            src = self._read_net(p.net)
        origin = p.train_net if p.HasField("train_net") else p.net if p.HasField("net") else None
        with naming(origin):  # layer errors ("layer 'x': ...") also name the net file
            net, net_param = self._make(
                src, caffe_pb2.TRAIN, p.train_state if p.HasField("train_state") else None
            )
        self._load_weights(net)
        return net, net_param

    def _init_test_nets(self) -> None:
        p = self.param
        generic = p.HasField("net") or p.HasField("net_param")
        n_specific = len(p.test_net_param) + len(p.test_net)
        if generic:
            if len(p.test_iter) < n_specific:
                raise PixsentError("solver: test_iter must be specified for each test network")
        elif len(p.test_iter) != n_specific:
            raise PixsentError("solver: test_iter must be specified for each test network")
        n_total = n_specific + (len(p.test_iter) - n_specific if generic else 0)
        if len(p.test_state) and len(p.test_state) != n_total:
            raise PixsentError("solver: test_state must be unspecified or specified once per test net")
        if n_total and p.test_interval <= 0:
            raise PixsentError("solver: test_interval must be > 0 when there are test nets")
        sources: list[tuple[str, caffe_pb2.NetParameter, str | None]] = []
        sources += [("test_net_param", q, None) for q in p.test_net_param]
        sources += [(f"test net file: {f}", self._read_net(f), f) for f in p.test_net]
        for _ in range(n_total - n_specific):
            if p.HasField("net_param"):
                sources.append(("net_param", p.net_param, None))
            else:
                sources.append((f"net file: {p.net}", self._read_net(p.net), p.net))
        self.test_net_params = []
        for i, (what, src, origin) in enumerate(sources):
            glog.info(f"Creating test net (#{i}) specified by {what}", "solver.cpp:190")
            with naming(origin):
                net, net_param = self._make(
                    src, caffe_pb2.TEST, p.test_state[i] if len(p.test_state) else None
                )
            self._load_weights(net, report=False)
            net.share_weights(self.net)
            self.test_nets.append(net)
            self.test_net_params.append(net_param)

    def _load_weights(self, net, report: bool = True) -> None:
        """Copy the layers of every caffemodel in ``param.weights`` (each may be a comma list); with
        ``report`` one line names the layers with parameters that none of them provided."""
        from pixsent.engine.coverage import log_uncovered
        from pixsent.formats.caffemodel import read_caffemodel

        names = [w for entry in self.param.weights for w in entry.split(",") if w]
        covered: set[str] = set()
        for name in names:
            glog.info(f"Finetuning from {name}", "solver.cpp:72")
            if name not in self._weights_cache:
                self._weights_cache[name] = read_caffemodel(name)
            covered |= net.copy_trained_layers_from(self._weights_cache[name], origin=name, report=False)
        if names and report:
            log_uncovered(net, covered, ", ".join(names))

    @property
    def params(self) -> list[torch.Tensor]:
        """The train net's learnable parameters, read afresh (weight copies may replace tensors)."""
        return list(self.net.learnable_params)

    @property
    def net_name(self) -> str:
        return self.net_param.name

    # ------------------------------------------------------------------ loop
    def _action(self) -> Action:
        return self.hooks.action() if self.hooks.action is not None else Action.NONE

    def _update_smoothed_loss(self, loss: float, start_iter: int) -> None:
        """Caffe's running mean over the last ``average_loss`` losses (float32 arithmetic)."""
        n = self.param.average_loss
        if len(self.losses) < n:
            self.losses.append(loss)
            size = len(self.losses)
            self.smoothed_loss = float((F32(self.smoothed_loss) * F32(size - 1) + F32(loss)) / F32(size))
        else:
            idx = (self.iter - start_iter) % n
            self.smoothed_loss = float(F32(self.smoothed_loss) + (F32(loss) - F32(self.losses[idx])) / F32(n))
            self.losses[idx] = loss

    def _clear_diffs(self) -> None:
        """Zero every parameter diff once (Caffe's ClearParamDiffs): the net's own method when it has one."""
        clear = getattr(self.net, "clear_param_diffs", None)
        if clear is not None:
            clear()
            return
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            torch._foreach_zero_(grads)

    def _start_loss_window(self) -> int:
        """Caffe's Step starts a fresh smoothed-loss window; after an exact resume the saved one goes on.
        Returns the iteration the window counts from."""
        saved, self._resume_loss = self._resume_loss, None
        if saved is not None:
            self.losses = [float(v) for v in saved["losses"]]
            self.smoothed_loss = float(saved["smoothed"])
            self._loss_start_iter = int(saved["start_iter"])
        else:
            self.losses, self.smoothed_loss, self._loss_start_iter = [], 0.0, self.iter
        return self._loss_start_iter

    def step(self, iters: int) -> None:
        """Run ``iters`` iterations (Caffe's Solver::Step)."""
        p = self.param
        stop_iter = self.iter + iters
        start_iter = self._start_loss_window()
        last_time = time.perf_counter()
        iterations_last = self.iter
        while self.iter < stop_iter:
            self._clear_diffs()
            if (
                p.test_interval
                and self.iter % p.test_interval == 0
                and (self.iter > 0 or p.test_initialization)
            ):
                self.test_all()
                if self.requested_early_exit:
                    break
            for cb in self.hooks.on_start:
                cb(self)
            display = bool(p.display) and self.iter % p.display == 0
            loss = F32(0)
            for _ in range(max(1, p.iter_size)):
                self.net.whole_passes = True  # a whole forward and backward: fast paths may span layers
                try:
                    loss += F32(self.net.forward())
                    self.net.backward()
                finally:
                    self.net.whole_passes = False
            loss /= F32(max(1, p.iter_size))
            if self.world > 1:
                loss = F32(self._all_reduce_mean(float(loss)))
            if not math.isfinite(float(loss)):
                raise DivergedError(
                    f"solver: training loss is {float(loss)} at iteration {self.iter}; "
                    "lower base_lr or check the data"
                )
            self._update_smoothed_loss(float(loss), start_iter)
            if display:
                now = time.perf_counter()
                lapse = now - last_time
                per_s = (self.iter - iterations_last) / (lapse if lapse else 1.0)
                glog.info(
                    f"Iteration {self.iter} ({glog.fmt(per_s)} iter/s, {glog.fmt(lapse)}s/{p.display} "
                    f"iters), loss = {glog.fmt(self.smoothed_loss)}",
                    "solver.cpp:239",
                )
                last_time, iterations_last = now, self.iter
                weights = _loss_weights(self.net, self.net_param)
                for k, (name, value) in enumerate(_flat_outputs(self.net.output_values())):
                    glog.info(_output_line("Train", k, name, value, weights.get(name, 0.0)), "solver.cpp:258")
            for cb in self.hooks.on_gradients_ready:
                cb(self)
            if self.world > 1:
                self._all_reduce_grads()
            self.apply_update()
            self.iter += 1
            request = self._action()
            if (p.snapshot and self.iter % p.snapshot == 0 and self.rank == 0) or request == Action.SNAPSHOT:
                self.snapshot()
            if request == Action.STOP:
                self.requested_early_exit = True
                break

    def solve(self) -> None:
        """Train from the current iteration to max_iter, then the final loss line and test (Solver::Solve)."""
        p = self.param
        glog.info(f"Solving {self.net_name}", "solver.cpp:289")
        glog.info(f"Learning Rate Policy: {p.lr_policy}", "solver.cpp:290")
        self.requested_early_exit = False
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            glog.info("Optimization stopped early.", "solver.cpp:311")
            return
        if p.display and self.iter % p.display == 0:
            with torch.no_grad():
                loss = float(self.net.forward())
            if self.world > 1:
                loss = self._all_reduce_mean(loss)
            self._update_smoothed_loss(loss, self._loss_start_iter)
            glog.info(f"Iteration {self.iter}, loss = {glog.fmt(self.smoothed_loss)}", "solver.cpp:327")
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        glog.info("Optimization Done.", "solver.cpp:332")

    # ------------------------------------------------------------------ test
    def test_all(self) -> list[dict[str, float]]:
        """Run every test net; returns per net the mean of each output element (name, or name#k)."""
        if self.world == 1:
            self._test_round = {
                "rng": caffe_rng.current().get_state(),
                "test": [_net_state(n) for n in self.test_nets],
            }
        results = []
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            results.append(self.test(i))
        if not self.requested_early_exit:
            self._test_round = None
        return results

    def test(self, i: int) -> dict[str, float]:
        """Caffe's Solver::Test: test_iter[i] forwards of test net i, mean outputs logged."""
        p = self.param
        glog.info(f"Iteration {self.iter}, Testing net (#{i})", "solver.cpp:347")
        net = self.test_nets[i]
        net.share_weights(self.net)
        scores: list[F32] = []
        names: list[str] = []
        loss = F32(0)
        n = int(p.test_iter[i])
        for b in range(n):
            request = self._action()
            while request != Action.NONE:
                if request == Action.SNAPSHOT:
                    self.snapshot()
                elif request == Action.STOP:
                    self.requested_early_exit = True
                request = self._action()
            if self.requested_early_exit:
                break
            with torch.no_grad():
                iter_loss = net.forward()
            if p.test_compute_loss:
                loss += F32(iter_loss)
            flat = _flat_outputs(net.output_values())
            if b == 0:
                names = [nm for nm, _ in flat]
                scores = [F32(v) for _, v in flat]
            else:
                for k, (_, v) in enumerate(flat):
                    scores[k] += F32(v)
        if self.requested_early_exit:
            glog.info("Test interrupted.", "solver.cpp:391")
            return {}
        if p.test_compute_loss:
            glog.info(f"Test loss: {glog.fmt(float(loss / F32(n)))}", "solver.cpp:396")
        weights = _loss_weights(net, self.test_net_params[i])
        out: dict[str, float] = {}
        for k, (name, total) in enumerate(zip(names, scores)):
            mean = float(total / F32(n))
            glog.info(_output_line("Test", k, name, mean, weights.get(name, 0.0)), "solver.cpp:414")
            out[name if name not in out else f"{name}#{k}"] = mean
        return out

    # ------------------------------------------------------------------ update
    def learning_rate(self) -> float:
        """The rate for the current iteration (advances current_step for step/multistep)."""
        self.lr_state.iter = self.iter
        return learning_rate(self.param, self.lr_state)

    def _diff(self, p: torch.Tensor) -> torch.Tensor:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        return p.grad

    def clip_gradients(self, diffs: list[torch.Tensor] | None = None) -> None:
        """Scale every diff by clip/||g|| when the global L2 norm of all diffs exceeds ``clip_gradients``.

        As Caffe's ClipGradients: each diff's sum of squares is a float dot product, summed in float."""
        clip = F32(self.param.clip_gradients)
        if clip < 0:
            return
        if diffs is None:
            diffs = [self._diff(p) for p in self.params]
        sumsq = F32(0)
        for g in diffs:
            flat = g.reshape(-1)
            sumsq += F32(torch.dot(flat, flat).item())
        norm = F32(np.sqrt(sumsq))
        if norm > clip:
            scale = F32(clip / norm)
            glog.info(
                f"Gradient clipping: scaling down gradients (L2 norm {glog.fmt(float(norm))} > "
                f"{glog.fmt(float(clip))}) by scale factor {glog.fmt(float(scale))}",
                "sgd_solver.cpp:95",
            )
            torch._foreach_mul_(diffs, float(scale))

    def _plan(self, params: list[torch.Tensor], diffs: list[torch.Tensor]) -> UpdatePlan:
        """The slab layout of the update, rebuilt only when a tensor or a multiplier changed."""
        net = self.net
        sets = max(self.rule.scratch_sets, 1)  # one at least, for L1's sign(W)
        key = plan_key(params, diffs, self.history, net.params_lr, net.params_weight_decay, sets)
        if self._update_plan is None or self._update_plan.key != key:
            self._update_plan = build_plan(
                params, diffs, self.history, net.params_lr, net.params_weight_decay, sets
            )
        return self._update_plan

    def apply_update(self) -> float:
        """Caffe's SGDSolver::ApplyUpdate for every learnable parameter; returns the rate used.

        Per parameter, in Caffe's order: divide by iter_size (when above 1), add the L2 or L1 decay, the
        type's update value into the diff, W -= diff; run slab by slab (``fused.py``) after the clip."""
        rate = self.learning_rate()
        p = self.param
        if p.display and self.iter % p.display == 0:
            glog.info(f"Iteration {self.iter}, lr = {glog.fmt(rate)}", "sgd_solver.cpp:112")
        with torch.no_grad():
            params = self.params
            diffs = [self._diff(w) for w in params]
            self.clip_gradients(diffs)
            plan = self._plan(params, diffs)
            iter_size = max(1, p.iter_size)
            normalize = float(F32(1.0) / F32(iter_size)) if iter_size != 1 else None
            kind = p.regularization_type
            rates = [float(F32(rate) * F32(lr)) for lr, _ in plan.mults]
            decays = [float(F32(p.weight_decay) * F32(dm)) for _, dm in plan.mults]
            if any(decays) and kind not in ("L2", "L1"):
                raise PixsentError(f"solver: unknown regularization_type {kind!r} (use L2 or L1)")
            run_update(plan, self.rule, rates, decays, kind, normalize, self.iter)
        return rate

    # ------------------------------------------------------------------ distributed
    def _all_reduce_mean(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.world

    def _all_reduce_grads(self) -> None:
        """Sum every parameter diff over ranks and divide by the world size (data parallel)."""
        for p in self.params:
            g = self._diff(p)
            torch.distributed.all_reduce(g)
            g.div_(self.world)

    # ------------------------------------------------------------------ snapshots
    def history_arrays(self) -> list[np.ndarray]:
        """History blobs in solverstate order: set 0 of all params, then set 1 (AdaDelta, Adam)."""
        return [h.detach().cpu().numpy().astype(np.float32) for hs in self.history for h in hs]

    def snapshot(self) -> tuple[str, str]:
        """Write ``<prefix>_iter_N.caffemodel`` and ``.solverstate`` (rank 0 only)."""
        if self.rank != 0:
            return "", ""
        p = self.param
        if p.snapshot_format != caffe_pb2.SolverParameter.BINARYPROTO:
            raise PixsentError("solver: only snapshot_format BINARYPROTO is supported (HDF5 is not)")
        model = snap.write_model(self.net, p.snapshot_prefix, self.iter, p.snapshot_diff)
        resume = self.resume_tree() if self.world == 1 else None
        state = snap.write_state(
            model, p.snapshot_prefix, self.iter, self.lr_state.current_step, self.history_arrays(), resume
        )
        self.last_snapshot_iter = self.iter
        return model, state

    def restore(self, path: str) -> None:
        """Resume from a solverstate: iter, current_step, history and the weights of ``learned_net``."""
        state = snap.read_state(path)
        self.iter = state.iter
        if state.learned_net is not None:
            self.net.copy_trained_layers_from(str(state.learned_net))
        self.lr_state.current_step = state.current_step
        expected = sum(len(hs) for hs in self.history)
        if len(state.history) != expected:
            raise PixsentError(
                f"{path}: incorrect length of history blobs ({len(state.history)}, the {self.type} solver "
                f"of this net needs {expected})"
            )
        glog.info("SGDSolver: restoring history", "sgd_solver.cpp:336")
        flat = [h for hs in self.history for h in hs]
        for k, (h, arr) in enumerate(zip(flat, state.history)):
            if arr.size != h.numel():
                raise PixsentError(f"{path}: history blob {k} has {arr.size} values, expected {h.numel()}")
            h.copy_(torch.from_numpy(arr.reshape(tuple(h.shape))).to(h.device))
        self._restore_sidecar(path)

    # ------------------------------------------------------------------ exact resume
    def resume_tree(self) -> dict:
        """What the snapshot's sidecar holds (see the module docstring)."""
        round_ = self._test_round
        return {
            "iter": self.iter,
            "rng": round_["rng"] if round_ else caffe_rng.current().get_state(),
            "loss": {
                "losses": [float(v) for v in self.losses],
                "smoothed": float(self.smoothed_loss),
                "start_iter": int(self._loss_start_iter),
            },
            "train": _net_state(self.net),
            "test": round_["test"] if round_ else [_net_state(n) for n in self.test_nets],
        }

    def _restore_sidecar(self, path: str) -> None:
        """Restore the sidecar of solverstate ``path``, or say in one warning line why the run resumes as
        Caffe's would (data from the first record, random streams as after set-up)."""
        side = resume_state.sidecar_path(path)
        if self.world > 1:
            why = "a data-parallel run does not restore its sidecar"
        elif not side.exists():
            why = f"no {side.name} beside it (a snapshot of real Caffe or of an older pixsent)"
        else:
            try:
                self._apply_resume_tree(resume_state.read_sidecar(side), Path(path).read_bytes())
            except (PixsentError, KeyError, TypeError, ValueError) as exc:
                why = f"{side.name} not used: {exc}"
            else:
                glog.info(f"Restored data positions and random generators from {side}", "solver.cpp:0")
                return
        glog.warning(
            f"{path}: resuming as Caffe does, data from the first record and random streams as after "
            f"set-up, so the run will not equal an uninterrupted one: {why}",
            "solver.cpp:0",
        )

    def _apply_resume_tree(self, tree: dict, solverstate: bytes) -> None:
        """Check a sidecar against this solver and its solverstate, then restore it (all or nothing)."""
        if tree["solverstate_sha256"] != resume_state.digest(solverstate):
            raise PixsentError("it was written for another solverstate")
        if int(tree["iter"]) != self.iter:
            raise PixsentError(f"it is of iteration {tree['iter']}, the solverstate of {self.iter}")
        if len(tree["test"]) != len(self.test_nets):
            raise PixsentError(f"it has {len(tree['test'])} test nets, the solver {len(self.test_nets)}")
        pairs = [(self.net, tree["train"]), *zip(self.test_nets, tree["test"])]
        for net, state in pairs:
            mine = _net_state(net)
            if (state is None) != (mine is None):
                raise PixsentError("its nets do not match the solver's")
            reason = net.rng_state_mismatch(state) if state is not None else ""
            if reason:
                raise PixsentError(f"net {getattr(net, 'name', '?')!r}: {reason}")
        for net, state in pairs:
            if state is not None:
                net.restore_rng_state(state)
        caffe_rng.current().set_state(tree["rng"])
        self._resume_loss = tree["loss"]
        restarting = sorted({n for _, state in pairs if state for n in state.get("restarting", [])})
        if restarting:
            glog.warning(
                f"layers {', '.join(restarting)} start their data over: their position is not saved, so this "
                "run will not equal an uninterrupted one",
                "solver.cpp:0",
            )


def _net_state(net) -> dict | None:
    """A net's ``rng_state()``, None for nets without one (e.g. test doubles)."""
    get = getattr(net, "rng_state", None)
    return get() if get is not None else None


def solver_from_file(path: str, **kwargs) -> Solver:
    """A Solver for a solver prototxt (legacy solver_type upgraded by the reader)."""
    from pixsent.formats.prototxt import read_solver

    return Solver(read_solver(path), **kwargs)
