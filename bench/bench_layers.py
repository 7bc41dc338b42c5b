"""Layer-probe benchmark: the whole `pixsent layers` job (Table 3) at the paper's scale, timed and watched.

Builds in a work folder (default /tmp/pixsent_bench_layers): N 256x256 JPEGs of two classes (demo's
striped images scaled up, a fraction --noise drawn as the other class), five stratified folds made by
`pixsent splits make` in the five_agrees layout, and a fake fine-tuned CaffeNet (the paper's fc8_twitter
deploy.prototxt with seeded He-scaled random weights, ~217 MB). Then runs `pixsent layers` in a subprocess
on a fresh feature cache while a thread samples the child's /proc status every 0.1 s (VmRSS, RssAnon,
RssFile); the peak RSS is the child's VmHWM (also getrusage's ru_maxrss of children). The child writes its
phases (extract, standardise, fit per layer, fold and classifier) with --timings, so samples are attributed
to phases. Results are merged under --label into bench/layers_report.json and bench/layers_report.md (both
git-ignored). `--quick`: 176 images, 3 layers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pixsent.analysis.phases import proc_status_kib  # noqa: E402
from pixsent.analysis.probes import TABLE3_LAYERS  # noqa: E402

DEPLOY = REPO / "prototxt/five_agrees/fc8_twitter/deploy.prototxt"
QUICK_LAYERS = ("conv1", "pool5", "fc7")
MEAN_BGR = "104,117,123"
BUDGET_MIB = 8 * 1024


def make_images(root: Path, n: int, seed: int, noise: float) -> Path:
    """N JPEGs of 256x256 (demo.draw_image scaled up, labels alternate) and their labels.txt.

    A fraction ``noise`` of the images is drawn as the other class, so that, as on the paper's data, the
    probes cannot be perfect and the classifiers meet non-separable test folds.
    """
    import cv2

    from pixsent.recipes.demo import draw_image

    images = root / "images"
    labels = root / "labels.txt"
    if labels.is_file() and len(labels.read_text().splitlines()) == n:
        return labels
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True)
    rng = np.random.RandomState(seed)
    lines = []
    for i in range(n):
        label = i % 2
        drawn = 1 - label if rng.uniform() < noise else label
        img = cv2.resize(draw_image(rng, drawn), (256, 256), interpolation=cv2.INTER_LINEAR)
        name = f"img{i:04d}_c{label}.jpg"
        cv2.imwrite(str(images / name), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        lines.append(f"{name} {label}\n")
    labels.write_text("".join(lines))
    return labels


def make_splits(root: Path, labels: Path, folds: int, seed: int) -> Path:
    """Stratified folds in <root>/splits/five_agrees/test<k>/ through the `pixsent splits make` command."""
    out = root / "splits" / "five_agrees"
    cmd = [sys.executable, "-m", "pixsent", "splits", "make", str(labels), "--out", str(out)]
    cmd += ["--folds", str(folds), "--seed", str(seed), "--overwrite"]
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return root / "splits"


def make_weights(root: Path, seed: int) -> Path:
    """The fc8_twitter deploy net with seeded He-scaled gaussian weights and small biases, saved once."""
    path = root / "fake_fc8_twitter.caffemodel"
    if path.is_file():
        return path
    import torch

    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine.net import Net

    net = Net(str(DEPLOY), caffe_pb2.TEST)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blobs in net.params.values():
            w, b = blobs[0], blobs[1]
            fan_in = int(np.prod(w.shape[1:]))
            w.data[...] = (torch.randn(w.shape, generator=g) * (2.0 / fan_in) ** 0.5).numpy()
            b.data[...] = 0.01
    net.save(path)
    return path


class Sampler(threading.Thread):
    """Samples a process's /proc status every `period` seconds until it exits: (time, MiB fields)."""

    def __init__(self, pid: int, period: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            st = proc_status_kib(self.pid)
            if st:
                self.samples.append((time.time(), {k: v / 1024 for k, v in st.items()}))
            self.stop.wait(self.period)

    def peak(self, key: str, start: float = 0.0, end: float = float("inf")) -> float:
        vals = [s[key] for t, s in self.samples if start <= t <= end and key in s]
        return max(vals) if vals else 0.0


def run_layers(root: Path, splits: Path, weights: Path, layers: list[str], keep_cache: bool) -> dict:
    """`pixsent layers` in a subprocess, watched; returns wall time, memory, phases and the results."""
    cache = root / "cache"
    if not keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    timings, table = root / "timings.json", root / "table3.json"
    cmd = [sys.executable, "-m", "pixsent", "layers", "--run", str(weights), "--model", str(DEPLOY)]
    cmd += ["--subset", "five", "--splits", str(splits), "--images", str(root / "images")]
    cmd += ["--cache", str(cache), "--mean", MEAN_BGR, "--layers", ",".join(layers)]
    cmd += ["--json", str(table), "--timings", str(timings)]
    log = (root / "layers.log").open("w")
    t0 = time.time()
    child = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    sampler = Sampler(child.pid)
    sampler.start()
    stdout, _ = child.communicate()
    wall = time.time() - t0
    sampler.stop.set()
    sampler.join()
    log.close()
    if child.returncode != 0:
        sys.exit(f"pixsent layers failed ({child.returncode}); see {root / 'layers.log'}")
    events = json.loads(timings.read_text())
    for e in events:
        e["sampled_rss_mib"] = sampler.peak("VmRSS", e["start"], e["end"] + sampler.period)
        e["sampled_anon_mib"] = sampler.peak("RssAnon", e["start"], e["end"] + sampler.period)
    last = sampler.samples[-1][1] if sampler.samples else {}
    return {
        "wall_s": wall,
        "peak_rss_mib": max(last.get("VmHWM", 0.0), sampler.peak("VmRSS")),
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "peak_anon_mib": sampler.peak("RssAnon"),
        "peak_file_mib": sampler.peak("RssFile"),
        "cache_mib": sum(p.stat().st_size for p in cache.rglob("*.npy")) / 2**20,
        "events": events,
        "results": json.loads(table.read_text()),
        "stdout": stdout,
    }


def _mean_acc(results: list[dict]) -> float:
    return float(np.mean([r["accuracy"] for r in results])) if results else float("nan")


def per_layer(run: dict, layers: list[str]) -> list[dict]:
    """Per layer: features, seconds summed over folds per phase, sampled peak memory, mean accuracies."""
    rows = []
    for layer in layers:
        ev = [e for e in run["events"] if e.get("layer") == layer]
        std = [e for e in ev if e["phase"] == "standardise"]
        fit = {c: [e for e in ev if e.get("classifier") == c] for c in ("svm", "softmax")}
        res = {c: [r for r in run["results"] if r["layer"] == layer and r["classifier"] == c] for c in fit}
        rows.append(
            {
                "layer": layer,
                "features": std[0]["features"] if std else 0,
                "form": res["svm"][0]["form"] if res["svm"] else "",
                "standardise_s": sum(e["seconds"] for e in std),
                "svm_s": sum(e["seconds"] for e in fit["svm"]),
                "softmax_s": sum(e["seconds"] for e in fit["softmax"]),
                "total_s": sum(e["seconds"] for e in ev),
                "peak_rss_mib": max((e["sampled_rss_mib"] for e in ev), default=0.0),
                "peak_anon_mib": max((e["sampled_anon_mib"] for e in ev), default=0.0),
                "svm_acc": _mean_acc(res["svm"]),
                "softmax_acc": _mean_acc(res["softmax"]),
                "svm_c": sorted({r["c"] for r in res["svm"]}),
                "softmax_c": sorted({r["c"] for r in res["softmax"]}),
            }
        )
    return rows


def to_markdown(report: dict) -> str:
    """Every labelled run: totals, then the per-layer table."""
    lines = ["# Layer-probe benchmark (`bench/bench_layers.py`)", ""]
    for label, r in report["runs"].items():
        ext = r["extract"]
        lines += [
            f"## {label}: {r['images']} images ({r.get('noise', 0):.0%} drawn as the other class), "
            f"{len(r['layers'])} layers, {r['folds']} folds",
            "",
            f"{r['machine']}; load average at start {r['load_start']:.2f}, at end {r['load_end']:.2f}.",
            "",
            f"- wall {r['wall_s']:.1f} s; extraction {ext['seconds']:.1f} s ({ext['img_per_s']:.1f} img/s, "
            f"peak RSS during it {ext['peak_rss_mib']:.0f} MiB); cache {r['cache_mib']:.0f} MiB on disk",
            f"- peak RSS (VmHWM) {r['peak_rss_mib']:.0f} MiB (ru_maxrss {r['ru_maxrss_mib']:.0f}); peak "
            f"anonymous {r['peak_anon_mib']:.0f} MiB, peak file-backed {r['peak_file_mib']:.0f} MiB; "
            f"budget {BUDGET_MIB} MiB: {'within' if r['peak_rss_mib'] <= BUDGET_MIB else 'EXCEEDED'}",
            "",
            "| layer | features | form | standardise s | SVM fit s | softmax fit s | layer total s "
            "| peak RSS MiB | peak anon MiB | SVM acc | softmax acc |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in r["per_layer"]:
            lines.append(
                f"| {row['layer']} | {row['features']} | {row['form']} | {row['standardise_s']:.1f} | "
                f"{row['svm_s']:.1f} | {row['softmax_s']:.1f} | {row['total_s']:.1f} | "
                f"{row['peak_rss_mib']:.0f} | {row['peak_anon_mib']:.0f} | {row['svm_acc']:.3f} | "
                f"{row['softmax_acc']:.3f} |"
            )
        lines += ["", "Seconds are summed over the folds.", ""]
    return "\n".join(lines)


def write_report(entry: dict, label: str, out: Path) -> None:
    """Merge this run under ``label`` into layers_report.json and regenerate layers_report.md."""
    from pixsent.formats.atomic import atomic_write_text

    path = out / "layers_report.json"
    report = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    report["runs"][label] = entry
    atomic_write_text(path, json.dumps(report, indent=1))
    atomic_write_text(out / "layers_report.md", to_markdown(report))


def main(argv: list[str] | None = None) -> int:
    """Build the data, run `pixsent layers` once, write the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=880, help="number of images (paper's five-agree: 880)")
    ap.add_argument("--layers", help="comma-separated layers (default: the 13 of Table 3)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help=f"176 images, layers {','.join(QUICK_LAYERS)}")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pixsent_bench_layers"))
    ap.add_argument("--out", type=Path, default=REPO / "bench")
    ap.add_argument("--label", help="name of this run in the report (default: full or quick)")
    ap.add_argument("--keep-cache", action="store_true", help="reuse features from a previous run")
    ap.add_argument("--noise", type=float, default=0.15, help="fraction of images drawn as the other class")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n = 176 if args.quick and args.images == 880 else args.images
    layers = args.layers.split(",") if args.layers else list(QUICK_LAYERS if args.quick else TABLE3_LAYERS)
    root = args.work / f"n{n}_noise{args.noise:g}"
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    labels = make_images(root, n, args.seed, args.noise)
    splits = make_splits(root, labels, args.folds, args.seed)
    weights = make_weights(args.work, args.seed)
    mib = weights.stat().st_size / 2**20
    print(f"data ready in {time.time() - t0:.1f} s ({n} images, {mib:.0f} MiB weights)")
    load_start = os.getloadavg()[0]
    run = run_layers(root, splits, weights, layers, args.keep_cache)
    ext = [e for e in run["events"] if e["phase"] == "extract"]
    ext_s = sum(e["seconds"] for e in ext)
    entry = {
        "images": n,
        "noise": args.noise,
        "layers": layers,
        "folds": args.folds,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}",
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "wall_s": run["wall_s"],
        "peak_rss_mib": run["peak_rss_mib"],
        "ru_maxrss_mib": run["ru_maxrss_mib"],
        "peak_anon_mib": run["peak_anon_mib"],
        "peak_file_mib": run["peak_file_mib"],
        "cache_mib": run["cache_mib"],
        "extract": {
            "seconds": ext_s,
            "img_per_s": n / ext_s if ext_s else 0.0,
            "peak_rss_mib": max((e["sampled_rss_mib"] for e in ext), default=0.0),
        },
        "per_layer": per_layer(run, layers),
        "events": run["events"],
        "table": run["stdout"],
    }
    label = args.label or ("quick" if args.quick else "full")
    write_report(entry, label, args.out)
    print(run["stdout"])
    print(to_markdown({"runs": {label: entry}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
