"""HDF5 layers: HDF5Data reads batches from the HDF5 files a list names, HDF5Output writes its bottoms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.layers.guards import count_bottoms, count_tops
from pixsent.engine.registry import register_layer
from pixsent.errors import DataError, FormatError, NetError


def _h5py():
    """The h5py module (a dependency of the HDF5 layers only)."""
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is in requirements.txt
        raise NetError("the HDF5Data/HDF5Output layers need h5py (pip install h5py)") from None
    return h5py


def read_hdf5_datasets(path: str, names: list[str], layer: str) -> list[np.ndarray]:
    """The named datasets of one HDF5 file as float32 arrays of at least one axis, equal in axis 0."""
    h5py = _h5py()
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"layer {layer!r}: cannot open HDF5 file {path} ({exc})") from None
    with fh:
        out = []
        for name in names:
            ds = fh.get(name)
            if not isinstance(ds, h5py.Dataset):
                raise FormatError(f"{path}: no HDF5 dataset {name!r} (layer {layer!r} reads one per top)")
            if ds.ndim < 1:
                raise FormatError(f"{path}: dataset {name!r} needs at least 1 axis")
            if ds.dtype.kind not in "fiub":
                raise FormatError(
                    f"{path}: dataset {name!r} has type {ds.dtype}; Caffe reads floats/integers"
                )
            out.append(np.ascontiguousarray(ds[()], dtype=np.float32))
    rows = {a.shape[0] for a in out}
    if len(rows) != 1:
        raise FormatError(f"{path}: datasets {names} differ in their number of rows {sorted(rows)}")
    return out


@register_layer("HDF5Data")
class HDF5Data(Layer):
    """Batches of rows from HDF5 files (hdf5_data_layer.cpp): hdf5_data_param.source is a text file of
    HDF5 paths (whitespace-separated); each file holds one dataset per top, named like the top, all with
    the same number of rows. Top shape = the dataset's shape with batch_size rows. Rows are read in order,
    file after file, wrapping around. No transform_param (Caffe refuses one).

    With ``shuffle``, Caffe shuffles with std::random_shuffle (the C library's rand(), not its seeded RNG),
    in this order: the file order at set-up, the row order whenever a file is loaded, and when a file's
    rows run out: the file order again after the last file (only with several files), the next file's
    rows as it loads, then the row order once more. pixsent makes the same shuffles, in that order, from
    a generator seeded from the net's context RNG. With several data-parallel ranks the global batch is
    read and each rank keeps its slice, like pixsent's Data layer (Caffe lets every solver read its own
    batch_size rows, interleaved by its Skip()).
    """

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        if getattr(self, "_shapes", None) is not None:
            return list(self._shapes)
        count_bottoms(self.param, len(bottom_shapes), 0)
        if not self.param.top:
            raise NetError(f"layer {self.name!r}: HDF5Data needs at least one top (one dataset per top)")
        if self.param.HasField("transform_param"):
            raise NetError(f"layer {self.name!r}: HDF5Data does not transform data (remove transform_param)")
        p = self.param.hdf5_data_param
        self.batch = int(p.batch_size)
        if self.batch <= 0:
            raise NetError(f"layer {self.name!r}: hdf5_data_param.batch_size must be positive")
        try:
            listing = Path(p.source).read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(
                f"layer {self.name!r}: failed to open source file {p.source} ({exc.strerror})"
            ) from None
        self.files = listing.split()
        if not self.files:
            raise DataError(f"{p.source}: must have at least 1 HDF5 filename listed")
        self.shuffle = bool(p.shuffle)
        seed = int(torch.randint(0, 2**62, (1,), generator=self.ctx.generator).item())
        self.rng = np.random.default_rng(seed)
        self.file_order = np.arange(len(self.files))
        if self.shuffle:
            self.rng.shuffle(self.file_order)
        self.current_file = 0
        self._load(self.files[self.file_order[0]])
        self.current_row = 0
        world, rank = self.ctx.world_size, self.ctx.rank
        if self.batch % world:
            raise NetError(
                f"layer {self.name!r}: batch_size {self.batch} does not divide among {world} ranks"
            )
        self.lo, self.hi = rank * self.batch // world, (rank + 1) * self.batch // world
        self._shapes = [(self.hi - self.lo, *a.shape[1:]) for a in self.arrays]
        self.row_shapes = [a.shape[1:] for a in self.arrays]
        return list(self._shapes)

    def _load(self, path: str) -> None:
        """Read every top's dataset of one file and draw its row order (Caffe's LoadHDF5FileData)."""
        self.arrays = read_hdf5_datasets(path, list(self.param.top), self.name)
        shapes = getattr(self, "row_shapes", None)
        if shapes is not None and [a.shape[1:] for a in self.arrays] != shapes:
            raise FormatError(f"{path}: row shapes {[a.shape[1:] for a in self.arrays]} differ from {shapes}")
        self.row_order = np.arange(self.arrays[0].shape[0])
        if self.shuffle:
            self.rng.shuffle(self.row_order)

    def _next(self) -> None:
        """Advance one row; past a file's last row load the next file (Caffe's Next)."""
        self.current_row += 1
        if self.current_row < self.arrays[0].shape[0]:
            return
        if len(self.files) > 1:
            self.current_file += 1
            if self.current_file == len(self.files):
                self.current_file = 0
                if self.shuffle:
                    self.rng.shuffle(self.file_order)
            self._load(self.files[self.file_order[self.current_file]])
        self.current_row = 0
        if self.shuffle:
            self.rng.shuffle(self.row_order)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return list(self._shapes)

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        tops = [np.empty(s, dtype=np.float32) for s in self._shapes]
        for i in range(self.batch):
            row = self.row_order[self.current_row]
            if self.lo <= i < self.hi:
                for top, array in zip(tops, self.arrays):
                    top[i - self.lo] = array[row]
            self._next()
        return [torch.from_numpy(t).to(self.ctx.device) for t in tops]


@register_layer("HDF5Output")
class HDF5Output(Layer):
    """Writes its two bottoms to hdf5_output_param.file_name as float32 datasets "data" and "label"
    (hdf5_output_layer.cpp), each in Caffe's legacy N x C x H x W shape (2-axis blobs become N x C x 1 x 1).

    Caffe creates (truncates) the file when the net is built and writes the datasets on the first
    forward; a second forward fails there because the datasets exist, so pixsent refuses it too. The
    file is replaced atomically. No tops; the bottoms get no gradient.
    """

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        count_bottoms(self.param, len(bottom_shapes), 2)
        count_tops(self.param, 0)
        for s in bottom_shapes:
            if len(s) > 4:
                raise NetError(f"layer {self.name!r}: HDF5Output writes blobs of at most 4 axes, got {s}")
        if getattr(self, "path", None) is None:
            self.path = Path(self.param.hdf5_output_param.file_name)
            if not str(self.param.hdf5_output_param.file_name):
                raise NetError(f"layer {self.name!r}: hdf5_output_param.file_name must be given")
            self.written = False
            self._write({})
        return []

    def _write(self, datasets: dict[str, np.ndarray]) -> None:
        from pixsent.formats.atomic import atomic_path

        h5py = _h5py()
        with atomic_path(self.path) as tmp, h5py.File(tmp, "w") as fh:
            for name, array in datasets.items():
                fh.create_dataset(name, data=array)

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        data, label = (b.detach().cpu().numpy().astype(np.float32) for b in bottoms)
        data4 = data.reshape(tuple(data.shape) + (1,) * (4 - data.ndim))
        label4 = label.reshape(tuple(label.shape) + (1,) * (4 - label.ndim))
        if data4.shape[0] != label4.shape[0]:
            raise NetError(
                f"layer {self.name!r}: data blob and label blob must have the same batch size "
                f"({data4.shape[0]} vs {label4.shape[0]})"
            )
        if self.written:
            raise NetError(
                f"layer {self.name!r}: {self.path} already holds datasets 'data' and 'label'; Caffe's "
                f"HDF5Output writes one batch per file (a second forward fails in Caffe too)"
            )
        self._write({"data": data4, "label": label4})
        self.written = True
        return []
