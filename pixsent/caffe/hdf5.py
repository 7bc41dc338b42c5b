"""Net parameters in HDF5, as Caffe's Net::ToHDF5 / CopyTrainedLayersFromHDF5 (pycaffe's save_hdf5 and
load_hdf5). h5py is imported when used.

Layout (net.cpp, Caffe 1.0): group ``/data`` holds one group per layer of the net, parameterless layers
included, each with float32 datasets ``"0"``, ``"1"``, ... of the parameter blobs' shapes; a parameter shared
from an earlier layer is written only by its owner; ``write_diff`` adds ``/diff`` with every parameter's
diff. Loading copies by layer name, ignores layers the net lacks, refuses a layer with more datasets than
parameters, a missing dataset for a parameter the layer owns, or a shape that differs.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from pixsent.errors import FormatError, NetError


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a dependency
        raise NetError("save_hdf5/load_hdf5 need h5py (pip install h5py)") from exc
    return h5py


def save_hdf5(net, filename: str | os.PathLike[str], write_diff: bool = False) -> None:
    """Write ``net``'s parameters (an engine Net) to ``filename`` (atomically)."""
    from pixsent.formats.atomic import atomic_path

    h5py = _h5py()
    seen: set[int] = set()
    with atomic_path(filename) as tmp, h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        diff = f.create_group("diff") if write_diff else None
        for name, layer in zip(net.layer_names, net.layers):
            group = data.create_group(name)
            dgroup = diff.create_group(name) if diff is not None else None
            for i, t in enumerate(layer.blobs):
                if id(t) not in seen:
                    seen.add(id(t))
                    group.create_dataset(str(i), data=t.detach().cpu().numpy().astype(np.float32))
                if dgroup is not None:
                    g = t.grad if t.grad is not None else torch.zeros_like(t)
                    dgroup.create_dataset(str(i), data=g.detach().cpu().numpy().astype(np.float32))


def load_hdf5(net, filename: str | os.PathLike[str]) -> None:
    """Copy parameters from ``filename`` into ``net`` (an engine Net) by layer name."""
    h5py = _h5py()
    if not os.path.isfile(filename):
        raise FormatError(f"{filename}: HDF5 weights file not found")
    owned = _owned(net)
    index = {n: i for i, n in enumerate(net.layer_names)}
    with h5py.File(filename, "r") as f, torch.no_grad():
        if "data" not in f:
            raise FormatError(f"{filename}: no /data group (not a Caffe HDF5 weights file)")
        for name, group in f["data"].items():
            i = index.get(name)
            if i is None:
                continue
            target = net.layers[i].blobs
            if len(group) > len(target):
                raise NetError(f"{filename}: incompatible number of blobs for layer {name!r}")
            for j, t in enumerate(target):
                if str(j) not in group:
                    if (i, j) in owned:
                        raise NetError(f"{filename}: incompatible number of blobs for layer {name!r}")
                    continue
                arr = np.asarray(group[str(j)], dtype=np.float32)
                if tuple(arr.shape) != tuple(t.shape):
                    raise NetError(
                        f"{filename}: cannot load param {j} of layer {name!r}: dimension mismatch, "
                        f"expected {tuple(t.shape)} got {tuple(arr.shape)}"
                    )
                t.copy_(torch.from_numpy(arr).to(t.device))


def _owned(net) -> set[tuple[int, int]]:
    """(layer, param) pairs that own their tensor (the first layer using it)."""
    seen: set[int] = set()
    out: set[tuple[int, int]] = set()
    for i, layer in enumerate(net.layers):
        for j, t in enumerate(layer.blobs):
            if id(t) not in seen:
                seen.add(id(t))
                out.add((i, j))
    return out
