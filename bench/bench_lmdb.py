"""LMDB build benchmark: ~500 generated 500x375 JPEGs -> 256x256 raw-Datum LMDB with 1 and 2 workers.

Writes images/s (median of 3 runs) into the "lmdb" section of bench/report.json and regenerates
bench/report.md from the whole JSON (other sections belong to other benchmarks and are kept).
Real Caffe's convert_imageset builds this set at 256 img/s on the reference machine. Then issue 15's row:
the whole ``pixsent convert_imageset`` process (interpreter start-up included) on 1280 such JPEGs, beside
real Caffe's 4.62 s for the same job on a 2-core AVX2 machine of this project (goal: 2x); with
``--process-workers 1 2`` also with each of those ``--workers`` given explicitly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CAFFE_IMG_PER_S = 256.0
CAFFE_PROCESS_S = 4.62  # real Caffe convert_imageset, 1280 JPEGs 500x375 -> 256x256, whole process (issue 15)
PROCESS_IMAGES = 1280


def make_images(folder: Path, n: int, seed: int = 2017) -> Path:
    """N natural-ish JPEGs (smooth gradients, blobs, texture, noise), quality 90; returns the list file."""
    rng = np.random.RandomState(seed)
    h, w = 375, 500
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lines = []
    for i in range(n):
        base = rng.uniform(40, 200, 3).astype(np.float32)
        grad = rng.uniform(-0.3, 0.3, (2, 3)).astype(np.float32)
        img = base + yy[..., None] * grad[0] + xx[..., None] * grad[1]
        for _ in range(6):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(20, 120)
            mask = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
            img += mask * rng.uniform(-80, 80, 3).astype(np.float32)
        img += 15 * np.sin(xx / rng.uniform(3, 20))[..., None] + rng.normal(0, 6, (h, w, 3)).astype(
            np.float32
        )
        name = f"img{i:04d}.jpg"
        cv2.imwrite(str(folder / name), np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        lines.append(f"{name} {i % 2}\n")
    listfile = folder / "list.txt"
    listfile.write_text("".join(lines))
    return listfile


def measure(folder: Path, listfile: Path, workers: int, runs: int) -> list[float]:
    from pixsent.data.imageset import convert_imageset

    rates = []
    for r in range(runs):
        db = folder / f"db_{workers}_{r}"
        t0 = time.perf_counter()
        report = convert_imageset(folder, listfile, db, resize=(256, 256), workers=workers, progress=False)
        rates.append(report.written / (time.perf_counter() - t0))
    return rates


def measure_process(folder: Path, listfile: Path, runs: int, workers: int | None = None) -> list[float]:
    """Seconds of whole ``python -m pixsent convert_imageset`` processes, as a user runs it (with
    ``--workers WORKERS`` when given, else the command's default)."""
    import subprocess

    times = []
    for r in range(runs):
        db = folder / f"db_process_{workers}_{r}"
        cmd = [sys.executable, "-m", "pixsent", "convert_imageset", "--resize_height", "256",
               "--resize_width", "256", f"{folder}/", str(listfile), str(db)]  # fmt: skip
        if workers is not None:
            cmd += ["--workers", str(workers)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - t0)
    return times


def render_markdown(report: dict) -> str:
    """The whole report as markdown: one section per key of report.json."""
    out = ["# pixsent benchmark report", ""]
    for section, body in report.items():
        out += [f"## {section}", ""]
        if section == "lmdb":
            out += [
                f"{body['images']} JPEGs {body['source_size']} -> {body['target_size']} raw Datums, "
                f"median of {body['runs']} runs; "
                f"real Caffe convert_imageset: {body['caffe_img_per_s']:.0f} img/s.",
                "",
                "| workers | img/s (median) | runs | vs Caffe |",
                "| --- | --- | --- | --- |",
            ]
            for w, row in body["workers"].items():
                runs = ", ".join(f"{x:.0f}" for x in row["runs"])
                out.append(f"| {w} | {row['median']:.0f} | {runs} | {row['vs_caffe']:.2f}x |")
            proc = body.get("process")
            if proc:
                ratio = CAFFE_PROCESS_S / proc["median_s"]
                runs = ", ".join(f"{x:.2f}" for x in proc["runs_s"])
                met = "met" if ratio >= 2 else "not met"
                versus = (
                    f"real Caffe {CAFFE_PROCESS_S} s: {ratio:.2f}x (goal 2x: {met})"
                    if proc["images"] == PROCESS_IMAGES
                    else f"real Caffe's {CAFFE_PROCESS_S} s is for {PROCESS_IMAGES} JPEGs: no ratio"
                )
                out += [
                    "",
                    f"Whole `pixsent convert_imageset` process, {proc['images']} JPEGs, default workers: "
                    f"median {proc['median_s']:.2f} s (runs {runs}); {versus}.",
                ]
                for w, row in body.get("process_workers", {}).items():
                    runs = ", ".join(f"{x:.2f}" for x in row["runs_s"])
                    out.append(f"Same with `--workers {w}`: median {row['median_s']:.2f} s (runs {runs}).")
            out += ["", f"machine: {body['machine']}", ""]
        elif section == "train_process":
            from bench.bench_train_process import render

            out += render(body)
        else:
            out += ["```json", json.dumps(body, indent=1), "```", ""]
    return "\n".join(out)


def merge_report(section: dict, json_path: Path, md_path: Path) -> None:
    """Read-modify-write report.json (only the "lmdb" key), then regenerate report.md."""
    from pixsent.formats.atomic import atomic_write_text

    report = json.loads(json_path.read_text()) if json_path.is_file() else {}
    report["lmdb"] = section
    atomic_write_text(json_path, json.dumps(report, indent=1, sort_keys=True) + "\n")
    atomic_write_text(md_path, render_markdown(report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--process-images", type=int, default=PROCESS_IMAGES)
    parser.add_argument(
        "--process-workers",
        type=int,
        nargs="*",
        default=[],
        help="also time the process with these --workers",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_lmdb_") as tmp:
        folder = Path(tmp)
        listfile = make_images(folder, args.images)
        rows = {}
        for w in args.workers:
            rates = measure(folder, listfile, w, args.runs)
            med = statistics.median(rates)
            rows[str(w)] = {"median": med, "runs": rates, "vs_caffe": med / CAFFE_IMG_PER_S}
            print(f"workers={w}: {med:.0f} img/s (runs {', '.join(f'{r:.0f}' for r in rates)})")
    with tempfile.TemporaryDirectory(prefix="bench_lmdb_") as tmp:
        folder = Path(tmp)
        listfile = make_images(folder, args.process_images)
        times = measure_process(folder, listfile, args.runs)
        process = {"images": args.process_images, "median_s": statistics.median(times), "runs_s": times,
                   "caffe_s": CAFFE_PROCESS_S}  # fmt: skip
        print(f"convert_imageset process, {args.process_images} JPEGs: {process['median_s']:.2f} s")
        process_workers = {}
        for w in args.process_workers:
            times = measure_process(folder, listfile, args.runs, w)
            process_workers[str(w)] = {"median_s": statistics.median(times), "runs_s": times}
            print(f"  --workers {w}: {process_workers[str(w)]['median_s']:.2f} s")
    section = {
        "images": args.images,
        "source_size": "500x375",
        "target_size": "256x256",
        "runs": args.runs,
        "caffe_img_per_s": CAFFE_IMG_PER_S,
        "workers": rows,
        "process": process,
        "process_workers": process_workers,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    merge_report(section, args.out / "report.json", args.out / "report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
