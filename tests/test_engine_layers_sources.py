"""Data-source layers: HDF5Data, HDF5Output, MemoryData and WindowData, run inside nets on files made here;
WindowData's windows against a numpy/OpenCV reference written from window_data_layer.cpp (exact)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from layer_harness import input_layer, net_from, rel

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import DataError, FormatError, NetError
from pixsent.formats.binaryproto import write_mean

h5py = pytest.importorskip("h5py")
RNG = np.random.default_rng(41)


# ---------------------------------------------------------------- HDF5Data
def write_h5(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as fh:
        for name, value in datasets.items():
            fh.create_dataset(name, data=value)
    return path


def hdf5_net(source: Path, batch: int, extra: str = "", tops=("data", "label")) -> str:
    t = "".join(f' top: "{x}"' for x in tops)
    return (
        f'layer {{ name: "h" type: "HDF5Data"{t} hdf5_data_param {{ source: "{source}" batch_size: {batch} '
        f"{extra} }} }}\n"
    )


@pytest.fixture
def two_files(tmp_path):
    a = RNG.normal(size=(5, 2, 3)).astype(np.float32)
    b = RNG.normal(size=(3, 2, 3)).astype(np.float32)
    write_h5(tmp_path / "a.h5", data=a, label=np.arange(5, dtype=np.int32))
    write_h5(tmp_path / "b.h5", data=b.astype(np.float64), label=np.arange(5, 8, dtype=np.int64))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'a.h5'}\n  {tmp_path / 'b.h5'}\n")
    return listing, np.concatenate([a, b]), np.arange(8, dtype=np.float32)


def test_hdf5_data_reads_files_in_order_and_wraps(two_files):
    listing, data, label = two_files
    net = net_from(hdf5_net(listing, 3), caffe_pb2.TRAIN)
    assert net.blobs["data"].shape == (3, 2, 3) and net.blobs["label"].shape == (3,)
    order = []
    for _ in range(6):  # 18 rows: 2 passes over the 8 rows, plus 2
        net.forward()
        order += net.blobs["label"].data.astype(int).tolist()
        for i, lab in enumerate(net.blobs["label"].data.astype(int)):
            assert rel(net.blobs["data"].data[i], data[lab]) == 0
    assert order == (list(range(8)) * 3)[:18]


def test_hdf5_data_shuffle_permutes_within_each_file(two_files):
    listing, _, _ = two_files
    net = net_from(hdf5_net(listing, 4, "shuffle: true"), caffe_pb2.TRAIN, seed=3)
    rows = []
    for _ in range(8):  # 32 rows = 4 epochs of 8
        net.forward()
        rows += net.blobs["label"].data.astype(int).tolist()
    a, b = list(range(5)), list(range(5, 8))
    for i in range(0, 32, 8):  # each pass reads one whole file, then the other, each in some row order
        e = rows[i : i + 8]
        assert (sorted(e[:5]), sorted(e[5:])) == (a, b) or (sorted(e[:3]), sorted(e[3:])) == (b, a), e
    assert rows != (list(range(8)) * 4)  # shuffled
    again = net_from(hdf5_net(listing, 4, "shuffle: true"), caffe_pb2.TRAIN, seed=3)
    again.forward()
    assert again.blobs["label"].data.astype(int).tolist() == rows[:4]  # same seed, same order


@pytest.mark.parametrize(
    "setup,extra,error,match",
    [
        ("missing_dataset", "", FormatError, "no HDF5 dataset 'label'"),
        ("empty_list", "", DataError, "at least 1 HDF5 filename"),
        ("no_list", "", DataError, "failed to open source"),
        ("rows_differ", "", FormatError, "number of rows"),
        ("ok", "transform_param { scale: 2 }", NetError, "does not transform"),
    ],
)
def test_hdf5_data_checks(tmp_path, setup, extra, error, match):
    listing = tmp_path / "list.txt"
    if setup == "missing_dataset":
        write_h5(tmp_path / "a.h5", data=np.zeros((2, 3)))
    elif setup == "rows_differ":
        write_h5(tmp_path / "a.h5", data=np.zeros((2, 3)), label=np.zeros(3))
    else:
        write_h5(tmp_path / "a.h5", data=np.zeros((2, 3)), label=np.zeros(2))
    if setup != "no_list":
        listing.write_text("" if setup == "empty_list" else str(tmp_path / "a.h5"))
    text = hdf5_net(listing, 2).replace("} }\n", f"}} {extra} }}\n")
    with pytest.raises(error, match=match):
        net_from(text)


# ---------------------------------------------------------------- HDF5Output
def test_hdf5_output_writes_legacy_4d_datasets_once(tmp_path):
    out = tmp_path / "out.h5"
    text = input_layer({"d": (3, 4), "l": (3,)}) + (
        f'layer {{ name: "w" type: "HDF5Output" bottom: "d" bottom: "l" '
        f'hdf5_output_param {{ file_name: "{out}" }} }}\n'
    )
    net = net_from(text)
    with h5py.File(out, "r") as fh:  # created (empty) when the net is built, as Caffe's H5Fcreate
        assert list(fh.keys()) == []
    d, lab = RNG.normal(size=(3, 4)).astype(np.float32), np.array([1, 0, 2], np.float32)
    net.blobs["d"].data[...] = d
    net.blobs["l"].data[...] = lab
    net.forward()
    with h5py.File(out, "r") as fh:
        assert fh["data"].shape == (3, 4, 1, 1) and fh["label"].shape == (3, 1, 1, 1)
        assert fh["data"].dtype == np.float32
        assert rel(fh["data"][()].reshape(3, 4), d) == 0 and rel(fh["label"][()].reshape(3), lab) == 0
    with pytest.raises(NetError, match="one batch per file"):
        net.forward()
    # what HDF5Output wrote, HDF5Data reads back
    (tmp_path / "list.txt").write_text(str(out))
    back = net_from(hdf5_net(tmp_path / "list.txt", 3))
    back.forward()
    assert rel(back.blobs["data"].data.reshape(3, 4), d) == 0


def test_hdf5_output_checks(tmp_path):
    text = input_layer({"d": (3, 4), "l": (2,)}) + (
        f'layer {{ name: "w" type: "HDF5Output" bottom: "d" bottom: "l" '
        f'hdf5_output_param {{ file_name: "{tmp_path / "o.h5"}" }} }}\n'
    )
    with pytest.raises(NetError, match="same batch size"):
        net_from(text).forward()
    with pytest.raises(NetError, match="takes 2 bottoms"):
        net_from(text.replace(' bottom: "l"', ""))


# ---------------------------------------------------------------- MemoryData
MEMORY = 'layer { name: "m" type: "MemoryData" top: "data" top: "label" memory_data_param { %s } }\n'


def test_memory_data_serves_batches_and_wraps():
    net = net_from(MEMORY % "batch_size: 2 channels: 1 height: 2 width: 3")
    assert net.blobs["data"].shape == (2, 1, 2, 3) and net.blobs["label"].shape == (2,)
    layer = net.layers[0]
    with pytest.raises(NetError, match="reset"):
        net.forward()
    data = RNG.normal(size=(6, 1, 2, 3)).astype(np.float32)
    labels = np.arange(6, dtype=np.float32)
    layer.reset(data, labels)
    seen = []
    for _ in range(4):
        net.forward()
        seen += net.blobs["label"].data.tolist()
        assert rel(net.blobs["data"].data, data[[int(v) for v in net.blobs["label"].data]]) == 0
    assert seen == [0, 1, 2, 3, 4, 5, 0, 1]
    data[2:4] = 7.0  # the tops are views of the arrays handed over, as Caffe's set_cpu_data
    net.forward()
    assert np.all(net.blobs["data"].data == 7.0)
    with pytest.raises(DataError, match="multiple of batch size"):
        layer.reset(data[:5], labels[:5])
    with pytest.raises(DataError, match="labels for"):
        layer.reset(data, labels[:4])
    layer.set_batch_size(3)
    layer.reset(data, labels)
    net.reshape()
    net.forward()
    assert net.blobs["label"].data.tolist() == [0, 1, 2]


@pytest.mark.parametrize("p", ["batch_size: 2 channels: 1 height: 2", "channels: 1 height: 2 width: 2"])
def test_memory_data_needs_every_dimension(p):
    with pytest.raises(NetError, match="must be specified and positive"):
        net_from(MEMORY % p)


# ---------------------------------------------------------------- WindowData
def c_round(v) -> int:
    return int(math.copysign(math.floor(abs(float(v)) + 0.5), float(v)))


def caffe_window(img, box, crop, context_pad, square, mirror, scale, mean=None, mean_values=None):
    """window_data_layer.cpp load_batch for one window, in float32 as Caffe's Dtype."""
    f = np.float32
    x1, y1, x2, y2 = box
    out = np.zeros((img.shape[2], crop, crop), np.float32)
    size, pad_w, pad_h = (crop, crop), 0, 0
    if context_pad > 0 or square:
        cs = f(crop) / f(crop - 2 * context_pad)
        hh, hw = f((y2 - y1 + 1) / 2.0), f((x2 - x1 + 1) / 2.0)
        cx, cy = f(x1) + hw, f(y1) + hh
        if square:
            hh = hw = max(hh, hw)
        x1, x2, y1, y2 = (
            c_round(cx - hw * cs),
            c_round(cx + hw * cs),
            c_round(cy - hh * cs),
            c_round(cy + hh * cs),
        )
        uh, uw = y2 - y1 + 1, x2 - x1 + 1
        px1, py1, px2 = max(0, -x1), max(0, -y1), max(0, x2 - img.shape[1] + 1)
        py2 = max(0, y2 - img.shape[0] + 1)
        x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
        sx, sy = f(crop) / f(uw), f(crop) / f(uh)
        size = [c_round(f(x2 - x1 + 1) * sx), c_round(f(y2 - y1 + 1) * sy)]
        px1, px2, py1 = c_round(f(px1) * sx), c_round(f(px2) * sx), c_round(f(py1) * sy)
        pad_h, pad_w = py1, (px2 if mirror else px1)
        size = (min(size[0], crop - pad_w), min(size[1], crop - pad_h))
    warped = cv2.resize(img[y1 : y2 + 1, x1 : x2 + 1], size, interpolation=cv2.INTER_LINEAR)
    if mirror:
        warped = cv2.flip(warped, 1)
    off = (mean.shape[2] - crop) // 2 if mean is not None else 0
    for h in range(warped.shape[0]):
        for w in range(warped.shape[1]):
            for c in range(img.shape[2]):
                pixel = f(warped[h, w, c])
                if mean is not None:
                    pixel = pixel - mean[c, h + off + pad_h, w + off + pad_w]
                elif mean_values is not None:
                    pixel = pixel - f(mean_values[c])
                out[c, h + pad_h, w + pad_w] = pixel * f(scale)
    return out


@pytest.fixture
def window_file(tmp_path):
    sizes = [(40, 52), (33, 29), (60, 45)]
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(tmp_path / f"im{i}.png"), RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    windows = {
        0: [(3, 0.9, 2, 3, 30, 25), (0, 0.1, 0, 0, 51, 39), (2, 0.4, 5, 5, 20, 20)],  # fg, bg, dropped
        1: [(1, 0.7, 4, 2, 20, 30), (5, 0.05, 10, 1, 28, 12)],  # fg, bg (label forced to 0)
        2: [(2, 0.5, 0, 10, 44, 59), (0, 0.2, 30, 30, 44, 59)],  # fg at the threshold, bg
    }
    lines = []
    for i, (h, w) in enumerate(sizes):
        lines += [f"# {i}", f"im{i}.png", f"3 {h} {w}", str(len(windows[i]))]
        lines += [" ".join(str(v) for v in win) for win in windows[i]]
    path = tmp_path / "windows.txt"
    path.write_text("\n".join(lines) + "\n")
    fg = [(0, 3, (2, 3, 30, 25)), (1, 1, (4, 2, 20, 30)), (2, 2, (0, 10, 44, 59))]
    bg = [(0, 0, (0, 0, 51, 39)), (1, 0, (10, 1, 28, 12)), (2, 0, (30, 30, 44, 59))]
    return path, fg, bg


def window_net(path: Path, root: str, extra: str = "", transform: str = "crop_size: 16 mirror: true") -> str:
    return (
        f'layer {{ name: "w" type: "WindowData" top: "data" top: "label" '
        f'window_data_param {{ source: "{path}" '
        f'root_folder: "{root}" batch_size: 8 fg_fraction: 0.25 scale: 0.5 bg_threshold: 0.3 '
        f"{extra} }} "
        f"transform_param {{ {transform} }} }}\n"
    )


@pytest.mark.parametrize(
    "extra,transform,mean",
    [
        ("", "crop_size: 16 mirror: true", None),
        (
            "context_pad: 3",
            "crop_size: 16 mirror: true mean_value: 100 mean_value: 110 mean_value: 120",
            None,
        ),
        ('crop_mode: "square" cache_images: true', "crop_size: 16 mirror: true", None),
        ('context_pad: 2 crop_mode: "square"', "crop_size: 16", "file"),
    ],
)
def test_window_data_batches_match_caffe_windows(tmp_path, window_file, extra, transform, mean):
    path, fg, bg = window_file
    mean_arr = None
    if mean:
        mean_arr = RNG.uniform(0, 255, size=(3, 20, 20)).astype(np.float32)
        write_mean(mean_arr, tmp_path / "mean.binaryproto")
        transform += f' mean_file: "{tmp_path / "mean.binaryproto"}"'
    net = net_from(window_net(path, f"{path.parent}/", extra, transform), caffe_pb2.TRAIN, seed=5)
    assert net.blobs["data"].shape == (8, 3, 16, 16) and net.blobs["label"].shape == (8,)
    context = int(extra.split("context_pad: ")[1].split()[0]) if "context_pad" in extra else 0
    square = "square" in extra
    mirror_on = "mirror: true" in transform
    mvals = [100, 110, 120] if "mean_value" in transform else None
    images = [cv2.imread(str(path.parent / f"im{i}.png")) for i in range(3)]
    cands = {}
    for kind, pool in (("bg", bg), ("fg", fg)):
        for k, (img, label, box) in enumerate(pool):
            for m in (False, True) if mirror_on else (False,):
                cands[kind, k, m] = (
                    label,
                    caffe_window(images[img], box, 16, context, square, m, 0.5, mean_arr, mvals),
                )
    drawn = set()
    for _ in range(16):
        net.forward()
        for item in range(8):
            kind = "bg" if item < 6 else "fg"  # 8 - int(8 * 0.25) background windows first
            x, lab = net.blobs["data"].data[item], net.blobs["label"].data[item]
            hits = [
                key
                for key, (label, ref) in cands.items()
                if key[0] == kind and label == lab and rel(x, ref) == 0
            ]
            assert hits, (kind, item)
            drawn.update(hits)
    # in 96 background and 32 foreground draws every background window with both flips, and every
    # foreground window, came up
    assert {k for k in drawn if k[0] == "bg"} == {k for k in cands if k[0] == "bg"}
    assert {k[1] for k in drawn if k[0] == "fg"} == {0, 1, 2}
    net.close()


@pytest.mark.parametrize(
    "text,error,match",
    [
        ("# 0\nim0.png\n3 40 52\n1\n0 0.9 0 0 5 5\n", DataError, "label 0 <= 0"),
        ("# 0\nim0.png\n3 40 52\n1\n1 0.1 0 0 5 5\n", DataError, "no foreground windows"),
        ("", DataError, "empty"),
        ("% 0\nim0.png\n3 40 52\n0\n", DataError, "expected '#'"),
    ],
)
def test_window_data_file_checks(tmp_path, text, error, match):
    (tmp_path / "w.txt").write_text(text)
    with pytest.raises(error, match=match):
        net_from(window_net(tmp_path / "w.txt", ""), caffe_pb2.TRAIN)


def test_window_data_needs_crop_size(window_file):
    path, _, _ = window_file
    with pytest.raises(NetError, match="crop_size"):
        net_from(window_net(path, "", transform="mirror: true"))
