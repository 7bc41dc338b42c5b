"""Data-parallel training: one process per device (CUDA with NCCL, or CPU with gloo), Caffe's batch
semantics kept.

Caffe's multi-GPU training splits each batch across the devices; here every rank's Data layer reads the same
global sequence and keeps its contiguous slice of the batch (the engine's NetContext rank/world_size),
the solver
all-reduces and averages the gradients when torch.distributed is initialised, and only rank 0 logs and
snapshots. The solver prototxt's batch_size is therefore the total batch: ``batch_size`` must be
divisible by the
number of processes. Processes are started with torch.multiprocessing.spawn (no torchrun needed); a rendezvous
on 127.0.0.1 at a free port.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ParallelConfig:
    solver: Path
    devices: list[str]  # "cuda:0", "cuda:1", ... or "cpu", "cpu"
    weights: str | None = None
    snapshot: str | None = None
    port: int = 0

    @property
    def world_size(self) -> int:
        return len(self.devices)

    @property
    def backend(self) -> str:
        return "nccl" if self.devices[0].startswith("cuda") else "gloo"


def parse_devices(spec: str) -> list[str]:
    """GPU=all, GPU=0,1 or cpu:2 (two CPU processes, the test path) -> device strings."""
    if spec.startswith("cpu"):
        n = int(spec.split(":")[1]) if ":" in spec else 2
        return ["cpu"] * n
    import torch

    if spec == "all":
        n = torch.cuda.device_count()
        if n == 0:
            raise SystemExit(
                "pixsent: GPU=all but no CUDA device is available (use GPU=cpu:2 for the CPU path)"
            )
        return [f"cuda:{i}" for i in range(n)]
    return [f"cuda:{int(i)}" for i in spec.split(",")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, cfg: ParallelConfig) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(cfg.port),
        RANK=str(rank),
        WORLD_SIZE=str(cfg.world_size),
        LOCAL_RANK=str(rank),
    )
    device = cfg.devices[rank]
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(cfg.backend, rank=rank, world_size=cfg.world_size)
    try:
        run_solver(cfg, device)
    finally:
        dist.destroy_process_group()


def run_solver(cfg: ParallelConfig, device: str) -> None:
    """Build the engine's solver for this rank and run it to max_iter (resuming, or from initial weights)."""
    from pixsent.engine.solvers.solver import Solver
    from pixsent.formats.prototxt import read_solver

    param = read_solver(cfg.solver)
    if cfg.weights and not cfg.snapshot:
        param.weights.append(cfg.weights)
    solver = Solver(param, device=device)
    if cfg.snapshot:
        solver.restore(cfg.snapshot)
    solver.solve()


def launch(cfg: ParallelConfig) -> None:
    import torch.multiprocessing as mp

    cfg.port = cfg.port or free_port()
    mp.spawn(_worker, args=(cfg,), nprocs=cfg.world_size, join=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pixsent.workflow.parallel", description=__doc__.splitlines()[0]
    )
    p.add_argument("--solver", required=True)
    p.add_argument("--devices", default="all", help="all | 0,1 | cpu:2")
    p.add_argument("-weights", "--weights")
    p.add_argument("-snapshot", "--snapshot")
    args = p.parse_args(argv)
    launch(ParallelConfig(Path(args.solver), parse_devices(args.devices), args.weights, args.snapshot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
