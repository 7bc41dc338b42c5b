"""Measured distance of pixsent from real BVLC Caffe on the golden files (the numbers the tests bound).

Writes bench/faithfulness.json and .md: for every golden comparison, the worst relative error
max |ours - caffe| / max |caffe| over the blobs compared (absolute error for probabilities). The tests in
tests/test_engine_golden.py, test_solver_golden.py, test_engine_golden_random.py and test_pycaffe_net.py
assert the tolerances; this script reports how far inside them pixsent is.
Usage: python bench/faithfulness.py [--golden DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def worst(pairs) -> float:
    return max(rel(a, b) for a, b in pairs)


@contextlib.contextmanager
def in_dir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def net_checks(golden: Path) -> dict[str, float]:
    """Forward blobs, gradients, fully convolutional map and OpenCV's importer on mini_caffenet."""
    import cv2

    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine.net import Net

    mini = golden / "mini_caffenet"
    x = np.load(mini / "input.npy")
    out: dict[str, float] = {}
    net = Net(mini / "deploy.prototxt", caffe_pb2.TEST, weights=str(mini / "weights.caffemodel"))
    net.blobs["data"].data[...] = x
    net.forward()
    ref = np.load(mini / "blobs.npz")
    out["forward, every blob"] = worst((net.blobs[n].data, ref[n]) for n in ref.files)
    cvnet = cv2.dnn.readNetFromCaffe(str(mini / "deploy.prototxt"), str(mini / "weights.caffemodel"))
    cvnet.setInput(x)
    out["forward vs OpenCV's Caffe importer (prob)"] = rel(
        net.blobs["prob"].data, cvnet.forward().reshape(2, 3)
    )

    net = Net(mini / "train_nodrop.prototxt", caffe_pb2.TRAIN, weights=str(mini / "weights.caffemodel"))
    net.blobs["data"].data[...] = x
    net.blobs["label"].data[...] = np.load(mini / "labels.npy")
    net.clear_param_diffs()
    loss = net.forward()
    net.backward()
    grads = np.load(mini / "grads.npz")
    pairs = [
        (net.params[k.split("/")[0]][int(k.split("/")[1])].diff, grads[k]) for k in grads.files if "/" in k
    ]
    pairs += [(net.blobs["data"].diff, grads["data_diff"]), (np.array([loss]), np.array([grads["loss"]]))]
    out["loss and every gradient"] = worst(pairs)

    net = Net(mini / "fullconv.prototxt", caffe_pb2.TEST, weights=str(mini / "fullconv.caffemodel"))
    net.blobs["data"].data[...] = np.load(mini / "input_451.npy")
    net.forward()
    out["fully convolutional map"] = rel(net.blobs["prob"].data, np.load(mini / "fullconv_prob.npy"))
    return out


def solver_checks(golden: Path) -> dict[str, float]:
    """The 20-iteration SGD run, the resume from Caffe's solverstate, and the five other solver types."""
    from pixsent.cli.caffe_tool import CaffeFlags, train
    from pixsent.engine import glog
    from pixsent.engine.logparse import parse_log
    from pixsent.formats.caffemodel import read_weights
    from pixsent.formats.solverstate import history_arrays, read_solverstate

    def run(folder: Path, log_name: str, **flags) -> Path:
        with in_dir(folder):
            fh = glog.add_file(folder / log_name)
            try:
                train(CaffeFlags(action="train", **flags))
            finally:
                glog.remove_file(fh)
        return folder / log_name

    def weights_err(ours: Path, ref: Path) -> float:
        a, b = read_weights(ours), read_weights(ref)
        return worst((a[k][i], b[k][i]) for k in b for i in range(len(b[k])))

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pixsent-faith-") as tmp:
        root = Path(tmp)
        for name in ("solver_run", "solver_types", "lmdb"):
            shutil.copytree(golden / name, root / name)
        shutil.copy(golden / "mean.binaryproto", root / "mean.binaryproto")
        sr = root / "solver_run"
        (sr / "ours").mkdir()
        text = (
            (sr / "solver.prototxt")
            .read_text()
            .replace('snapshot_prefix: "snap"', 'snapshot_prefix: "ours/snap"')
        )
        (sr / "ours.solver.prototxt").write_text(text)
        log = parse_log(run(sr, "ours.log", solver="ours.solver.prototxt", weights="init.caffemodel"))
        t = np.load(golden / "solver_run" / "trajectory.npz")
        out["SGD run: per-iteration loss, test accuracy and loss"] = max(
            rel(log.loss, t["loss"]),
            rel(log.test_outputs["accuracy"], t["test_accuracy"]),
            rel(log.test_outputs["loss"], t["test_loss"]),
        )
        out["SGD run: lr"] = rel(log.lr, t["lr"])
        out["SGD run: weights at iterations 10 and 20"] = max(
            weights_err(sr / "ours" / f"snap_iter_{i}.caffemodel", sr / f"snap_iter_{i}.caffemodel")
            for i in (10, 20)
        )
        ha = history_arrays(read_solverstate(sr / "ours" / "snap_iter_10.solverstate"))
        hb = history_arrays(read_solverstate(sr / "snap_iter_10.solverstate"))
        out["SGD run: momentum history at iteration 10"] = worst(zip(ha, hb))

        (sr / "resumed").mkdir()
        (sr / "resume.solver.prototxt").write_text(text.replace('"ours/snap"', '"resumed/snap"'))
        run(sr, "resumed.log", solver="resume.solver.prototxt", snapshot="snap_iter_10.solverstate")
        out["resume from Caffe's solverstate: weights at 20"] = weights_err(
            sr / "resumed" / "snap_iter_20.caffemodel", sr / "snap_iter_20.caffemodel"
        )

        st = root / "solver_types"
        for kind in ("Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"):
            ref_model = st / f"{kind}_iter_10.caffemodel"
            ref_copy = st / f"golden_{kind}_iter_10.caffemodel"
            ref_state = st / f"golden_{kind}_iter_10.solverstate"
            ref_model.rename(ref_copy)
            (st / f"{kind}_iter_10.solverstate").rename(ref_state)
            run(
                st,
                f"ours_{kind}.log",
                solver=f"{kind}.solver.prototxt",
                weights="../solver_run/init.caffemodel",
            )
            ha = history_arrays(read_solverstate(st / f"{kind}_iter_10.solverstate"))
            hb = history_arrays(read_solverstate(ref_state))
            out[f"{kind}: weights and history at 10"] = max(
                weights_err(ref_model, ref_copy), worst(zip(ha, hb))
            )
    return out


def random_checks(golden: Path) -> dict[str, float]:
    """Caffe's random streams: parameters drawn by fillers from a seed (mini_caffenet 2017, solver_run 2023,
    random_run 1701 through the solver) and the random_run training (crops, mirrors, Dropout)."""
    from pixsent.caffe.proto import caffe_pb2
    from pixsent.cli.caffe_tool import CaffeFlags, train
    from pixsent.engine import glog
    from pixsent.engine.context import set_random_seed
    from pixsent.engine.logparse import parse_log
    from pixsent.engine.net import Net
    from pixsent.engine.solvers.solver import solver_from_file
    from pixsent.formats.caffemodel import read_weights
    from pixsent.formats.solverstate import history_arrays, read_solverstate

    def params_err(net, path: Path) -> float:
        ref = read_weights(path)
        return worst((net.params[k][i].data.reshape(b.shape), b) for k in ref for i, b in enumerate(ref[k]))

    out: dict[str, float] = {}
    set_random_seed(2017)
    mini = golden / "mini_caffenet"
    fillers = params_err(Net(mini / "deploy.prototxt", caffe_pb2.TEST), mini / "weights.caffemodel")
    with in_dir(golden / "solver_run"):
        set_random_seed(2023)
        net = Net("net.prototxt", caffe_pb2.TRAIN)
        fillers = max(fillers, params_err(net, Path("init.caffemodel")))
        net.close()
    with tempfile.TemporaryDirectory(prefix="pixsent-faith-") as tmp:
        root = Path(tmp)
        shutil.copytree(golden / "lmdb", root / "lmdb")
        rr = root / "random_run"
        shutil.copytree(golden / "random_run", rr)
        for f in rr.glob("snap_iter_*"):
            f.rename(f.with_name("golden_" + f.name))
        with in_dir(rr):
            solver = solver_from_file("solver.prototxt")
            fillers = max(fillers, params_err(solver.net, Path("init_from_seed.caffemodel")))
            for n in [solver.net, *solver.test_nets]:
                n.close()
            fh = glog.add_file(rr / "ours.log")
            try:
                train(CaffeFlags(action="train", solver="solver.prototxt"))
            finally:
                glog.remove_file(fh)
        out["fillers from a seed (mini_caffenet, solver_run, random_run)"] = fillers
        ours, ref = parse_log(rr / "ours.log"), parse_log(rr / "train.log")
        out["random_run: per-iteration loss, test accuracy and loss"] = max(
            rel(ours.loss, ref.loss),
            *(rel(ours.test_outputs[k], ref.test_outputs[k]) for k in ref.test_outputs),
        )
        errs = []
        for i in (10, 20):
            a, b = (
                read_weights(rr / f"snap_iter_{i}.caffemodel"),
                read_weights(rr / f"golden_snap_iter_{i}.caffemodel"),
            )
            errs += [(a[k][j], b[k][j]) for k in b for j in range(len(b[k]))]
            ha = history_arrays(read_solverstate(rr / f"snap_iter_{i}.solverstate"))
            hb = history_arrays(read_solverstate(rr / f"golden_snap_iter_{i}.solverstate"))
            errs += zip(ha, hb)
        out["random_run: weights and history at 10 and 20"] = worst(errs)
    return out


def classifier_checks(golden: Path) -> dict[str, float]:
    """pycaffe's Classifier.predict (centre and 10-crop) vs predictions.npz, absolute error."""
    import pixsent.caffe as caffe

    ov = golden / "oversample"
    preds = np.load(ov / "predictions.npz")
    clf = caffe.Classifier(
        str(ov / "deploy_batch10.prototxt"),
        str(golden / "mini_caffenet" / "weights.caffemodel"),
        image_dims=(256, 256),
        mean=preds["mean_bgr"],
        raw_scale=255,
        channel_swap=(2, 1, 0),
    )
    err = 0.0
    for name in (ov / "images.txt").read_text().split():
        stem = Path(name).stem
        img = caffe.io.load_image(str(golden / "images" / name))
        err = max(
            err, float(np.abs(clf.predict([img], oversample=True)[0] - preds[f"{stem}/oversample"]).max())
        )
        err = max(err, float(np.abs(clf.predict([img], oversample=False)[0] - preds[f"{stem}/center"]).max()))
    return {"Classifier.predict, centre and 10-crop (absolute)": err}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--golden", type=Path, default=Path(os.environ.get("PIXSENT_SHARED", "../shared")) / "golden"
    )
    p.add_argument("--out", type=Path, default=Path("bench"))
    args = p.parse_args()
    golden = args.golden.resolve()
    results = net_checks(golden) | solver_checks(golden) | random_checks(golden) | classifier_checks(golden)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faithfulness.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| golden comparison | worst error |", "| --- | --- |"]
    lines += [f"| {k} | {v:.2e} |" for k, v in results.items()]
    (args.out / "faithfulness.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
