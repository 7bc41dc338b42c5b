"""pycaffe's Net, Blob and solver classes on top of pixsent's engine, with pycaffe's signatures.

Semantics follow BVLC python/caffe/pycaffe.py and _caffe.cpp (master 9b891540): ``forward`` copies
keyword inputs into the input blobs (batch size must match, no reshaping) and returns the output blobs'
arrays; ``forward_all`` pads the last batch with zeros and drops the padded rows; ``SGDSolver`` & co.
force their update type while ``get_solver`` takes it from the file.

Device: ``set_mode_gpu`` makes new nets and solvers live on ``cuda:<set_device id>``. There a blob's
``.data``/``.diff`` is a host mirror: copied from the device on first access, written back to the
device before the next forward, backward, solver step or save (so ``blob.data[...] = x`` works as on
the CPU), and dropped after it. On the CPU ``.data`` is a view of the tensor itself.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError

log = logging.getLogger(__name__)

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

    def device(self) -> str:
        """torch device string for new nets: ``cuda:<id>`` in GPU mode when CUDA exists, else ``cpu``."""
        if not self.use_gpu:
            return "cpu"
        import torch

        if not torch.cuda.is_available():
            log.warning("set_mode_gpu: no CUDA device available, running on the CPU")
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


def init_log(*_args: Any, **_kwargs: Any) -> None:
    """pycaffe's glog initialisation; logging goes through Python's ``logging`` here, so nothing to do."""


def layer_type_list() -> list[str]:
    """Registered layer type names (Caffe's LayerRegistry::LayerTypeList), sorted."""
    import pixsent.engine.layers  # noqa: F401  (fills the registry)
    from pixsent.engine.registry import LAYER_REGISTRY

    return sorted(LAYER_REGISTRY)


# ----------------------------------------------------------------------------------------------------
# Blobs


def _tensor_of(engine_blob: Any, field: str) -> Any:
    """The torch tensor behind an engine blob's data or diff (None when it exposes none)."""
    names = ("tensor", "value", "_tensor") if field == "data" else ("grad_tensor", "diff_tensor", "_diff")
    for name in names:
        t = getattr(engine_blob, name, None)
        if t is not None and hasattr(t, "device"):
            return t
    return None


class Blob:
    """pycaffe's Blob: ``data`` and ``diff`` numpy arrays the user may write into, shape helpers."""

    def __init__(self, owner: Net, resolve: Callable[[], Any], key: str) -> None:
        self._owner = owner
        self._resolve = resolve
        self._key = key

    def _host(self, field: str) -> np.ndarray:
        eb = self._resolve()
        t = _tensor_of(eb, field)
        if t is None or t.device.type == "cpu":
            return getattr(eb, field)
        return self._owner._mirror(self._key, field, t)

    @property
    def data(self) -> np.ndarray:
        return self._host("data")

    @property
    def diff(self) -> np.ndarray:
        return self._host("diff")

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

    def __repr__(self) -> str:
        return f"<Blob {self._key} {self.shape}>"


@dataclass
class LayerView:
    """pycaffe's Layer as seen from Python: its name, Caffe type and parameter blobs."""

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
        )
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

    # -- host mirrors (device tensors only) --------------------------------------------------------

    def _mirror(self, key: str, field: str, tensor: Any) -> np.ndarray:
        hit = self._mirrors.get((key, field))
        if hit is not None and hit[0] is tensor:
            return hit[1]
        host = tensor.detach().cpu().numpy().copy()
        self._mirrors[(key, field)] = (tensor, host)
        return host

    def _flush(self) -> None:
        """Write every host mirror handed out back to its device tensor, then forget them."""
        if not self._mirrors:
            return
        import torch

        with torch.no_grad():
            for tensor, host in self._mirrors.values():
                tensor.copy_(torch.from_numpy(np.ascontiguousarray(host)).to(tensor.dtype))
        self._mirrors.clear()

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
    def layers(self) -> list[LayerView]:
        params = self.params
        return [
            LayerView(name, _layer_type(layer), params.get(name, []), layer)
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
        for _, layer in self._named_layers():
            lp = _layer_param(layer)
            explicit = list(lp.loss_weight)
            is_loss = lp.type.endswith("Loss")
            for i, top in enumerate(lp.top):
                if i < len(explicit):
                    weights[top] = float(explicit[i])
                elif is_loss and i == 0:
                    weights[top] = 1.0
        return OrderedDict(weights)

    def _named_layers(self) -> Iterator[tuple[str, Any]]:
        return zip(self._net.layer_names, self._net.layers)

    # -- computation ------------------------------------------------------------------------------

    def _layer_index(self, name: str) -> int:
        try:
            return list(self._net.layer_names).index(name)
        except ValueError:
            raise NetError(f"no layer named {name!r} in the net") from None

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
        top_diffs: dict[str, np.ndarray] = {}
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise Exception("Top diff arguments do not match net outputs.")
            for top, diff in kwargs.items():
                if np.shape(diff)[0] != self.blobs[top].shape[0]:
                    raise Exception("Diff is not batch sized")
                top_diffs[top] = np.asarray(diff, dtype=np.float32).reshape(self.blobs[top].shape)
        self._flush()
        self._engine_backward(start, end, top_diffs)
        return {out: self.blobs[out].diff for out in outputs}

    def _engine_backward(self, start: str | None, end: str | None, top_diffs: dict[str, np.ndarray]) -> None:
        import inspect

        accepted = inspect.signature(self._net.backward).parameters
        kwargs: dict[str, Any] = {}
        for name, value in (("start", start), ("end", end), ("top_diffs", top_diffs or None)):
            if value is None:
                continue
            if name not in accepted:
                raise NetError(f"backward({name}=...) is not supported by this engine net")
            kwargs[name] = value
        self._net.backward(**kwargs)

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

    # -- weights ----------------------------------------------------------------------------------

    def copy_from(self, weights: str | Path) -> None:
        """Copy parameters from a caffemodel by layer name (Caffe's CopyTrainedLayersFrom)."""
        self._flush()
        self._net.copy_trained_layers_from(str(weights))

    def share_with(self, other: Net) -> None:
        """Use ``other``'s parameter tensors (Caffe's ShareTrainedLayersWith)."""
        self._flush()
        other._flush()
        self._net.share_weights(other._net)

    def save(self, filename: str | Path) -> None:
        """Write the parameters as a caffemodel (atomically)."""
        self._flush()
        self._net.save(str(filename))

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

    def step(self, iters: int) -> None:
        """Run ``iters`` training iterations (with tests and snapshots as the solver prototxt says)."""
        self._flush()
        self._solver.step(int(iters))

    def solve(self, resume_file: str | Path | None = None) -> None:
        """Train to max_iter, first restoring ``resume_file`` (a .solverstate) when given."""
        self._flush()
        if resume_file is not None:
            self._solver.restore(str(resume_file))
        self._solver.solve()

    def restore(self, state_file: str | Path) -> None:
        """Load iter, history and weights from a .solverstate."""
        self._flush()
        self._solver.restore(str(state_file))

    def snapshot(self) -> None:
        """Write ``<prefix>_iter_N.caffemodel`` and ``.solverstate`` now."""
        self._flush()
        self._solver.snapshot()

    def apply_update(self) -> None:
        """One update from the current parameter diffs (Caffe's ApplyUpdate; ``iter`` is not advanced)."""
        self._flush()
        self._solver.apply_update()

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
