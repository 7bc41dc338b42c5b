"""Caffe's ``caffe`` command (tools/caffe.cpp) on pixsent's engine: train, test, time, device_query.

Flags keep Caffe's gflags spelling (``-solver S``, ``-weights A,B``, ``-snapshot X.solverstate``,
``-gpu 0|1,2|all``, ``-iterations N``, ``-stage a,b``, ``-level N``, ``-sigint_effect``, ``-sighup_effect``);
``--flag`` and ``-flag=value`` work too. Facts kept from caffe.cpp: weights and snapshot together are an
error; without ``-gpu`` a solver's ``solver_mode: GPU`` selects ``device_id`` (here falling back to the CPU
with a warning when no CUDA device exists); ``-gpu`` given explicitly without CUDA is an error; an unset
``snapshot_prefix`` becomes the solver file name without extension and a folder prefix gets the solver's
stem appended; ``-iterations`` defaults to 50 for test and time, and for train (a pixsent extension)
overrides max_iter. ``-gpu all`` with several GPUs trains data-parallel: one process per GPU
(torch.multiprocessing spawn, NCCL), gradients all-reduced and averaged, only rank 0 logs and snapshots.
"""

from __future__ import annotations

import argparse
import os
import time as _time
from dataclasses import dataclass
from pathlib import Path

from pixsent.engine import glog
from pixsent.errors import PixsentError

ACTIONS = ("train", "test", "time", "device_query")
#: what ``caffe --version`` prints (gflags' "<program> version <string>", Caffe 1.0)
VERSION_LINE = "caffe version 1.0.0"


@dataclass
class CaffeFlags:
    """Caffe's command-line flags (names as in tools/caffe.cpp)."""

    action: str = "train"
    solver: str = ""
    model: str = ""
    weights: str = ""
    snapshot: str = ""
    gpu: str = ""
    iterations: int | None = None
    stage: str = ""
    level: int = 0
    sigint_effect: str = "stop"
    sighup_effect: str = "snapshot"
    phase: str = ""
    engine: str | None = None


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add Caffe's flags in single-dash form (``-solver``) and double-dash form (``--solver``)."""
    parser.add_argument("action", choices=ACTIONS, help="train | test | time | device_query")
    parser.add_argument("-version", "--version", action="version", version=VERSION_LINE)

    def flag(name: str, **kw) -> None:
        parser.add_argument(f"-{name}", f"--{name}", dest=name, **kw)

    flag("solver", default="", help="solver prototxt (train)")
    flag("model", default="", help="net prototxt (test, time)")
    flag("weights", default="", help="caffemodel(s) to initialise from, comma separated")
    flag("snapshot", default="", help=".solverstate to resume training from")
    flag("gpu", default="", help="GPU id(s) '0' or '0,1', or 'all'; CPU when not given")
    flag("iterations", type=int, default=None, help="test/time iterations (default 50); train: max_iter")
    flag("stage", default="", help="comma-separated NetState stages")
    flag("level", type=int, default=0, help="NetState level")
    flag("sigint_effect", default="stop", help="stop | snapshot | none")
    flag("sighup_effect", default="snapshot", help="stop | snapshot | none")
    flag("phase", default="", help="time: the net's phase, TRAIN (default) or TEST")
    flag("engine", default=None, help="'caffe' runs a real BVLC caffe binary instead (or ENGINE=caffe)")


def flags_from_args(args: argparse.Namespace) -> CaffeFlags:
    return CaffeFlags(**{k: getattr(args, k) for k in CaffeFlags.__dataclass_fields__ if hasattr(args, k)})


def external_argv(flags: CaffeFlags) -> list[str]:
    """The same command line for a real caffe binary (only flags that were given)."""
    argv = [flags.action]
    defaults = CaffeFlags()
    for name in ("solver", "model", "weights", "snapshot", "gpu", "iterations", "stage", "level"):
        value = getattr(flags, name)
        if value not in (None, "") and value != getattr(defaults, name):
            argv += [f"-{name}", str(value)]
    for name in ("sigint_effect", "sighup_effect"):
        if getattr(flags, name) != getattr(defaults, name):
            argv += [f"-{name}", getattr(flags, name)]
    return argv


# ---------------------------------------------------------------------- devices
def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_gpus(flag: str) -> list[int]:
    """``-gpu`` value -> device ids; ``all`` is every CUDA device; explicit ids need CUDA."""
    if not flag:
        return []
    count = _cuda_count()
    if flag == "all":
        if count == 0:
            raise PixsentError("-gpu all: no CUDA device is available (run without -gpu to use the CPU)")
        return list(range(count))
    try:
        ids = [int(x) for x in flag.split(",") if x != ""]
    except ValueError:
        raise PixsentError(f"-gpu {flag}: expected device ids like 0 or 0,1, or 'all'") from None
    if count == 0:
        raise PixsentError(f"-gpu {flag}: no CUDA device is available (run without -gpu to use the CPU)")
    for i in ids:
        if not 0 <= i < count:
            raise PixsentError(f"-gpu {flag}: device {i} does not exist ({count} CUDA device(s))")
    return ids


def _log_devices(gpus: list[int]) -> None:
    if not gpus:
        glog.info("Use CPU.", "caffe.cpp:197")
        return
    import torch

    glog.info("Using GPUs " + ", ".join(map(str, gpus)), "caffe.cpp:202")
    for g in gpus:
        glog.info(f"GPU {g}: {torch.cuda.get_device_name(g)}", "caffe.cpp:207")


def _stages(flag: str) -> list[str]:
    """``-stage a,b`` -> ['a', 'b'] (Caffe splits on commas; an empty flag gives one empty stage)."""
    return flag.split(",")


# ---------------------------------------------------------------------- train
def _upgrade_snapshot_prefix(param, solver_path: str) -> None:
    """Unset prefix -> solver path without extension; a folder prefix -> folder/solver stem (Caffe master)."""
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = str(Path(solver_path).with_suffix(""))
        glog.info(
            f"snapshot_prefix was not specified and is set to {param.snapshot_prefix}", "upgrade_proto.cpp:1"
        )
    elif os.path.isdir(param.snapshot_prefix):
        param.snapshot_prefix = str(Path(param.snapshot_prefix) / Path(solver_path).stem)
        glog.info(
            f"snapshot_prefix was a directory and is replaced to {param.snapshot_prefix}",
            "upgrade_proto.cpp:1",
        )


def _check_net_files(param, solver_path: str) -> None:
    """Net files a solver names must exist; Caffe resolves them against the working directory."""
    from pixsent.errors import FormatError

    named = [("net", param.net)] if param.HasField("net") else []
    named += [("train_net", param.train_net)] if param.HasField("train_net") else []
    named += [("test_net", t) for t in param.test_net]
    for field, net in named:
        if not Path(net).is_file():
            raise FormatError(
                f"{solver_path}: {field} file {net!r} not found (relative paths are read from the "
                f"working directory {os.getcwd()}, as Caffe does)"
            )


def load_solver_param(flags: CaffeFlags):
    """The SolverParameter for ``train``: file read and upgraded, flags applied as caffe.cpp does."""
    from pixsent.formats.prototxt import read_solver

    if not flags.solver:
        raise PixsentError("train: need a solver definition to train (-solver S.prototxt)")
    if flags.snapshot and flags.weights:
        raise PixsentError(
            "train: give a snapshot to resume training or weights to finetune, not both (-snapshot, -weights)"
        )
    param = read_solver(flags.solver)
    _check_net_files(param, flags.solver)
    _upgrade_snapshot_prefix(param, flags.solver)
    param.train_state.level = flags.level
    for s in _stages(flags.stage):
        param.train_state.stage.append(s)
    if flags.iterations is not None:
        param.max_iter = flags.iterations
    del param.weights[:]
    if not flags.snapshot and flags.weights:
        param.weights.append(flags.weights)
    return param


def _select_train_devices(flags: CaffeFlags, param) -> list[int]:
    from pixsent.caffe.proto import caffe_pb2

    if flags.gpu:
        return parse_gpus(flags.gpu)
    if param.HasField("solver_mode") and param.solver_mode == caffe_pb2.SolverParameter.GPU:
        if _cuda_count() == 0:
            glog.warning("solver_mode is GPU but no CUDA device is available; using the CPU", "caffe.cpp:190")
            return []
        return parse_gpus(str(param.device_id))
    return []


def _run_solver(flags: CaffeFlags, param, device: str):
    from pixsent.engine.solvers.signals import SignalHandler, parse_effect
    from pixsent.engine.solvers.solver import Solver, SolverHooks

    handler = SignalHandler(
        parse_effect(flags.sigint_effect, "sigint_effect"), parse_effect(flags.sighup_effect, "sighup_effect")
    )
    with handler:
        solver = Solver(param, device=device, hooks=SolverHooks(action=handler.requested_action))
        if flags.snapshot:
            glog.info(f"Resuming from {flags.snapshot}", "caffe.cpp:235")
            solver.restore(flags.snapshot)
        glog.info("Starting Optimization", "caffe.cpp:239")
        solver.solve()
    glog.info("Optimization Done.", "caffe.cpp:250")
    return solver


def _dp_worker(
    rank: int, world: int, flags: CaffeFlags, param_bytes: bytes, gpus: list[int], port: int
) -> None:
    import torch

    from pixsent.caffe.proto import caffe_pb2

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(gpus[rank])
    torch.distributed.init_process_group("nccl", rank=rank, world_size=world)
    try:
        param = caffe_pb2.SolverParameter.FromString(param_bytes)
        glog.CONFIG.enabled = rank == 0
        _run_solver(flags, param, f"cuda:{gpus[rank]}")
    finally:
        torch.distributed.destroy_process_group()


def train(flags: CaffeFlags):
    """``caffe train``: returns the Solver (single process) or None (data parallel).

    Errors the solver reports as "solver: ..." name the solver file here (it only holds the parsed message).
    """
    from pixsent.formats.origin import naming

    with naming(flags.solver, placeholder="solver"):
        return _train(flags)


def _train(flags: CaffeFlags):
    from pixsent.formats.stale import remove_stale_temporaries

    param = load_solver_param(flags)
    # snapshots a kill -9 left half-written (hidden temporaries, 230 MB each at CaffeNet scale)
    remove_stale_temporaries(Path(param.snapshot_prefix).parent, say=lambda m: glog.info(m, "solver.cpp:0"))
    gpus = _select_train_devices(flags, param)
    _log_devices(gpus)
    if len(gpus) > 1:
        import socket

        import torch.multiprocessing as mp

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(_dp_worker, args=(len(gpus), flags, param.SerializeToString(), gpus, port), nprocs=len(gpus))
        return None
    if gpus:
        param.device_id = gpus[0]
    return _run_solver(flags, param, f"cuda:{gpus[0]}" if gpus else "cpu")


# ---------------------------------------------------------------------- test / time
def _device(flags: CaffeFlags) -> str:
    gpus = parse_gpus(flags.gpu)
    if gpus:
        glog.info(f"Use GPU with device ID {gpus[0]}", "caffe.cpp:275")
        return f"cuda:{gpus[0]}"
    glog.info("Use CPU.", "caffe.cpp:281")
    return "cpu"


def _make_net(flags: CaffeFlags, phase: int, device: str):
    from pixsent.engine.net import Net
    from pixsent.formats.origin import naming

    stages = tuple(s for s in _stages(flags.stage) if s)
    with naming(flags.model):  # layer errors ("layer 'x': ...") also name the prototxt
        return Net(flags.model, phase, stages=stages, level=flags.level, device=device, log=True)


def test(flags: CaffeFlags) -> dict[str, float]:
    """``caffe test``: forward ``-iterations`` TEST batches, log each and the means; returns the means."""
    import numpy as np
    import torch

    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine.solvers.solver import _flat_outputs, _loss_weights

    if not flags.model:
        raise PixsentError("test: need a model definition to score (-model M.prototxt)")
    if not flags.weights:
        raise PixsentError("test: need model weights to score (-weights W.caffemodel)")
    device = _device(flags)
    net = _make_net(flags, caffe_pb2.TEST, device)
    net.copy_trained_layers_from(flags.weights)  # a comma list: one line names the layers none provided
    iterations = 50 if flags.iterations is None else flags.iterations
    glog.info(f"Running for {iterations} iterations.", "caffe.cpp:304")
    names: list[str] = []
    scores: list[np.float32] = []
    loss = np.float32(0)
    for i in range(iterations):
        with torch.no_grad():
            loss += np.float32(net.forward())
        flat = _flat_outputs(net.output_values())
        for k, (name, v) in enumerate(flat):
            if i == 0:
                names.append(name)
                scores.append(np.float32(v))
            else:
                scores[k] += np.float32(v)
            glog.info(f"Batch {i}, {name} = {glog.fmt(v)}", "caffe.cpp:326")
    loss /= np.float32(max(iterations, 1))
    glog.info(f"Loss: {glog.fmt(float(loss))}", "caffe.cpp:331")
    weights = _loss_weights(net, _net_param_of(net, flags.model))
    means: dict[str, float] = {}
    for name, total in zip(names, scores):
        mean = float(total / np.float32(max(iterations, 1)))
        w = weights.get(name, 0.0)
        tail = f" (* {glog.fmt(w)} = {glog.fmt(float(np.float32(w) * np.float32(mean)))} loss)" if w else ""
        glog.info(f"{name} = {glog.fmt(mean)}{tail}", "caffe.cpp:343")
        means.setdefault(name, mean)
    return means


def _net_param_of(net, model: str):
    """The NetParameter a net was built from (for loss weights), read again from the prototxt if needed."""
    proto = getattr(net, "net_param", None)
    if proto is not None:
        return proto
    from pixsent.formats.prototxt import read_net

    return read_net(model)


def time(flags: CaffeFlags) -> dict[str, dict[str, float]]:
    """``caffe time``: per-layer forward and backward milliseconds averaged over ``-iterations``."""
    from pixsent.caffe.proto import caffe_pb2

    if not flags.model:
        raise PixsentError("time: need a model definition to time (-model M.prototxt)")
    phase = phase_from_flag(flags.phase, caffe_pb2.TRAIN)
    device = _device(flags)
    net = _make_net(flags, phase, device)
    if phase == caffe_pb2.TEST:
        # Caffe times the backward pass of a TEST net too: let its forward keep the graph that needs
        net.keep_blob_diffs = any(net.layer_need_backward)
    net.whole_passes = True  # every pass below is a whole forward and backward
    iterations = 50 if flags.iterations is None else flags.iterations
    return time_net(net, iterations)


def phase_from_flag(flag: str, default: int) -> int:
    """``-phase``: empty gives ``default``; TRAIN or TEST, anything else is an error (caffe.cpp)."""
    from pixsent.caffe.proto import caffe_pb2

    if not flag:
        return default
    if flag in ("TRAIN", "TEST"):
        return caffe_pb2.TRAIN if flag == "TRAIN" else caffe_pb2.TEST
    raise PixsentError(f'-phase {flag}: phase must be "TRAIN" or "TEST"')


class _LayerTimer:
    """Times each layer's forward by wrapping it, and its backward from gradient-arrival hooks on its tops.

    The backward of layer i is taken as the time from the gradient of its top arriving to the gradient of
    the previous layer's top arriving (exact for chains; an approximation where branches overlap).
    """

    def __init__(self, net) -> None:
        self.net = net
        self.names = list(getattr(net, "layer_names", []))
        self.fwd = [0.0] * len(self.names)
        self.bwd = [0.0] * len(self.names)
        self.grad_time: dict[int, float] = {}
        self._originals = []
        for i, layer in enumerate(getattr(net, "layers", [])):
            orig = layer.forward
            self._originals.append((layer, orig))
            layer.forward = self._wrap(i, orig)

    def _wrap(self, i: int, orig):
        import torch

        def timed(*args, **kwargs):
            t0 = _time.perf_counter()
            out = orig(*args, **kwargs)
            self.fwd[i] += _time.perf_counter() - t0
            tops = out if isinstance(out, list | tuple) else [out]
            for t in tops:
                if isinstance(t, torch.Tensor) and t.requires_grad:
                    t.register_hook(self._hook(i))
            return out

        return timed

    def _hook(self, i: int):
        def record(grad):
            self.grad_time.setdefault(i, _time.perf_counter())
            return None

        return record

    def backward(self) -> float:
        self.grad_time = {}
        t0 = _time.perf_counter()
        if any(getattr(self.net, "layer_need_backward", [True])):
            self.net.backward()
        end = _time.perf_counter()
        order = sorted(self.grad_time)
        for k, i in enumerate(order):
            stop = self.grad_time[order[k - 1]] if k > 0 else end
            self.bwd[i] += max(0.0, stop - self.grad_time[i])
        return end - t0

    def restore(self) -> None:
        for layer, orig in self._originals:
            layer.forward = orig


def time_net(net, iterations: int) -> dict[str, dict[str, float]]:
    """Caffe's benchmark: a warm-up forward/backward, then ``iterations`` timed ones; ms per layer."""
    glog.info("Performing Forward", "caffe.cpp:363")
    loss = net.forward()
    glog.info(f"Initial loss: {glog.fmt(float(loss))}", "caffe.cpp:368")
    glog.info("Performing Backward", "caffe.cpp:369")
    if any(getattr(net, "layer_need_backward", [True])):
        net.backward()
    timer = _LayerTimer(net)
    glog.info("*** Benchmark begins ***", "caffe.cpp:384")
    glog.info(f"Testing for {iterations} iterations.", "caffe.cpp:385")
    total0 = _time.perf_counter()
    fwd_total = bwd_total = 0.0
    try:
        for j in range(iterations):
            t0 = _time.perf_counter()
            clear = getattr(net, "clear_param_diffs", None)
            if clear is not None:
                clear()
            net.forward()
            t1 = _time.perf_counter()
            fwd_total += t1 - t0
            bwd_total += timer.backward()
            ms = (_time.perf_counter() - t0) * 1000
            glog.info(f"Iteration: {j + 1} forward-backward time: {glog.fmt(ms)} ms.", "caffe.cpp:412")
    finally:
        timer.restore()
    total_ms = (_time.perf_counter() - total0) * 1000
    n = max(iterations, 1)
    glog.info("Average time per layer: ", "caffe.cpp:415")
    per_layer: dict[str, dict[str, float]] = {}
    for i, name in enumerate(timer.names):
        f, b = timer.fwd[i] * 1000 / n, timer.bwd[i] * 1000 / n
        per_layer[name] = {"forward": f, "backward": b}
        glog.info(f"{name:>10}\tforward: {glog.fmt(f)} ms.", "caffe.cpp:418")
        glog.info(f"{name:>10}\tbackward: {glog.fmt(b)} ms.", "caffe.cpp:421")
    glog.info(f"Average Forward pass: {glog.fmt(fwd_total * 1000 / n)} ms.", "caffe.cpp:426")
    glog.info(f"Average Backward pass: {glog.fmt(bwd_total * 1000 / n)} ms.", "caffe.cpp:428")
    glog.info(f"Average Forward-Backward: {glog.fmt(total_ms / n)} ms.", "caffe.cpp:430")
    glog.info(f"Total Time: {glog.fmt(total_ms)} ms.", "caffe.cpp:432")
    glog.info("*** Benchmark ends ***", "caffe.cpp:433")
    per_layer["__total__"] = {"forward": fwd_total * 1000 / n, "backward": bwd_total * 1000 / n}
    return per_layer


def device_query(flags: CaffeFlags) -> list[dict[str, object]]:
    """``caffe device_query -gpu N``: the properties of each selected CUDA device."""
    import torch

    gpus = parse_gpus(flags.gpu or "all")
    glog.info("Querying GPUs " + ",".join(map(str, gpus)), "caffe.cpp:160")
    out = []
    for g in gpus:
        p = torch.cuda.get_device_properties(g)
        info = {
            "Device id": g,
            "Major revision number": p.major,
            "Minor revision number": p.minor,
            "Name": p.name,
            "Total global memory": p.total_memory,
            "Number of multiprocessors": p.multi_processor_count,
        }
        for k, v in info.items():
            glog.info(f"{k}:{' ' * max(1, 26 - len(k))}{v}", "common.cpp:183")
        out.append(info)
    return out


RUNNERS = {"train": train, "test": test, "time": time, "device_query": device_query}


def run(flags: CaffeFlags) -> int:
    """Dispatch an action (or hand it to a real caffe when ENGINE=caffe); returns an exit code."""
    from pixsent.engine import external

    if external.engine_requested(flags.engine) == "caffe":
        return external.run_external(external_argv(flags))
    RUNNERS[flags.action](flags)
    return 0
