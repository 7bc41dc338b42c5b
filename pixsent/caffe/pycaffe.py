"""pycaffe's Net, Blob and solver classes on top of pixsent's engine, with pycaffe's signatures.

Semantics follow BVLC python/caffe/pycaffe.py and _caffe.cpp (master 9b891540): ``forward`` copies
keyword inputs into the input blobs (batch size must match, no reshaping) and returns the output blobs'
arrays; ``forward_all`` pads the last batch with zeros and drops the padded rows; ``SGDSolver`` & co.
force their update type while ``get_solver`` takes it from the file.

Arrays are live, as in Caffe: ``a = net.blobs['conv1'].data`` (or an array ``forward`` returned) is a view
of the blob's memory that later passes overwrite in place, until the blob is reshaped. On the CPU it is a
view of the engine blob's pinned storage (``engine/blob.py``). With ``set_mode_gpu`` new nets and solvers
live on ``cuda:<set_device id>`` and ``.data``/``.diff`` are host mirrors: written to the device before each
forward, backward, solver step or save, and refreshed in place from it afterwards.

Also here, as pycaffe's _caffe.cpp has them: ``Timer``, ``log``/``init_log``, ``has_nccl``,
``solver_count``/``solver_rank``/``set_multiprocess``, ``Net.clear_param_diffs``, ``save_hdf5``/``load_hdf5``,
``set_input_arrays`` (MemoryData) and ``Solver.add_callback``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np

from pixsent.caffe.errors import NetRuntimeError, NetValueError
from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError

_logger = logging.getLogger(__name__)

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

# ----------------------------------------------------------------------------------------------------
# global mode (Caffe::mode, Caffe::SetDevice, Caffe::set_random_seed)


@dataclass
class Mode:
    """Process-wide settings the adapters read when they build a net or solver."""

    use_gpu: bool = False
    device_id: int = 0
    seed: int | None = None
    solver_count: int = 1
    solver_rank: int = 0
    multiprocess: bool = False
    #: set by ``init_log``: nets built from Python then log Caffe's set-up lines, as pycaffe does
    log_nets: bool = False

    def device(self) -> str:
        """torch device string for new nets: ``cuda:<id>`` in GPU mode when CUDA exists, else ``cpu``."""
        if not self.use_gpu:
            return "cpu"
        import torch

        if not torch.cuda.is_available():
            _logger.warning("set_mode_gpu: no CUDA device available, running on the CPU")
            return "cpu"
        return f"cuda:{self.device_id}"


MODE = Mode()


def set_mode_cpu() -> None:
    """Run new nets on the CPU."""
    MODE.use_gpu = False


def set_mode_gpu() -> None:
    """Run new nets on the GPU chosen by ``set_device`` (CPU with a warning where there is no CUDA)."""
    MODE.use_gpu = True


def set_device(device_id: int) -> None:
    """Select the CUDA device index used in GPU mode."""
    MODE.device_id = int(device_id)


def set_random_seed(seed: int) -> None:
    """Caffe::set_random_seed: this thread's Caffe generator (fillers, data transforms, Dropout) restarts
    from ``seed``; torch's and numpy's global generators are seeded too."""
    from pixsent.engine.context import set_random_seed as engine_seed

    MODE.seed = int(seed)
    engine_seed(int(seed))
    np.random.seed(int(seed) % 2**32)


def init_log(level: int = 0, stderr: bool = True) -> None:
    """pycaffe's glog set-up: lines of ``level`` (0 INFO .. 3 FATAL) and above go to stderr, and nets built
    from Python log Caffe's set-up lines (``Creating layer``, ``Top shape``, ...) from now on."""
    from pixsent.engine import glog

    glog.CONFIG.min_level = int(level)
    glog.CONFIG.to_stderr = bool(stderr)
    MODE.log_nets = True


def log(message: str) -> None:
    """One INFO line in glog's format (pycaffe's ``caffe.log``)."""
    from pixsent.engine import glog

    glog.info(str(message), "_caffe.cpp:88")


def has_nccl() -> bool:
    """False: pixsent's pycaffe has no NCCL bindings (``caffe train -gpu all`` trains data-parallel)."""
    return False


def solver_count() -> int:
    """Caffe::solver_count: how many solvers train together (1 unless set)."""
    return MODE.solver_count


def set_solver_count(count: int) -> None:
    """Caffe::set_solver_count (recorded; pixsent's pycaffe trains one solver per process)."""
    MODE.solver_count = int(count)


def solver_rank() -> int:
    """Caffe::solver_rank: this process's solver index."""
    return MODE.solver_rank


def set_solver_rank(rank: int) -> None:
    """Caffe::set_solver_rank (recorded)."""
    MODE.solver_rank = int(rank)


def set_multiprocess(value: bool) -> None:
    """Caffe::set_multiprocess (recorded)."""
    MODE.multiprocess = bool(value)


class Timer:
    """Caffe's Timer as pycaffe exposes it: ``start()``, ``stop()``, ``ms`` (stops a running timer first)."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._stop: float | None = None
        self._running = False

    def start(self) -> None:
        self._start = time.perf_counter()
        self._running = True

    def stop(self) -> None:
        if self._running:
            self._stop = time.perf_counter()
            self._running = False

    @property
    def ms(self) -> float:
        """Milliseconds from the last start to the last stop (0 before any start)."""
        if self._start is None:
            return 0.0
        self.stop()
        return (self._stop - self._start) * 1000.0


def layer_type_list() -> list[str]:
    """Registered layer type names (Caffe's LayerRegistry::LayerTypeList), sorted."""
    import pixsent.engine.layers  # noqa: F401  (fills the registry)
    from pixsent.engine.registry import LAYER_REGISTRY

    return sorted(LAYER_REGISTRY)


# ----------------------------------------------------------------------------------------------------
# Blobs


class Blob:
    """pycaffe's Blob: live ``data`` and ``diff`` numpy arrays the user may write into, shape helpers."""

    def __init__(self, owner: Net, resolve: Callable[[], Any], key: str) -> None:
        self._owner = owner
        self._resolve = resolve
        self._key = key

    def _host(self, field: str) -> np.ndarray:
        eb = self._resolve()
        if eb.device.type == "cpu":
            return eb.data if field == "data" else eb.diff
        return self._owner._mirror(self._key, field, eb)

    @property
    def data(self) -> np.ndarray:
        return self._host("data")

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self.data[...] = value

    @property
    def diff(self) -> np.ndarray:
        return self._host("diff")

    @diff.setter
    def diff(self, value: np.ndarray) -> None:
        self.diff[...] = value

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._resolve().shape)

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def _axis(self, i: int) -> int:
        """Caffe's LegacyShape: axis ``i`` when the blob has it, else 1 (2-D blobs are N x C x 1 x 1)."""
        shape = self.shape
        if len(shape) > 4:
            raise NetError(f"blob {self._key}: num/channels/height/width need at most 4 axes, has {shape}")
        return shape[i] if i < len(shape) else 1

    @property
    def num(self) -> int:
        return self._axis(0)

    @property
    def channels(self) -> int:
        return self._axis(1)

    @property
    def height(self) -> int:
        return self._axis(2)

    @property
    def width(self) -> int:
        return self._axis(3)

    def reshape(self, *shape: int) -> None:
        """Give the blob a new shape (as ``Blob::Reshape``); call ``net.reshape()`` to propagate it."""
        self._owner._flush()
        self._resolve().reshape(*(int(d) for d in shape))
        self._owner._refresh()

    def __repr__(self) -> str:
        return f"<Blob {self._key} {self.shape}>"


@dataclass
class LayerView:
    """pycaffe's Layer as seen from Python: its name, Caffe type and parameter blobs (a Python layer is
    seen as the user's own object instead, as in pycaffe)."""

    name: str
    type: str
    blobs: list[Blob]
    engine_layer: Any


# ----------------------------------------------------------------------------------------------------
# Net


def _phase_value(phase: Any) -> int:
    if phase in (TRAIN, TEST):
        return int(phase)
    if isinstance(phase, str) and phase.upper() in ("TRAIN", "TEST"):
        return TRAIN if phase.upper() == "TRAIN" else TEST
    raise TypeError(f"phase must be caffe.TRAIN or caffe.TEST, got {phase!r}")


class Net:
    """pycaffe's Net. Constructors as pycaffe's:

    ``Net(prototxt, phase, level=0, stages=None, weights=None)`` and ``Net(prototxt, weights, phase)``.
    """

    def __init__(
        self,
        network_file: str | Path | caffe_pb2.NetParameter,
        *args: Any,
        phase: int | None = None,
        weights: str | Path | None = None,
        level: int = 0,
        stages: Sequence[str] | None = None,
    ) -> None:
        if len(args) == 2:
            weights, phase = args
        elif len(args) == 1:
            if isinstance(args[0], str | Path) and not isinstance(args[0], int):
                weights = args[0]
            else:
                phase = args[0]
        elif len(args) > 2:
            raise TypeError("Net(network_file, phase) or Net(network_file, weights, phase)")
        if phase is None:
            raise TypeError("Net(...) needs a phase: caffe.TRAIN or caffe.TEST")
        from pixsent.engine.net import Net as EngineNet

        model = str(network_file) if isinstance(network_file, Path) else network_file
        engine = EngineNet(
            model,
            _phase_value(phase),
            weights=str(weights) if weights is not None else None,
            stages=tuple(stages or ()),
            level=int(level),
            device=MODE.device(),
            log=MODE.log_nets,
        )
        # Caffe keeps every blob's diff; a TRAIN net built from Python does too (solver nets need not)
        engine.keep_blob_diffs = engine.phase == TRAIN
        self._attach(engine)

    @classmethod
    def _wrap(cls, engine: Any) -> Net:
        """An adapter around an engine net built elsewhere (a solver's train or test net)."""
        net = cls.__new__(cls)
        net._attach(engine)
        return net

    def _attach(self, engine: Any) -> None:
        self._net = engine
        self._mirrors: dict[tuple[str, str], tuple[Any, np.ndarray]] = {}
        self._blob_views: dict[str, Blob] = {}
        self._param_views: dict[str, list[Blob]] = {}

    # -- host mirrors (device blobs only) ----------------------------------------------------------

    @staticmethod
    def _storage(engine_blob: Any, field: str) -> Any:
        return engine_blob.live() if field == "data" else engine_blob.live_diff()

    def _mirror(self, key: str, field: str, engine_blob: Any) -> np.ndarray:
        hit = self._mirrors.get((key, field))
        if hit is not None and hit[0] is engine_blob and hit[1].shape == tuple(engine_blob.shape):
            return hit[1]
        host = self._storage(engine_blob, field).detach().cpu().numpy().copy()
        self._mirrors[(key, field)] = (engine_blob, host)
        return host

    def _flush(self) -> None:
        """Write every host mirror handed out into its blob's device storage."""
        if not self._mirrors:
            return
        import torch

        with torch.no_grad():
            for (_key, field), (eb, host) in self._mirrors.items():
                if host.shape == tuple(eb.shape):
                    storage = self._storage(eb, field)
                    storage.copy_(torch.from_numpy(np.ascontiguousarray(host)).to(storage.dtype))

    def _refresh(self) -> None:
        """Copy the device values back into the host mirrors in place (held arrays stay live); mirrors of
        reshaped blobs are dropped (their arrays go stale, as in Caffe)."""
        for k, (eb, host) in list(self._mirrors.items()):
            if host.shape != tuple(eb.shape):
                del self._mirrors[k]
                continue
            host[...] = self._storage(eb, k[1]).detach().cpu().numpy()

    # -- structure --------------------------------------------------------------------------------

    @property
    def engine(self) -> Any:
        """The underlying ``pixsent.engine.net.Net``."""
        return self._net

    @property
    def blobs(self) -> OrderedDict[str, Blob]:
        """Every blob by name, input to output (in-place layers keep one blob)."""
        out: OrderedDict[str, Blob] = OrderedDict()
        for name in self._net.blobs:
            view = self._blob_views.get(name)
            if view is None:
                view = Blob(self, lambda n=name: self._net.blobs[n], name)
                self._blob_views[name] = view
            out[name] = view
        return out

    @property
    def params(self) -> OrderedDict[str, list[Blob]]:
        """Parameter blobs by layer name (weights, bias), layers without parameters left out."""
        out: OrderedDict[str, list[Blob]] = OrderedDict()
        for layer, blobs in self._net.params.items():
            if not blobs:
                continue
            views = self._param_views.get(layer)
            if views is None or len(views) != len(blobs):
                views = [
                    Blob(self, lambda n=layer, i=i: self._net.params[n][i], f"{layer}/{i}")
                    for i in range(len(blobs))
                ]
                self._param_views[layer] = views
            out[layer] = views
        return out

    @property
    def _layer_names(self) -> list[str]:
        return list(self._net.layer_names)

    @property
    def _blob_names(self) -> list[str]:
        return list(self._net.blobs)

    @property
    def layers(self) -> list[Any]:
        params = self.params
        return [
            getattr(layer, "user_layer", None)
            or LayerView(name, _layer_type(layer), params.get(name, []), layer)
            for name, layer in zip(self._net.layer_names, self._net.layers)
        ]

    @property
    def layer_dict(self) -> OrderedDict[str, LayerView]:
        return OrderedDict((lv.name, lv) for lv in self.layers)

    @property
    def inputs(self) -> list[str]:
        return list(self._net.inputs)

    @property
    def outputs(self) -> list[str]:
        return list(self._net.outputs)

    @property
    def top_names(self) -> OrderedDict[str, list[str]]:
        return OrderedDict((n, list(_layer_param(lyr).top)) for n, lyr in self._named_layers())

    @property
    def bottom_names(self) -> OrderedDict[str, list[str]]:
        return OrderedDict((n, list(_layer_param(lyr).bottom)) for n, lyr in self._named_layers())

    @property
    def blob_loss_weights(self) -> OrderedDict[str, float]:
        """Loss weight of every blob (Caffe: 1 for a loss layer's first top unless set, else 0)."""
        weights = dict.fromkeys(self._net.blobs, 0.0)
        weights.update(self._net.blob_loss_weights)
        return OrderedDict(weights)

    def _named_layers(self) -> Iterator[tuple[str, Any]]:
        return zip(self._net.layer_names, self._net.layers)

    # -- computation ------------------------------------------------------------------------------

    def _layer_index(self, name: str) -> int:
        try:
            return list(self._net.layer_names).index(name)
        except ValueError:
            raise NetValueError(f"no layer named {name!r} in the net") from None

    def forward(
        self, blobs: Sequence[str] | None = None, start: str | None = None, end: str | None = None, **kwargs
    ) -> dict[str, np.ndarray]:
        """Run layers ``start``..``end`` (inclusive); keyword arrays are copied into the input blobs first.

        Returns {blob: array} for the net outputs (or the tops of ``end``) plus ``blobs``.
        """
        blobs = list(blobs or [])
        if start is not None:
            self._layer_index(start)
        if end is not None:
            self._layer_index(end)
            outputs = set(self.top_names[end] + blobs)
        else:
            outputs = set(self.outputs + blobs)
        if kwargs:
            if set(kwargs) != set(self.inputs):
                raise Exception("Input blob arguments do not match net inputs.")
            for in_, arr in kwargs.items():
                blob = self.blobs[in_]
                if np.shape(arr)[0] != blob.shape[0]:
                    raise Exception("Input is not batch sized")
                blob.data[...] = arr
        self._flush()
        self._net.forward(start=start, end=end)
        self._refresh()
        return {out: self.blobs[out].data for out in outputs}

    def backward(
        self, diffs: Sequence[str] | None = None, start: str | None = None, end: str | None = None, **kwargs
    ) -> dict[str, np.ndarray]:
        """Back-propagate (from the loss, or from keyword diffs set on the outputs).

        Returns {blob: diff} for the net inputs (or the bottoms of ``end``) plus ``diffs``.
        """
        diffs = list(diffs or [])
        if end is not None:
            self._layer_index(end)
            outputs = set(self.bottom_names[end] + diffs)
        else:
            outputs = set(self.inputs + diffs)
        if start is not None:
            self._layer_index(start)
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise Exception("Top diff arguments do not match net outputs.")
            for top, diff in kwargs.items():
                if np.shape(diff)[0] != self.blobs[top].shape[0]:
                    raise Exception("Diff is not batch sized")
                self.blobs[top].diff[...] = np.asarray(diff, dtype=np.float32).reshape(self.blobs[top].shape)
        self._flush()
        self._net.backward(start=start, end=end)
        self._refresh()
        return {out: self.blobs[out].diff for out in outputs}

    def _batch(self, blobs: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Split arrays into batches of the net's batch size (first blob's num); zero-pad the last."""
        num = len(next(iter(blobs.values())))
        batch_size = next(iter(self.blobs.values())).shape[0]
        full, remainder = divmod(num, batch_size)
        for b in range(full):
            i = b * batch_size
            yield {name: blobs[name][i : i + batch_size] for name in blobs}
        if remainder > 0:
            padded = {}
            for name in blobs:
                arr = np.asarray(blobs[name])
                padding = np.zeros((batch_size - remainder,) + arr.shape[1:])
                padded[name] = np.concatenate([arr[-remainder:], padding])
            yield padded

    def forward_all(self, blobs: Sequence[str] | None = None, **kwargs) -> dict[str, np.ndarray]:
        """``forward`` over arrays of any length in batches; returns the stacked outputs (padding dropped).

        Scalar outputs (loss blobs), which pycaffe cannot stack, come back as one value per batch.
        """
        all_outs: dict[str, list[np.ndarray]] = {out: [] for out in set(self.outputs + list(blobs or []))}
        for batch in self._batch(kwargs):
            for out, arr in self.forward(blobs=blobs, **batch).items():
                all_outs[out].extend(arr.copy() if np.ndim(arr) else [np.array(arr, copy=True)])
        return _drop_padding(
            all_outs, len(next(iter(kwargs.values()))), next(iter(self.blobs.values())).shape[0]
        )

    def forward_backward_all(
        self, blobs: Sequence[str] | None = None, diffs: Sequence[str] | None = None, **kwargs
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``forward`` then ``backward`` per batch; inputs and output diffs come as keyword arrays."""
        all_outs: dict[str, list[np.ndarray]] = {out: [] for out in set(self.outputs + list(blobs or []))}
        all_diffs: dict[str, list[np.ndarray]] = {d: [] for d in set(self.inputs + list(diffs or []))}
        fwd = (
            self._batch({k: kwargs[k] for k in self.inputs if k in kwargs})
            if set(self.inputs) & set(kwargs)
            else ()
        )
        bwd = (
            self._batch({k: kwargs[k] for k in self.outputs if k in kwargs})
            if set(self.outputs) & set(kwargs)
            else ()
        )
        for fb, bb in zip_longest(fwd, bwd, fillvalue={}):
            for out, arr in self.forward(blobs=blobs, **fb).items():
                all_outs[out].extend(arr.copy() if np.ndim(arr) else [np.array(arr, copy=True)])
            for d, arr in self.backward(diffs=diffs, **bb).items():
                all_diffs[d].extend(arr.copy() if np.ndim(arr) else [np.array(arr, copy=True)])
        total = len(next(iter(kwargs.values())))
        batch = next(iter(self.blobs.values())).shape[0]
        return _drop_padding(all_outs, total, batch), _drop_padding(all_diffs, total, batch)

    def reshape(self) -> None:
        """Propagate input blob shapes through every layer (Caffe's Net::Reshape)."""
        self._flush()
        self._net.reshape()
        self._refresh()

    def clear_param_diffs(self) -> None:
        """Zero every learnable parameter's diff (Caffe's Net::ClearParamDiffs)."""
        self._flush()
        self._net.clear_param_diffs()
        self._refresh()

    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        """Hand arrays to the net's first layer, which must be MemoryData (pycaffe's checks and messages).

        ``data`` is N x C x H x W float32, C-contiguous, with the layer's C, H, W; ``labels`` has N values
        (a 1-D array is made N x 1 x 1 x 1); N must be a multiple of the layer's batch_size.
        """
        labels = np.asarray(labels)
        if labels.ndim == 1:
            labels = np.ascontiguousarray(labels[:, np.newaxis, np.newaxis, np.newaxis])
        first = self._net.layers[0] if self._net.layers else None
        if first is None or _layer_type(first) != "MemoryData":
            raise NetRuntimeError(
                "set_input_arrays may only be called if the first layer is a MemoryDataLayer"
            )
        p = _layer_param(first).memory_data_param
        _check_array(data, "data array", p.channels, p.height, p.width)
        _check_array(labels, "labels array", 1, 1, 1)
        if data.shape[0] != labels.shape[0]:
            raise NetRuntimeError("data and labels must have the same first dimension")
        if p.batch_size == 0 or data.shape[0] % p.batch_size != 0:
            raise NetRuntimeError("first dimensions of input arrays must be a multiple of batch size")
        first.reset(data, labels)

    # -- weights ----------------------------------------------------------------------------------

    def copy_from(self, weights: str | Path) -> None:
        """Copy parameters from a caffemodel by layer name (Caffe's CopyTrainedLayersFrom)."""
        self._flush()
        self._net.copy_trained_layers_from(str(weights))
        self._refresh()

    def share_with(self, other: Net) -> None:
        """Use ``other``'s parameter tensors (Caffe's ShareTrainedLayersWith)."""
        self._flush()
        other._flush()
        self._net.share_weights(other._net)

    def save(self, filename: str | Path) -> None:
        """Write the parameters as a caffemodel (atomically)."""
        self._flush()
        self._net.save(str(filename))

    def save_hdf5(self, filename: str | Path) -> None:
        """Write the parameters as Caffe's HDF5 weights (``/data/<layer>/<index>``)."""
        from pixsent.caffe.hdf5 import save_hdf5

        self._flush()
        save_hdf5(self._net, filename)

    def load_hdf5(self, filename: str | Path) -> None:
        """Copy parameters from Caffe HDF5 weights by layer name."""
        from pixsent.caffe.hdf5 import load_hdf5

        self._flush()
        load_hdf5(self._net, filename)
        self._refresh()

    def __repr__(self) -> str:
        return f"<pixsent.caffe.Net {len(self._net.layer_names)} layers, inputs {self.inputs}>"


def _drop_padding(collected: dict[str, list[np.ndarray]], total: int, batch: int) -> dict[str, np.ndarray]:
    """Stack per-sample rows and cut the zero rows ``_batch`` padded the last batch with."""
    n_batches = -(-total // batch)
    out = {}
    for name, rows in collected.items():
        arr = np.asarray(rows)
        out[name] = arr[:total] if len(arr) == n_batches * batch else arr
    return out


def _check_array(arr: Any, name: str, channels: int, height: int, width: int) -> None:
    """pycaffe's CheckContiguousArray: C-contiguous 4-D float32 with the given C, H, W."""
    if not isinstance(arr, np.ndarray) or not arr.flags["C_CONTIGUOUS"]:
        raise NetRuntimeError(f"{name} must be C contiguous")
    if arr.ndim != 4:
        raise NetRuntimeError(f"{name} must be 4-d")
    if arr.dtype != np.float32:
        raise NetRuntimeError(f"{name} must be float32")
    if arr.shape[1] != channels:
        raise NetRuntimeError(f"{name} has wrong number of channels")
    if arr.shape[2] != height:
        raise NetRuntimeError(f"{name} has wrong height")
    if arr.shape[3] != width:
        raise NetRuntimeError(f"{name} has wrong width")


def _layer_param(layer: Any) -> caffe_pb2.LayerParameter:
    for name in ("param", "layer_param", "lp"):
        lp = getattr(layer, name, None)
        if isinstance(lp, caffe_pb2.LayerParameter):
            return lp
    raise NetError(f"engine layer {layer!r} exposes no LayerParameter")


def _layer_type(layer: Any) -> str:
    try:
        return _layer_param(layer).type
    except NetError:
        return type(layer).__name__


# ----------------------------------------------------------------------------------------------------
# Solvers


class Solver:
    """pycaffe's solver: ``net``, ``test_nets``, ``iter``, ``step``, ``solve``, ``restore``, ``snapshot``.

    Built from a solver prototxt; relative paths inside it resolve against the working directory,
    as in Caffe. Subclasses force their update type the way pycaffe's SGDSolver & co. do.
    """

    solver_type: str | None = None

    def __init__(self, filename: str | Path | caffe_pb2.SolverParameter) -> None:
        from pixsent.engine.solvers import make_solver
        from pixsent.formats.prototxt import read_solver

        if isinstance(filename, caffe_pb2.SolverParameter):
            param = caffe_pb2.SolverParameter()
            param.CopyFrom(filename)
        else:
            param = read_solver(filename)
        if self.solver_type is not None:
            param.type = self.solver_type
            param.ClearField("solver_type")
        self._solver = make_solver(param, device=MODE.device())
        self._net_view: Net | None = None
        self._test_views: list[Net] = []

    @property
    def param(self) -> caffe_pb2.SolverParameter:
        return self._solver.param

    @property
    def net(self) -> Net:
        if self._net_view is None or self._net_view._net is not self._solver.net:
            self._net_view = Net._wrap(self._solver.net)
        return self._net_view

    @property
    def test_nets(self) -> list[Net]:
        engines = list(self._solver.test_nets)
        if [v._net for v in self._test_views] != engines:
            self._test_views = [Net._wrap(e) for e in engines]
        return self._test_views

    @property
    def iter(self) -> int:
        return int(self._solver.iter)

    def _flush(self) -> None:
        for view in [self._net_view, *self._test_views]:
            if view is not None:
                view._flush()

    def _refresh(self) -> None:
        for view in [self._net_view, *self._test_views]:
            if view is not None:
                view._refresh()

    def add_callback(self, on_start: Callable[[], Any], on_gradients_ready: Callable[[], Any]) -> None:
        """Call ``on_start()`` before each iteration's forward/backward passes and ``on_gradients_ready()``
        after them, before the update (Caffe's Solver::Callback)."""
        self._solver.hooks.on_start.append(lambda _solver: on_start())
        self._solver.hooks.on_gradients_ready.append(lambda _solver: on_gradients_ready())

    def step(self, iters: int) -> None:
        """Run ``iters`` training iterations (with tests and snapshots as the solver prototxt says)."""
        self._flush()
        self._solver.step(int(iters))
        self._refresh()

    def solve(self, resume_file: str | Path | None = None) -> None:
        """Train to max_iter, first restoring ``resume_file`` (a .solverstate) when given."""
        self._flush()
        if resume_file is not None:
            self._solver.restore(str(resume_file))
        self._solver.solve()
        self._refresh()

    def restore(self, state_file: str | Path) -> None:
        """Load iter, history and weights from a .solverstate."""
        self._flush()
        self._solver.restore(str(state_file))
        self._refresh()

    def snapshot(self) -> None:
        """Write ``<prefix>_iter_N.caffemodel`` and ``.solverstate`` now."""
        self._flush()
        self._solver.snapshot()

    def apply_update(self) -> None:
        """One update from the current parameter diffs (Caffe's ApplyUpdate; ``iter`` is not advanced)."""
        self._flush()
        self._solver.apply_update()
        self._refresh()

    def share_weights(self, net: Net) -> None:
        """Make ``net`` use the train net's parameters."""
        net.share_with(self.net)


class SGDSolver(Solver):
    """Stochastic gradient descent with momentum, whatever ``type`` the prototxt names."""

    solver_type = "SGD"


class NesterovSolver(Solver):
    """Nesterov's accelerated gradient."""

    solver_type = "Nesterov"


class AdaGradSolver(Solver):
    """AdaGrad."""

    solver_type = "AdaGrad"


class RMSPropSolver(Solver):
    """RMSProp."""

    solver_type = "RMSProp"


class AdaDeltaSolver(Solver):
    """AdaDelta."""

    solver_type = "AdaDelta"


class AdamSolver(Solver):
    """Adam."""

    solver_type = "Adam"


def get_solver(filename: str | Path) -> Solver:
    """A solver of the type named in the prototxt (``type``, or the legacy ``solver_type``)."""
    return Solver(filename)
