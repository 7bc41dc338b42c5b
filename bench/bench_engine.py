"""Engine benchmark: CaffeNet training step and 10-crop deploy forward through pixsent's Net/Solver.

Measured in one run, each case in a fresh subprocess (so its peak RSS, VmHWM, is its own): sgemm
4096^3 float32 (torch.mm), pixsent's training step (forward + backward + SGD update, 2-class head,
SoftmaxWithLoss, an Input layer in place of the LMDB so no I/O is timed) at batch 32 and 256, the deploy
forward at batch 10 (one image's 10 crops), the same with every fast path off (PIXSENT_FAST=0, "before"),
and plain PyTorch eager (NCHW functional CaffeNet, torch.optim.SGD) as the baseline of this machine; then
issue 15's cases: caffe-time steps (forward + backward, no update) of CaffeNet and SqueezeNet v1.0 with and
without the kept heap, and OpenCV dnn's deploy forward as a live peer, printed beside real Caffe's recorded
figures on the project's AVX2 machines with each goal.
Warm-up iterations are excluded; times are medians (min also kept). GFLOP per image is counted from the
net's layer shapes (multiply-adds x 2 of convolutions and inner products); a training step is 3x forward.
Writes the "engine" section of bench/report.json and regenerates bench/report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TRAIN_VAL = REPO / "prototxt/five_agrees/fc8_twitter/fold1/train_val.prototxt"
DEPLOY = REPO / "prototxt/five_agrees/fc8_twitter/deploy.prototxt"
SQUEEZENET_DEFAULT = Path("/work/real-runs/runs/five/fc8_twitter-squeezenet-dc/fold1/train_val.prototxt")

#: real Caffe 1.0 CPU, 2 threads, on the reference machine (../shared/golden/README.md, performance)
CAFFE = {
    "train32": {"ms": 1728.0, "img_per_s": 18.5},
    "train256": {"ms": 13900.0, "img_per_s": 18.5},
    "deploy10": {"ms": 317.0, "img_per_s": 31.5},
}
#: Caffe's training step reaches ~80 GFLOP/s against an sgemm peak of 200-250 there: ~0.36 of the peak
CAFFE_TRAIN_PEAK_FRACTION = 80.0 / 225.0

#: real BVLC Caffe 1.0 CPU on this project's 2-core AVX2 machines (2 threads, alternating runs, medians;
#: issue 15): case -> (what, Caffe's figure, unit, the goal as a ratio Caffe / pixsent, where pixsent's
#: figure comes from: a bench case of this script, or "train_process:<figure>" of bench_train_process.py's
#: section of report.json, the whole `caffe train` process). RSS goals are "at most Caffe's" (ratio >= 1).
CAFFE_AVX2 = {
    "time32": ("CaffeNet train step b32, caffe time forward+backward", 1501.0, "ms", 2.0, "ours_time32"),
    "squeeze32": (
        "SqueezeNet v1.0 train step b32, caffe time (2290-2790)",
        2290.0,
        "ms",
        2.0,
        "ours_squeeze32",
    ),
    "deploy10": ("CaffeNet deploy forward b10 (247-270)", 247.0, "ms", 3.0, "ours_deploy10"),
    "train32": (
        "CaffeNet caffe train iteration b32, Data layer + SGD update",
        1520.0,
        "ms",
        2.0,
        "train_process:iter_ms",
    ),
    "process32": (
        "same, whole process of 10 iterations (start-up, both nets, fillers)",
        19.1,
        "s",
        2.0,
        "train_process:process_s",
    ),
    "rss32": ("peak RSS of that 10-iteration process", 1434.0, "MiB", 1.0, "train_process:peak_rss_mib"),
    "step32": (
        "CaffeNet solver step b32, Input layer (Caffe's figure: its Data-layer iteration)",
        1520.0,
        "ms",
        2.0,
        "ours_train32",
    ),
}


@dataclass
class Case:
    """One benchmark case: what runs, its batch, warm-up and timed iterations, extra environment."""

    name: str
    kind: str  # sgemm | ours_train | ours_deploy | eager_train | eager_deploy
    batch: int = 0
    warmup: int = 1
    iters: int = 3
    env: dict | None = None
    label: str = ""
    model: str = "caffenet"


def cases(quick: bool) -> list[Case]:
    """The case list (fewer iterations with --quick)."""
    q = quick
    off = {"PIXSENT_FAST": "0"}
    return [
        Case("sgemm", "sgemm", 0, 1, 4 if q else 8, label="torch.mm 4096^3 float32"),
        Case("gemm_onednn", "sgemm", 0, 1, 4 if q else 8, label="oneDNN 1x1 convolution, 4096^3 float32"),
        Case("ours_train32", "ours_train", 32, 1 if q else 2, 3 if q else 10, label="pixsent"),
        Case("before_train32", "ours_train", 32, 1, 3 if q else 6, off, "pixsent, fast paths off"),
        Case("eager_train32", "eager_train", 32, 1, 3 if q else 6, label="PyTorch eager NCHW"),
        Case("ours_train256", "ours_train", 256, 1, 1 if q else 3, label="pixsent"),
        Case("before_train256", "ours_train", 256, 1, 1 if q else 2, off, "pixsent, fast paths off"),
        Case("eager_train256", "eager_train", 256, 1, 1 if q else 2, label="PyTorch eager NCHW"),
        Case(
            "ours_time32", "ours_time", 32, 1, 3 if q else 6, label="pixsent, forward+backward (caffe time)"
        ),
        Case(
            "ours_squeeze32",
            "ours_time",
            32,
            1,
            3 if q else 6,
            label="pixsent SqueezeNet v1.0, caffe time",
            model="squeezenet",
        ),
        Case(
            "mmapped_time32",
            "ours_time",
            32,
            1,
            3 if q else 6,
            {"PIXSENT_KEEP_HEAP": "0"},
            "pixsent, glibc's default heap (PIXSENT_KEEP_HEAP=0)",
        ),
        Case(
            "mmapped_squeeze32",
            "ours_time",
            32,
            1,
            3 if q else 6,
            {"PIXSENT_KEEP_HEAP": "0"},
            "pixsent SqueezeNet, glibc's default heap (PIXSENT_KEEP_HEAP=0)",
            model="squeezenet",
        ),
        Case(
            "onednn_wgrad_time32",
            "ours_time",
            32,
            1,
            3 if q else 6,
            {"PIXSENT_COLUMN_WGRAD": "0"},
            "pixsent, oneDNN's convolution weight gradient (PIXSENT_COLUMN_WGRAD=0)",
        ),
        Case(
            "onednn_wgrad_squeeze32",
            "ours_time",
            32,
            1,
            3 if q else 6,
            {"PIXSENT_COLUMN_WGRAD": "0"},
            "pixsent SqueezeNet, oneDNN's convolution weight gradient (PIXSENT_COLUMN_WGRAD=0)",
            model="squeezenet",
        ),
        Case("ours_deploy10", "ours_deploy", 10, 2 if q else 3, 5 if q else 20, label="pixsent"),
        Case("opencv_deploy10", "opencv_deploy", 10, 2 if q else 3, 5 if q else 10, label="OpenCV dnn"),
        Case("before_deploy10", "ours_deploy", 10, 2, 5 if q else 10, off, "pixsent, fast paths off"),
        Case("eager_deploy10", "eager_deploy", 10, 2, 5 if q else 10, label="PyTorch eager NCHW"),
    ]


# ------------------------------------------------------------------ child side
def vm_kib(field: str) -> int:
    """A VmXXX line of /proc/self/status in KiB (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def squeezenet_train_val() -> Path | None:
    """A SqueezeNet v1.0 fine-tuning train_val (``PIXSENT_BENCH_SQUEEZENET``, else a real run's), or None."""
    given = os.environ.get("PIXSENT_BENCH_SQUEEZENET")
    path = Path(given) if given else SQUEEZENET_DEFAULT
    return path if path.is_file() else None


def train_net_param(batch: int, model: str = "caffenet"):
    """The paper's fc8_twitter train net (or SqueezeNet's) with its Data layers replaced by one Input
    (data, label); only the prototxt is read, never its LMDB."""
    from pixsent.formats.prototxt import read_net

    path = TRAIN_VAL if model == "caffenet" else squeezenet_train_val()
    if path is None:
        raise SystemExit("no SqueezeNet train_val: set PIXSENT_BENCH_SQUEEZENET")
    npar = read_net(path)
    layers = [lp for lp in npar.layer if lp.type != "Data"]
    del npar.layer[:]
    inp = npar.layer.add(name="data", type="Input", top=["data", "label"])
    inp.input_param.shape.add().dim.extend([batch, 3, 227, 227])
    inp.input_param.shape.add().dim.extend([batch])
    npar.layer.extend(layers)
    return npar


def fill_inputs(net, batch: int) -> None:
    """Image-like data (std 50) and random 0/1 labels, seeded."""
    import numpy as np

    rng = np.random.default_rng(1604)
    net.blobs["data"].data[...] = rng.normal(0, 50, net.blobs["data"].shape).astype(np.float32)
    if "label" in net.blobs:
        net.blobs["label"].data[...] = rng.integers(0, 2, batch).astype(np.float32)


def gflop_per_image(net) -> float:
    """Forward GFLOP of one image: 2 x multiply-adds of every Convolution and InnerProduct layer."""
    import math

    macs = 0
    for layer, tops in zip(net.layers, net.top_names):
        if layer.type in ("Convolution", "InnerProduct"):
            top = net.blobs[tops[0]].shape
            w = layer.blobs[0].shape
            per_out = math.prod(w[1:]) if layer.type == "Convolution" else w[1]
            outputs = math.prod(top[1:]) if layer.type == "Convolution" else top[-1]
            if layer.type == "InnerProduct" and getattr(layer, "transpose", False):
                per_out = w[0]
            macs += outputs * per_out
    return 2 * macs / 1e9


CPU_SECONDS: list[float] = []


def timed(step, warmup: int, iters: int) -> list[float]:
    """Wall seconds of each timed call of ``step`` after ``warmup`` untimed ones (process CPU seconds of
    each call go to CPU_SECONDS: on a shared machine they show how much of the wall time was waiting)."""
    for _ in range(warmup):
        step()
    out = []
    for _ in range(iters):
        c0, t0 = time.process_time(), time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
        CPU_SECONDS.append(time.process_time() - c0)
    return out


def run_sgemm(case: Case) -> dict:
    """4096^3 float32 GEMM: torch.mm (MKL/OpenBLAS sgemm), or ("gemm_onednn") the same product as a 1x1
    convolution of 64x64 pixels x 4096 channels in oneDNN, the library pixsent's convolutions run on."""
    import torch
    import torch.nn.functional as F

    if case.name == "gemm_onednn":
        x = torch.randn(1, 4096, 64, 64).contiguous(memory_format=torch.channels_last)
        w = torch.randn(4096, 4096, 1, 1)
        times = timed(lambda: F.conv2d(x, w), case.warmup, case.iters)
    else:
        a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
        times = timed(lambda: torch.mm(a, b), case.warmup, case.iters)
    return {"times": times, "gflop": 2 * 4096**3 / 1e9}


def run_ours_train(case: Case) -> dict:
    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine import glog
    from pixsent.engine.solvers.solver import Solver

    glog.CONFIG.enabled = False
    sp = caffe_pb2.SolverParameter(
        net_param=train_net_param(case.batch),
        base_lr=0.001,
        lr_policy="step",
        gamma=0.1,
        stepsize=17,
        momentum=0.9,
        weight_decay=0.0005,
        max_iter=10**6,
        display=0,
        random_seed=1701,
        type="SGD",
    )
    solver = Solver(sp)
    fill_inputs(solver.net, case.batch)
    times = timed(lambda: solver.step(1), case.warmup, case.iters)
    return {"times": times, "gflop_per_img": gflop_per_image(solver.net)}


def run_ours_time(case: Case) -> dict:
    """``caffe time``'s figure: one forward and backward of the TRAIN net (no update), diffs cleared."""
    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine.net import Net

    net = Net(train_net_param(case.batch, case.model), caffe_pb2.TRAIN, seed=1701)
    net.whole_passes = True  # as `caffe time` does
    fill_inputs(net, case.batch)

    def step() -> None:
        net.clear_param_diffs()
        net.forward()
        net.backward()

    times = timed(step, case.warmup, case.iters)
    return (
        {"times": times, "gflop_per_img": gflop_per_image(net)}
        if case.model == "caffenet"
        else {"times": times}
    )


def run_opencv_deploy(case: Case) -> dict:
    """OpenCV dnn's forward of the same deploy net and (seeded, pixsent-filled) weights: a live peer."""
    import tempfile

    import cv2
    import numpy as np

    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine.net import Net

    cv2.setNumThreads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "w.caffemodel"
        Net(DEPLOY, caffe_pb2.TEST, seed=1701).save(weights)
        net = cv2.dnn.readNetFromCaffe(str(DEPLOY), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    x = np.random.default_rng(1604).normal(0, 50, (case.batch, 3, 227, 227)).astype(np.float32)

    def forward() -> None:
        net.setInput(x)
        net.forward()

    return {"times": timed(forward, case.warmup, case.iters)}


def run_ours_deploy(case: Case) -> dict:
    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine.net import Net

    net = Net(DEPLOY, caffe_pb2.TEST, seed=1701)
    fill_inputs(net, case.batch)
    times = timed(net.forward, case.warmup, case.iters)
    return {"times": times, "gflop_per_img": gflop_per_image(net)}


def eager_caffenet(batch: int, train: bool):
    """Plain PyTorch CaffeNet (NCHW, functional ops, torch's own LRN) and a step/forward closure."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(1701)
    shapes = {
        "conv1": (96, 3, 11, 11),
        "conv2": (256, 48, 5, 5),
        "conv3": (384, 256, 3, 3),
        "conv4": (384, 192, 3, 3),
        "conv5": (256, 192, 3, 3),
        "fc6": (4096, 9216),
        "fc7": (4096, 4096),
        "fc8": (2, 4096),
    }
    w = {k: (torch.randn(s, generator=g) * 0.01).requires_grad_(train) for k, s in shapes.items()}
    b = {k: torch.zeros(s[0], requires_grad=train) for k, s in shapes.items()}
    x = torch.randn(batch, 3, 227, 227, generator=g) * 50
    y = torch.randint(0, 2, (batch,), generator=g)

    def forward() -> torch.Tensor:
        h = F.relu(F.conv2d(x, w["conv1"], b["conv1"], 4))
        h = F.local_response_norm(F.max_pool2d(h, 3, 2, ceil_mode=True), 5, 1e-4, 0.75)
        h = F.relu(F.conv2d(h, w["conv2"], b["conv2"], 1, 2, 1, 2))
        h = F.local_response_norm(F.max_pool2d(h, 3, 2, ceil_mode=True), 5, 1e-4, 0.75)
        h = F.relu(F.conv2d(h, w["conv3"], b["conv3"], 1, 1))
        h = F.relu(F.conv2d(h, w["conv4"], b["conv4"], 1, 1, 1, 2))
        h = F.relu(F.conv2d(h, w["conv5"], b["conv5"], 1, 1, 1, 2))
        h = F.max_pool2d(h, 3, 2, ceil_mode=True).flatten(1)
        h = F.dropout(F.relu(F.linear(h, w["fc6"], b["fc6"])), 0.5, train)
        h = F.dropout(F.relu(F.linear(h, w["fc7"], b["fc7"])), 0.5, train)
        return F.linear(h, w["fc8"], b["fc8"])

    if not train:

        def infer() -> None:
            with torch.no_grad():
                torch.softmax(forward(), 1)

        return infer
    opt = torch.optim.SGD(
        [{"params": list(w.values())}, {"params": list(b.values()), "lr": 0.002, "weight_decay": 0}],
        lr=0.001,
        momentum=0.9,
        weight_decay=0.0005,
    )

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(forward(), y).backward()
        opt.step()

    return step


def run_eager(case: Case) -> dict:
    train = case.kind == "eager_train"
    times = timed(eager_caffenet(case.batch, train), case.warmup, case.iters)
    return {"times": times}


RUNNERS = {
    "sgemm": run_sgemm,
    "ours_train": run_ours_train,
    "ours_deploy": run_ours_deploy,
    "ours_time": run_ours_time,
    "opencv_deploy": run_opencv_deploy,
    "eager_train": run_eager,
    "eager_deploy": run_eager,
}


def child(case: Case, threads: int) -> dict:
    """Run one case in this process and return its raw measurements (and peak RSS)."""
    import torch

    torch.set_num_threads(threads)
    rss_import = vm_kib("VmRSS")
    out = RUNNERS[case.kind](case)
    out.update(
        rss_after_import_mib=rss_import / 1024,
        peak_rss_mib=vm_kib("VmHWM") / 1024,
        cpu_times=CPU_SECONDS,
        loadavg_after=os.getloadavg()[0],
    )
    return out


# ------------------------------------------------------------------ parent side
def run_case(case: Case, threads: int) -> dict:
    """Run a case in a fresh interpreter (its own VmHWM) and parse the JSON it prints last."""
    env = dict(os.environ)
    env.update(case.env or {})
    env.setdefault("OMP_NUM_THREADS", str(threads))
    cmd = [sys.executable, __file__, "--child", json.dumps(asdict(case)), "--threads", str(threads)]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench case {case.name} failed:\n{proc.stderr[-3000:]}")
    raw = json.loads(proc.stdout.strip().splitlines()[-1])
    raw["loadavg_before"] = load
    return raw


def summarise(case: Case, raw: dict) -> dict:
    """Median/min times and the derived figures of one case."""
    times = raw["times"]
    med = statistics.median(times)
    row = {
        "label": case.label,
        "model": case.model,
        "batch": case.batch,
        "warmup": case.warmup,
        "iters": case.iters,
        "times_ms": [round(t * 1000, 1) for t in times],
        "median_ms": med * 1000,
        "min_ms": min(times) * 1000,
        "peak_rss_mib": raw["peak_rss_mib"],
        "rss_after_import_mib": raw["rss_after_import_mib"],
        "cpu_ms_median": statistics.median(raw["cpu_times"]) * 1000,
        "loadavg_before": raw["loadavg_before"],
        "loadavg_after": raw["loadavg_after"],
    }
    if case.kind == "sgemm":
        row["gflop_s_median"] = raw["gflop"] / med
        row["gflop_s_best"] = raw["gflop"] / min(times)
        return row
    row["img_per_s"] = case.batch / med
    return row


def derive(rows: dict[str, dict], gflop_img: float) -> None:
    """GFLOP/s, fraction of the sgemm peak and ratios to Caffe's reference and to plain PyTorch."""
    peak = rows["sgemm"]["gflop_s_best"]
    ceiling = max(peak, rows.get("gemm_onednn", {}).get("gflop_s_best", 0.0))
    for name, row in rows.items():
        if "gflop_s_best" in row or row.get("model", "caffenet") != "caffenet":
            continue
        kind = name.rsplit("_", 1)[1]  # train32, time32, deploy10 ... (prefixes may hold "_")
        factor = 3 if kind.startswith(("train", "time")) else 1
        row["gflop_s"] = gflop_img * factor * row["img_per_s"]
        row["fraction_of_sgemm_peak"] = row["gflop_s"] / peak
        row["fraction_of_best_gemm"] = row["gflop_s"] / ceiling
        if kind in CAFFE:
            row["vs_caffe_reference"] = row["img_per_s"] / CAFFE[kind]["img_per_s"]
        eager = rows.get(f"eager_{kind}")
        if eager and not name.startswith("eager"):
            row["vs_eager_same_run"] = row["img_per_s"] / eager["img_per_s"]


def render_engine(body: dict, process: dict | None = None) -> list[str]:
    """Markdown of the engine section (PROCESS: report.json's "train_process" section, for the goals)."""
    rows = body["cases"]
    sg = rows["sgemm"]
    dnn = rows.get("gemm_onednn")
    out = [
        f"Machine: {body['machine']}; {body['threads']} threads; "
        f"forward {body['gflop_per_img']:.3f} GFLOP/img (training step = 3x forward). "
        "Medians of the timed iterations after warm-up; 'load' is the 1-minute load average "
        "before/after the case (above the thread count = a shared, noisy machine).",
        "",
        f"sgemm 4096^3 float32 (torch.mm): best {sg['gflop_s_best']:.0f} GFLOP/s, median "
        f"{sg['gflop_s_median']:.0f} (the peak used below is the best)"
        + (
            f"; the same GEMM in oneDNN (1x1 convolution): best {dnn['gflop_s_best']:.0f}, median "
            f"{dnn['gflop_s_median']:.0f} ('of best GEMM' divides by the larger of the two)."
            if dnn
            else "."
        ),
        "",
        "| case | what | batch | median ms | min ms | img/s | GFLOP/s | of sgemm peak | of best GEMM | "
        "vs Caffe ref | vs eager | peak RSS MiB | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        if "gflop_s_best" in r:
            continue

        def fmt(key: str, spec: str, suffix: str = "", row: dict = r) -> str:
            return f"{row[key]:{spec}}{suffix}" if key in row else "-"

        out.append(
            f"| {name} | {r['label']} | {r['batch']} | {r['median_ms']:.0f} | {r['min_ms']:.0f} | "
            f"{r['img_per_s']:.1f} | {fmt('gflop_s', '.0f')} | {fmt('fraction_of_sgemm_peak', '.0%')} | "
            f"{fmt('fraction_of_best_gemm', '.0%')} | {fmt('vs_caffe_reference', '.2f', 'x')} | "
            f"{fmt('vs_eager_same_run', '.2f', 'x')} | "
            f"{r['peak_rss_mib']:.0f} | {r['loadavg_before']:.1f}/{r['loadavg_after']:.1f} |"
        )
    out += ["", *render_goals(rows, process)]
    out += [
        "",
        "Caffe reference (real Caffe 1.0, 2 threads, reference machine, not this run): train b32 1728 ms, "
        "b256 13.9 s (18.5 img/s), deploy b10 317 ms (31.5 img/s), ~80 GFLOP/s = ~36 % of that machine's "
        "sgemm peak.",
        "",
    ]
    return out


def pixsent_figure(source: str, rows: dict[str, dict], unit: str, process: dict | None) -> float | None:
    """pixsent's figure for a goal row: a bench case's median ms (or peak RSS), or a train_process figure."""
    if source.startswith("train_process:"):
        return None if process is None else process[source.split(":", 1)[1]]
    row = rows.get(source)
    return None if row is None else row["peak_rss_mib"] if unit == "MiB" else row["median_ms"]


def goal_rows(rows: dict[str, dict], process: dict | None = None) -> list[dict]:
    """Issue 15's table: Caffe's figure on an AVX2 2-core machine beside pixsent's (this run's cases, and
    PROCESS, report.json's "train_process" section), the ratio and the goal."""
    out = []
    for key, (what, caffe, unit, goal, source) in CAFFE_AVX2.items():
        ours = pixsent_figure(source, rows, unit, process)
        ratio = None if ours is None else caffe / ours
        out.append(
            {
                "key": key,
                "what": what,
                "caffe": caffe,
                "unit": unit,
                "ours": ours,
                "source": source,
                "ratio": ratio,
                "goal": goal,
                "met": ratio is not None and ratio >= goal,
            }
        )
    return out


def render_goals(rows: dict[str, dict], process: dict | None = None) -> list[str]:
    """Markdown of goal_rows (figures of this run and of bench_train_process's; Caffe's recorded)."""
    out = [
        "Against real Caffe 1.0 on a 2-core AVX2 machine (recorded figures of issue 15, not this run; "
        "ratio = Caffe / pixsent, so above 1 is better for pixsent; the `caffe train` process rows come "
        "from bench_train_process.py's section of report.json, its own run):",
        "",
        "| case | Caffe | pixsent | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for g in goal_rows(rows, process):
        spec = ".1f" if g["unit"] == "s" else ".0f"
        ours = "not run" if g["ours"] is None else f"{g['ours']:{spec}} {g['unit']}"
        ratio = "-" if g["ratio"] is None else f"{g['ratio']:.2f}x"
        out.append(
            f"| {g['what']} | {g['caffe']:{spec}} {g['unit']} | {ours} | {ratio} | >= {g['goal']:g}x | "
            f"{'yes' if g['met'] else 'no'} |"
        )
    return out


def render_markdown(report: dict) -> str:
    """The whole report: the other sections as bench_lmdb renders them, then the engine section."""
    others = {k: v for k, v in report.items() if k != "engine"}
    try:
        from bench.bench_lmdb import render_markdown as render_others
    except ImportError:
        render_others = None
    if render_others is not None:
        text = render_others(others)
    else:
        text = "# pixsent benchmark report\n\n" + "".join(
            f"## {k}\n\n```json\n{json.dumps(v, indent=1)}\n```\n\n" for k, v in others.items()
        )
    if "engine" in report:
        engine = render_engine(report["engine"], report.get("train_process"))
        text = text.rstrip("\n") + "\n\n## engine\n\n" + "\n".join(engine)
    return text.rstrip("\n") + "\n"


def read_report(out_dir: Path) -> dict:
    """report.json of OUT_DIR ({} when there is none yet)."""
    json_path = out_dir / "report.json"
    return json.loads(json_path.read_text()) if json_path.is_file() else {}


def merge_report(section: dict, out_dir: Path, key: str = "engine") -> None:
    """Read-modify-write report.json (only ``key``'s section), then regenerate report.md."""
    from pixsent.formats.atomic import atomic_write_text

    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    report = read_report(out_dir)
    report[key] = section
    atomic_write_text(json_path, json.dumps(report, indent=1, sort_keys=True) + "\n")
    atomic_write_text(md_path, render_markdown(report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (about a minute)")
    parser.add_argument("--out", type=Path, default=REPO / "bench", help="folder of report.json / .md")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--only", nargs="+", help="run only these cases (sgemm always runs)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(Case(**json.loads(args.child)), args.threads)))
        return 0
    selected = [c for c in cases(args.quick) if not args.only or c.name in args.only or c.kind == "sgemm"]
    if squeezenet_train_val() is None:
        print("no SqueezeNet train_val (PIXSENT_BENCH_SQUEEZENET): its case is left out", flush=True)
        selected = [c for c in selected if c.model != "squeezenet"]
    rows: dict[str, dict] = {}
    gflop_img = 0.0
    for case in selected:
        raw = run_case(case, args.threads)
        gflop_img = raw.get("gflop_per_img", gflop_img)
        rows[case.name] = summarise(case, raw)
        r = rows[case.name]
        print(
            f"{case.name:18s} median {r['median_ms']:8.1f} ms  min {r['min_ms']:8.1f} ms  "
            f"peak RSS {r['peak_rss_mib']:6.0f} MiB",
            flush=True,
        )
    derive(rows, gflop_img)
    process = read_report(args.out).get("train_process")
    section = {
        "quick": args.quick,
        "threads": args.threads,
        "gflop_per_img": gflop_img,
        "caffe_reference": CAFFE,
        "caffe_avx2_reference": {k: list(v) for k, v in CAFFE_AVX2.items()},
        "goals": goal_rows(rows, process),
        "caffe_train_peak_fraction": CAFFE_TRAIN_PEAK_FRACTION,
        "cases": rows,
        "machine": f"{platform.processor() or platform.machine()} {os.cpu_count()} cpus, "
        f"python {platform.python_version()}, torch {__import__('torch').__version__}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    merge_report(section, args.out)
    print("\n".join(render_engine(section, process)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
