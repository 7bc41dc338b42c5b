"""Whole ``caffe train`` process benchmark: 10 CaffeNet b32 iterations from a Data layer, as Caffe ran them.

Issue 15 compares three figures of real BVLC Caffe 1.0 (CPU, 2 threads, this project's 2-core AVX2
machines) with pixsent's: the per-iteration time of ``caffe train`` with the Data layer (LMDB of 256x256
images, crop 227, mirror, mean file) and the SGD update at batch 32 (1.52 s), the whole process of 10 such
iterations, start-up, both nets and fillers included (19.1 s), and that process's peak RSS (1434 MiB).

This script runs the real thing: ``python -m pixsent caffe train -solver solver.prototxt`` on the paper's
fc8_twitter train_val (only its LMDB sources, mean file and TRAIN batch size rewritten) over a generated
fold (704 train and 176 test JPEGs of 500x375 -> 256x256 LMDBs and their mean, cached under
``OUT/cache/train_process``; the solver, net and last log go to its ``run`` folder), with a solver of
max_iter 10, display 1, no snapshot, no weights (the fillers run) and a test net that is built but never
run (test_initialization false, test_interval past max_iter).
It measures each process's wall time around the subprocess, its peak RSS (``os.wait4``'s ru_maxrss) and
the per-iteration seconds its log prints (``Iteration N (X iter/s, Ys/1 iters)``, median of iterations
2..9: iteration 0's line times set-up and the first forward, iteration 1's the first update). Median of 3
processes (1 with --quick). Writes the "train_process" section of bench/report.json and regenerates
bench/report.md; bench_engine.py's issue-15 table reads it from there.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TRAIN_VAL = REPO / "prototxt/five_agrees/fc8_twitter/fold1/train_val.prototxt"
SOLVER = REPO / "prototxt/five_agrees/fc8_twitter/fold1/solver.prototxt"

ITERS = 10
BATCH = 32
TRAIN_IMAGES = 704  # the paper's five-agrees fold: 704 train and 176 test images
TEST_IMAGES = 176
#: iteration 0's display line includes set-up and the first forward, iteration 1's the first update
FIRST_TIMED_ITER = 2
CACHE_VERSION = "1"  # bump when the generated fold changes

#: real BVLC Caffe 1.0 CPU, 2 threads, this project's 2-core AVX2 machines (issue 15)
CAFFE_ITER_MS = 1520.0
CAFFE_PROCESS_S = 19.1
CAFFE_RSS_MIB = 1434.0
#: the figures of a run and of the summary: per-iteration ms, whole-process seconds, peak RSS
FIGURES = ("iter_ms", "process_s", "peak_rss_mib")

_RATE = re.compile(r"Iteration (\d+) \([-+0-9.eEnaif]+ iter/s, ([-+0-9.eE]+)s/(\d+) iters\)")


# ------------------------------------------------------------------ the generated fold
def prepare(cache: Path) -> Path:
    """Build (once) the fold's train/test LMDBs and train mean under CACHE; returns CACHE."""
    marker = cache / "ready"
    if marker.is_file() and marker.read_text().strip() == CACHE_VERSION:
        return cache
    from bench.bench_lmdb import make_images
    from pixsent.data.image_mean import compute_image_mean, save_mean
    from pixsent.data.imageset import convert_imageset

    images = cache / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = make_images(images, TRAIN_IMAGES + TEST_IMAGES).read_text().splitlines(keepends=True)
    (cache / "train.txt").write_text("".join(lines[:TRAIN_IMAGES]))
    (cache / "test.txt").write_text("".join(lines[TRAIN_IMAGES:]))
    for split in ("train", "test"):
        convert_imageset(
            images, cache / f"{split}.txt", cache / f"{split}_lmdb", resize=(256, 256), shuffle=True,
            overwrite=True, progress=False,
        )  # fmt: skip
    save_mean(compute_image_mean(cache / "train_lmdb", progress=False), cache / "mean.binaryproto")
    marker.write_text(CACHE_VERSION + "\n")
    return cache


def write_net(cache: Path, folder: Path) -> Path:
    """The paper's train_val with the cached LMDBs and mean and TRAIN batch BATCH (TEST keeps its 44)."""
    from pixsent.caffe.proto import caffe_pb2
    from pixsent.formats.prototxt import read_net, write_prototxt

    npar = read_net(TRAIN_VAL)
    for layer in npar.layer:
        if layer.type != "Data":
            continue
        train = any(rule.phase == caffe_pb2.TRAIN for rule in layer.include)
        layer.data_param.source = str(cache / ("train_lmdb" if train else "test_lmdb"))
        layer.transform_param.mean_file = str(cache / "mean.binaryproto")
        if train:
            layer.data_param.batch_size = BATCH
    return write_prototxt(npar, folder / "train_val.prototxt")


def write_solver(net: Path, folder: Path) -> Path:
    """The paper's solver for ITERS iterations: display 1, no snapshot, test net built but never run."""
    from pixsent.formats.prototxt import read_solver, write_prototxt

    sp = read_solver(SOLVER)
    sp.net = str(net)
    sp.max_iter = ITERS
    sp.display = 1
    sp.test_initialization = False
    sp.test_interval = ITERS + 1  # no test at any iteration, nor after the last (10 % 11 != 0)
    sp.snapshot = 0
    sp.snapshot_after_train = False
    sp.snapshot_prefix = str(folder / "snap")
    return write_prototxt(sp, folder / "solver.prototxt")


# ------------------------------------------------------------------ one process
def iteration_seconds(log: str) -> dict[int, float]:
    """Seconds per iteration of each display line ``Iteration N (X iter/s, Ys/K iters)`` (Y / K)."""
    out = {}
    for m in _RATE.finditer(log):
        out[int(m.group(1))] = float(m.group(2)) / int(m.group(3))
    return out


def run_process(solver: Path, threads: int) -> dict:
    """Run ``python -m pixsent caffe train -solver SOLVER``: wall seconds, peak RSS, iteration times."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "pixsent", "caffe", "train", "-solver", str(solver)]
    log_path = solver.parent / "train.log"
    load = os.getloadavg()[0]
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=solver.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log_path.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"caffe train failed ({proc.returncode}):\n{text[-3000:]}")
    iters = iteration_seconds(text)
    timed = [s for it, s in iters.items() if it >= FIRST_TIMED_ITER]
    if not timed:
        raise SystemExit(f"no timed iteration line in the log:\n{text[-3000:]}")
    return {
        "iter_ms": statistics.median(timed) * 1000,
        "process_s": wall,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "iteration_s": {str(k): v for k, v in sorted(iters.items())},
        # CPU seconds of the process: far below threads x wall means it waited for a busy machine
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "loadavg_before": load,
    }


def describe(run: dict) -> str:
    """One line of a process's figures, with its CPU seconds and the load before it (to spot contention)."""
    return (
        f"caffe train {ITERS} iterations: {run['process_s']:.1f} s, {run['iter_ms']:.0f} ms/iteration, "
        f"peak RSS {run['peak_rss_mib']:.0f} MiB, CPU {run['cpu_s']:.1f} s, "
        f"1-minute load before {run['loadavg_before']:.1f}"
    )


def summarise(runs: list[dict], threads: int) -> dict:
    """Medians over the processes and the ratios to Caffe's figures (Caffe / pixsent; RSS likewise)."""
    return {
        "iters": ITERS,
        "batch": BATCH,
        "threads": threads,
        "runs": runs,
        **{key: statistics.median(r[key] for r in runs) for key in FIGURES},
        "caffe": {"iter_ms": CAFFE_ITER_MS, "process_s": CAFFE_PROCESS_S, "peak_rss_mib": CAFFE_RSS_MIB},
        "machine": f"{platform.processor() or platform.machine()} {os.cpu_count()} cpus, "
        f"python {platform.python_version()}",
    }


# ------------------------------------------------------------------ report
def render(body: dict) -> list[str]:
    """Markdown of the train_process section."""
    c = body["caffe"]
    rows = [
        ("per iteration (median of iterations 2..9)", "iter_ms", "ms", "{:.0f}"),
        (f"whole process, {body['iters']} iterations", "process_s", "s", "{:.1f}"),
        ("peak RSS", "peak_rss_mib", "MiB", "{:.0f}"),
    ]
    out = [
        f"`python -m pixsent caffe train` of the paper's CaffeNet fc8_twitter, Data layer b{body['batch']} "
        f"(generated LMDB 256x256, crop 227, mirror, mean file), {body['iters']} iterations, test net built, "
        f"no weights; {body['threads']} threads; median of {len(body['runs'])} process(es). "
        "Caffe: real BVLC Caffe 1.0 recorded on a 2-core AVX2 machine (issue 15), not this run.",
        "",
        "| figure | Caffe | pixsent | Caffe / pixsent | per run |",
        "| --- | --- | --- | --- | --- |",
    ]
    for what, key, unit, spec in rows:
        ours = body[key]
        per_run = ", ".join(spec.format(r[key]) for r in body["runs"])
        out.append(
            f"| {what} | {spec.format(c[key])} {unit} | {spec.format(ours)} {unit} | {c[key] / ours:.2f}x | "
            f"{per_run} |"
        )
    if all("cpu_s" in r for r in body["runs"]):  # sections of the first version lack them
        cpu = ", ".join(f"{r['cpu_s']:.1f}" for r in body["runs"])
        load = ", ".join(f"{r['loadavg_before']:.1f}" for r in body["runs"])
        out += ["", f"CPU seconds (user + sys) of each process: {cpu}; 1-minute load before each: {load}."]
    return [*out, "", f"machine: {body['machine']}", ""]


def merge_report(section: dict, out_dir: Path) -> None:
    """Read-modify-write report.json (only the "train_process" key), then regenerate report.md."""
    from bench.bench_engine import merge_report as merge_section

    merge_section(section, out_dir, key="train_process")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one process instead of 3")
    parser.add_argument("--runs", type=int, default=None, help="processes to run (default 3, 1 with --quick)")
    parser.add_argument("--out", type=Path, default=REPO / "bench", help="folder of report.json / .md")
    parser.add_argument("--cache", type=Path, default=None, help="generated fold (default OUT/cache/...)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--prepare", action="store_true", help="only build the cached fold, measure nothing")
    args = parser.parse_args(argv)
    cache = prepare((args.cache or args.out / "cache" / "train_process").resolve())
    if args.prepare:
        print(f"fold ready in {cache}")
        return 0
    folder = cache / "run"  # the solver, net and last log stay there for a look
    folder.mkdir(exist_ok=True)
    solver = write_solver(write_net(cache, folder), folder)
    runs = []
    for _ in range(args.runs or (1 if args.quick else 3)):
        runs.append(run_process(solver, args.threads))
        print(describe(runs[-1]), flush=True)
    section = summarise(runs, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    merge_report(section, args.out)
    print("\n".join(render(section)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
