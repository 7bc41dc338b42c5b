"""Net: a Caffe NetParameter executed with torch, with Caffe's blob/param bookkeeping (net.cpp).

Semantics kept from Caffe's Net: layers filtered by NetStateRules; Split layers inserted where a top
feeds several bottoms, with Caffe's names (``engine/splits.py``); in-place layers reuse their bottom's
blob name; the loss is the sum over tops of loss_weight * sum(top); net outputs are the blobs no later
layer consumes, listed in name order (Caffe keeps them in a std::set); parameters named in a ParamSpec
are shared by name, the first layer owning the tensor, and a sharer's lr_mult/decay_mult must agree with
the owner's when both are given; blobs keep their memory across passes (``engine/blob.py``); ``backward``
runs over any layer range, starting from the diffs held by the tops of its first layer, as
Net::BackwardFromTo. With ``log=True`` the set-up lines of Net::Init are logged (``setup_log.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

import pixsent.engine.layers  # noqa: F401  (fills the layer registry)
from pixsent.caffe.proto import caffe_pb2
from pixsent.engine import bn_fold
from pixsent.engine.blob import Blob
from pixsent.engine.context import NetContext
from pixsent.engine.fastpath import FAST
from pixsent.engine.filtering import filter_net
from pixsent.engine.heap import retain_freed_memory
from pixsent.engine.layers.base import Layer
from pixsent.engine.registry import create_layer
from pixsent.engine.setup_log import SetupLog, log_filtering, log_init
from pixsent.engine.splits import insert_splits
from pixsent.errors import NetError

ModelSource = str | os.PathLike[str] | caffe_pb2.NetParameter

#: sources whose position an exact resume does not save (they start over, as in Caffe)
_UNSAVED_SOURCES = frozenset({"WindowData", "HDF5Data", "MemoryData"})

#: layer types whose top is a new tensor that their backward does not need, so an in-place ReLU right
#: after them may overwrite it (Caffe's in-place ReLU overwrites the blob too)
_FRESH_OUTPUT_TYPES = frozenset({"Convolution", "Deconvolution", "InnerProduct", "Pooling", "LRN"})


def _load_net_param(model: ModelSource) -> caffe_pb2.NetParameter:
    """A private, upgraded copy of the net definition (prototxt path or NetParameter)."""
    from pixsent.formats.upgrade import upgrade_net

    if isinstance(model, caffe_pb2.NetParameter):
        param = caffe_pb2.NetParameter()
        param.CopyFrom(model)
        return upgrade_net(param, "<NetParameter>")
    from pixsent.formats.prototxt import read_net

    return read_net(model)


def _read_weights(source: str | os.PathLike[str]) -> list[tuple[caffe_pb2.NetParameter, str]]:
    """The caffemodels of a comma-separated list, parsed, with their paths."""
    from pixsent.formats.caffemodel import read_caffemodel

    paths = [p.strip() for p in str(source).split(",") if p.strip()]
    return [(read_caffemodel(p), p) for p in paths]


def _layer_names(src: caffe_pb2.NetParameter) -> list[str]:
    """Names of the layers of a caffemodel that carry blobs (new or V1 ``layers`` form)."""
    return [lp.name for lp in (src.layer or src.layers) if lp.blobs]


def _dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Net:
    """A Caffe network on torch; see docs/ARCHITECTURE.md "Engine interfaces" for the contract."""

    def __init__(
        self,
        model: ModelSource,
        phase: int,
        *,
        weights: str | os.PathLike[str] | None = None,
        stages: Iterable[str] = (),
        level: int = 0,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        log: bool = False,
        shared_layers: Iterable[str] = (),
    ) -> None:
        """``shared_layers``: layers whose parameters another net's replace right after set-up (a solver's
        test nets share the train net's): their fillers draw only for the random stream's sake, deferred
        like those a caffemodel overwrites, and their own tensors are never written (no memory)."""
        if FAST.keep_heap:
            retain_freed_memory()
        param = _load_net_param(model)
        param.state.phase = phase
        param.state.stage.extend(stages)
        param.state.level = level
        self.source = str(model) if not isinstance(model, caffe_pb2.NetParameter) else "<NetParameter>"
        if log:
            log_filtering(param)
        filtered = filter_net(param)
        if log:
            log_init(filtered)
        self.param = insert_splits(filtered)
        self._setup_log = SetupLog(enabled=log)
        self.name = self.param.name
        self.phase = phase
        r, w = _dist_rank_world()
        parsed = _read_weights(weights) if weights else []
        self.ctx = NetContext(
            device=torch.device(device),
            phase=phase,
            seed=seed,
            rank=r if rank is None else rank,
            world_size=w if world_size is None else world_size,
            overwritten_layers=frozenset(name for src, _ in parsed for name in _layer_names(src))
            | frozenset(shared_layers),
        )
        if self.ctx.device.type == "cuda":
            # Caffe computes in full float32: TF32 convolutions/matmuls would miss its numbers by ~1e-3
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.force_backward = bool(self.param.force_backward)
        self.keep_blob_diffs = False
        #: set by callers whose every backward is a whole pass right after a whole forward (the solver,
        #: ``caffe time``): then an in-place ReLU read only by a MAX pooling may leave its gradient mask to
        #: the pooling's backward (fastpath ``fold_relu_pool``); a backward over part of the net would miss it
        self.whole_passes = False
        self.layers: list[Layer] = []
        self.layer_names: list[str] = []
        self.blobs: dict[str, Blob] = {}
        self.bottom_names: list[list[str]] = []
        self.top_names: list[list[str]] = []
        self.inputs: list[str] = []
        self.blob_loss_weights: dict[str, float] = {}
        self._loss_tops: list[list[tuple[int, float]]] = []
        self._in_place: list[list[bool]] = []
        self._propagate: list[list[bool]] = []
        self._may_overwrite: list[bool] = []
        self._bottom_src: list[list[tuple[int, int] | None]] = []
        self._loss: torch.Tensor | None = None
        self._loss_terms: dict[int, torch.Tensor] = {}
        self._layer_tops: list[list[torch.Tensor] | None] = []
        self._graph = False
        self._graph_range: tuple[int, int] | None = None
        self._grad_sources: dict[str, torch.Tensor] = {}
        self._build()
        self._share_by_name()
        self._collect_params(set_requires_grad=True)
        if phase == caffe_pb2.TRAIN:
            self.clear_param_diffs()
        if parsed:
            self._copy_parsed(parsed, report=True)

    # -- construction -----------------------------------------------------------------------------
    def _build(self) -> None:
        available: list[str] = []
        writer: dict[str, str] = {}  # blob -> type of the layer that last wrote it
        latest: dict[str, tuple[int, int]] = {}  # blob -> (layer, top index) that last wrote it
        read_since_write: dict[str, bool] = {}
        for lp in self.param.layer:
            if not lp.HasField("phase"):
                lp.phase = self.phase
            if lp.name in self.layer_names:
                raise NetError(f"{self.source}: duplicate layer name {lp.name!r}")
            layer = create_layer(lp, self.ctx)
            bottoms = list(lp.bottom)
            for b in bottoms:
                if b not in self.blobs:
                    raise NetError(f"layer {lp.name!r}: unknown bottom blob {b!r}")
            if lp.propagate_down and len(lp.propagate_down) != len(bottoms):
                raise NetError(f"layer {lp.name!r}: propagate_down needs one value per bottom")
            shapes = layer.setup([self.blobs[b].shape for b in bottoms])
            tops = list(lp.top)
            if len(shapes) != len(tops):
                raise NetError(f"layer {lp.name!r}: {lp.type} makes {len(shapes)} tops, {len(tops)} named")
            if lp.loss_weight and len(lp.loss_weight) > len(tops):
                raise NetError(f"layer {lp.name!r}: {len(lp.loss_weight)} loss_weights for {len(tops)} tops")
            for b in bottoms:
                if b in available:
                    available.remove(b)
            in_place = []
            for top, shape in zip(tops, shapes):
                if top in bottoms:
                    self.blobs[top]._shape = tuple(shape)
                    in_place.append(True)
                elif top in self.blobs:
                    raise NetError(f"layer {lp.name!r}: top blob {top!r} produced by multiple sources")
                else:
                    self.blobs[top] = Blob(top, shape, device=self.ctx.device)
                    in_place.append(False)
                available.append(top)
            if layer.owns_tops:
                layer.top_blobs = [self.blobs[t] for t in tops]
                for t in tops:
                    self.blobs[t].owned = True
                if lp.type == "Input":
                    self.inputs.extend(tops)
            propagate = list(lp.propagate_down) or [True] * len(bottoms)
            lrs = [float(lp.param[k].lr_mult) if k < len(lp.param) else 1.0 for k in range(len(layer.blobs))]
            self._setup_log.layer(lp, shapes, in_place, list(lp.loss_weight), lrs, propagate)
            weights = [(i, float(w)) for i, w in enumerate(lp.loss_weight) if w != 0]
            for i, top in enumerate(tops):
                self.blob_loss_weights[top] = float(lp.loss_weight[i]) if i < len(lp.loss_weight) else 0.0
            self.layers.append(layer)
            self.layer_names.append(lp.name)
            self.bottom_names.append(bottoms)
            self.top_names.append(tops)
            self._loss_tops.append(weights)
            self._in_place.append(in_place)
            self._propagate.append(propagate)
            self._bottom_src.append([latest.get(b) for b in bottoms])
            self._layer_tops.append(None)
            self._may_overwrite.append(
                lp.type == "ReLU"
                and tops == bottoms
                and writer.get(bottoms[0]) in _FRESH_OUTPUT_TYPES
                and not read_since_write.get(bottoms[0], True)
            )
            for b in bottoms:
                read_since_write[b] = True
            for j, t in enumerate(tops):
                writer[t], read_since_write[t] = lp.type, False
                latest[t] = (len(self.layers) - 1, j)
        self.outputs = sorted(available)
        self._relu_pool = self._relu_pool_pairs()
        self._bn_chains = bn_fold.find_chains(self.layers, self.bottom_names, self.top_names)
        self.layer_need_backward = self._setup_log.finish(self._loss_tops, self.outputs)

    def _relu_pool_pairs(self) -> dict[int, int]:
        """ReLU layer -> the MAX pooling right after it that alone reads its in-place top (fold_relu_pool):
        the ReLU may overwrite a fresh tensor, has no negative slope, and no other layer reads the blob."""
        pairs: dict[int, int] = {}
        for i, layer in enumerate(self.layers[:-1]):
            if not self._may_overwrite[i] or layer.param.relu_param.negative_slope != 0:
                continue
            name = self.top_names[i][0]
            readers = [j for j in range(i + 1, len(self.layers)) if name in self.bottom_names[j]]
            nxt = self.layers[i + 1]
            if (
                readers == [i + 1]
                and nxt.type == "Pooling"
                and nxt.param.pooling_param.pool == caffe_pb2.PoolingParameter.MAX
                and len(self.top_names[i + 1]) == 1
                and self._propagate[i + 1] == [True]
            ):
                pairs[i] = i + 1
        return pairs

    def _share_by_name(self) -> None:
        """Replace parameters whose ParamSpec names an earlier owner by the owner's tensor."""
        owners: dict[str, tuple[torch.Tensor, str]] = {}
        for layer in self.layers:
            for i, spec in enumerate(layer.param.param[: len(layer.blobs)]):
                if not spec.name:
                    continue
                if spec.name not in owners:
                    owners[spec.name] = (layer.blobs[i], layer.name)
                    continue
                owner, owner_layer = owners[spec.name]
                mine = layer.blobs[i]
                strict = spec.share_mode != caffe_pb2.ParamSpec.PERMISSIVE
                if tuple(owner.shape) != tuple(mine.shape):
                    how = "strict" if strict else "permissive (count-only)"
                    raise NetError(
                        f"layer {layer.name!r}: shared param {spec.name!r} has shape {tuple(mine.shape)} but "
                        f"owner layer {owner_layer!r} has {tuple(owner.shape)} ({how})"
                    )
                layer.blobs[i] = owner

    def _collect_params(self, set_requires_grad: bool = False) -> None:
        """Build params / learnable_params / params_lr / params_weight_decay in Caffe's order."""
        self.params: dict[str, list[Blob]] = {}
        self.learnable_params: list[torch.Tensor] = []
        self.learnable_param_names: list[str] = []
        self.params_lr: list[float] = []
        self.params_weight_decay: list[float] = []
        seen: dict[int, int] = {}
        has_lr: list[bool] = []
        has_decay: list[bool] = []
        for layer in self.layers:
            if len(layer.param.param) > len(layer.blobs):  # net.cpp AppendParam's check
                raise NetError(
                    f"layer {layer.name!r}: too many params specified ({len(layer.param.param)} param "
                    f"entries for {len(layer.blobs)} blobs)"
                )
            if not layer.blobs:
                continue
            self.params[layer.name] = [
                Blob(f"{layer.name}/{i}", device=self.ctx.device, tensor=t, is_param=True)
                for i, t in enumerate(layer.blobs)
            ]
            for i, t in enumerate(layer.blobs):
                spec = layer.param.param[i] if i < len(layer.param.param) else caffe_pb2.ParamSpec()
                key = id(t)
                if key not in seen:
                    seen[key] = len(self.learnable_params)
                    self.learnable_params.append(t)
                    self.learnable_param_names.append(f"{layer.name}/{i}")
                    self.params_lr.append(float(spec.lr_mult))
                    self.params_weight_decay.append(float(spec.decay_mult))
                    has_lr.append(spec.HasField("lr_mult"))
                    has_decay.append(spec.HasField("decay_mult"))
                    continue
                j = seen[key]
                for field, values, flags in (
                    ("lr_mult", self.params_lr, has_lr),
                    ("decay_mult", self.params_weight_decay, has_decay),
                ):
                    if not spec.HasField(field):
                        continue
                    value = float(getattr(spec, field))
                    if flags[j] and values[j] != value:
                        raise NetError(
                            f"layer {layer.name!r}: shared param {spec.name!r} has mismatched {field} "
                            f"({value} vs {values[j]})"
                        )
                    values[j], flags[j] = value, True
        if set_requires_grad:
            for t, lr in zip(self.learnable_params, self.params_lr):
                t.requires_grad_(lr != 0)

    # -- running ----------------------------------------------------------------------------------
    def _index(self, name: str | None, default: int) -> int:
        if name is None:
            return default
        try:
            return self.layer_names.index(name)
        except ValueError:
            raise NetError(f"no layer named {name!r} in net {self.name!r}") from None

    @property
    def wants_blob_diffs(self) -> bool:
        """True when blob diffs are kept (force_backward or keep_blob_diffs)."""
        return self.force_backward or self.keep_blob_diffs

    def _grad_wanted(self) -> bool:
        return self.phase == caffe_pb2.TRAIN or self.wants_blob_diffs

    def forward(self, start: str | None = None, end: str | None = None) -> float:
        """Run layers start..end (inclusive, by name) and return the weighted loss of those layers."""
        return self._forward(
            self._index(start, 0), self._index(end, len(self.layers) - 1), self._grad_wanted()
        )

    def _forward(self, i0: int, i1: int, grad: bool, keep: bool | None = None) -> float:
        keep = self.wants_blob_diffs if keep is None else keep
        loss: torch.Tensor | None = None
        for i in range(i0, i1 + 1):
            self._loss_terms.pop(i, None)
            for name in self.top_names[i]:
                self._grad_sources.pop(name, None)
        written: dict[str, Blob] = {}
        blobs = self.blobs
        fold = (
            grad
            and not keep
            and self.whole_passes
            and FAST.fold_relu_pool
            and i0 == 0
            and i1 == len(self.layers) - 1
        )
        for i, j in self._relu_pool.items():
            self.layers[i].fold = self.layers[j].fold_relu = fold
        chains = self._bn_chains if FAST.fold_bn else {}
        skip_to = -1
        with torch.set_grad_enabled(grad):
            for i in range(i0, i1 + 1):
                if i <= skip_to:  # folded into the convolution before it
                    if grad:
                        self._layer_tops[i] = self._layer_tops[i - 1]
                    continue
                layer = self.layers[i]
                if self._may_overwrite[i]:
                    layer.inplace = not keep
                # a blob made earlier in this pass is read as the tensor the layer left; one made before it
                # from its pinned storage, which the user may have written since
                bottoms = [blobs[b].tensor if b in written else blobs[b].read() for b in self.bottom_names[i]]
                if grad:
                    bottoms = [b if p else b.detach() for b, p in zip(bottoms, self._propagate[i])]
                chain = chains.get(i)
                if chain is not None and bn_fold.applies(chain, i0, i1, grad, self.layer_need_backward):
                    tops = layer.forward_with(bottoms, *bn_fold.folded_weights(chain, self.layers))
                    skip_to = chain.last
                else:
                    tops = layer.forward(bottoms)
                if layer.owns_tops and grad and keep:
                    for t in tops:
                        if t.is_leaf:
                            t.requires_grad_(True)
                            t.grad = None
                for name, t, in_place in zip(self.top_names[i], tops, self._in_place[i]):
                    blob = blobs[name]
                    blob.tensor = t
                    written[name] = blob
                    if keep and grad and not in_place and t.requires_grad:
                        if not t.is_leaf:
                            t.retain_grad()
                        self._grad_sources[name] = t
                if grad:
                    self._layer_tops[i] = list(tops)
                for j, w in self._loss_tops[i]:
                    term = tops[j].sum() * w if w != 1 else tops[j].sum()
                    if grad:
                        prev = self._loss_terms.get(i)
                        self._loss_terms[i] = term if prev is None else prev + term
                    loss = term if loss is None else loss + term
        for blob in written.values():
            blob.sync_live()
        self._loss = loss if grad else None
        if grad:
            prev = self._graph_range if self._graph else None
            joined = prev is not None and prev[0] <= i0 <= prev[1] + 1
            self._graph_range = (prev[0], i1) if joined and prev is not None else (i0, i1)
        else:
            self._graph_range = None
        self._graph = grad
        return float(loss.detach()) if loss is not None else 0.0

    def backward(
        self,
        start: str | None = None,
        end: str | None = None,
        top_diffs: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Back-propagate through layers ``start`` down to ``end`` (inclusive, by name; default all), as
        Caffe's BackwardFromTo: loss tops in the range seed their loss weight, and every other top of a
        range layer that no later range layer reads seeds the diff its blob holds (``top_diffs`` are first
        written into the named blobs' diffs). Parameter gradients accumulate into ``.grad`` like Caffe's
        param diffs; layers below ``end`` get nothing."""
        i_start = self._index(start, len(self.layers) - 1)
        i_end = self._index(end, 0)
        if i_end > i_start:
            raise NetError(f"backward: layer {end!r} comes after {start!r}; start must be the upper layer")
        for name, diff in (top_diffs or {}).items():
            blob = self.blobs[name]
            arr = np.asarray(diff, dtype=np.float32).reshape(blob.shape)
            blob.live_diff().copy_(torch.as_tensor(arr))
        covered = self._graph_range
        if not self._graph or covered is None or covered[0] > i_end or covered[1] < i_start:
            # the last forward kept no graph over this range (TEST phase): run it again with one
            self._forward(0, i_start, True, keep=True)
        roots, grads = self._seeds(i_end, i_start)
        inputs = None if i_end == 0 else self._cut_inputs(i_end, i_start)
        whole = i_end == 0 and i_start == len(self.layers) - 1
        if roots and (inputs is None or inputs):
            # a partial pass keeps the graph: the next range (Caffe scripts walk down in steps) needs it
            torch.autograd.backward(roots, grads, inputs=inputs, retain_graph=not whole)
        for name, src in self._grad_sources.items():
            if not self._in_range(name, i_end, i_start):
                continue
            g = src.grad
            self.blobs[name].grad_tensor = g if g is not None else torch.zeros_like(src)
            src.grad = None
        if whole:  # the graph is spent: drop what pointed into it
            self._loss = None
            self._graph = False
            self._loss_terms = {}
            self._layer_tops = [None] * len(self.layers)

    def _seeds(self, i_end: int, i_start: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Roots of a backward over layers i_end..i_start: loss terms, and tops read by no later range layer
        whose blobs hold a diff."""
        read: set[tuple[int, int]] = set()
        for k in range(i_end, i_start + 1):
            read.update(src for src in self._bottom_src[k] if src is not None)
        roots: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        for i in range(i_end, i_start + 1):
            term = self._loss_terms.get(i)
            if term is not None and term.requires_grad:
                roots.append(term)
                grads.append(torch.ones_like(term))
            tops = self._layer_tops[i]
            if tops is None:
                continue
            weighted = {j for j, _ in self._loss_tops[i]}
            for j, (name, t) in enumerate(zip(self.top_names[i], tops)):
                if j in weighted or (i, j) in read or not t.requires_grad:
                    continue
                blob = self.blobs[name]
                if blob.has_diff:
                    roots.append(t)
                    grads.append(blob.grad_tensor.detach().reshape(t.shape).to(t.device))
        return roots, grads

    def _cut_inputs(self, i_end: int, i_start: int) -> list[torch.Tensor]:
        """What a partial backward stops at: range layers' learnable parameters and the tensors range
        layers read from below the range."""
        out: dict[int, torch.Tensor] = {}
        for i in range(i_end, i_start + 1):
            for p in self.layers[i].blobs:
                if p.requires_grad:
                    out[id(p)] = p
            for src in self._bottom_src[i]:
                if src is None or src[0] >= i_end:
                    continue
                tops = self._layer_tops[src[0]]
                if tops is not None and tops[src[1]].requires_grad:
                    out[id(tops[src[1]])] = tops[src[1]]
        return list(out.values())

    def _in_range(self, blob: str, i_end: int, i_start: int) -> bool:
        """Whether a backward over i_end..i_start writes this blob's diff (a range layer reads or makes
        it)."""
        return any(
            blob in self.top_names[i] or blob in self.bottom_names[i] for i in range(i_end, i_start + 1)
        )

    def forward_backward(self) -> float:
        """One forward and backward pass; returns the loss (Caffe's ForwardBackward)."""
        loss = self.forward()
        self.backward()
        return loss

    def clear_param_diffs(self) -> None:
        """Zero every learnable parameter's gradient (Caffe's ClearParamDiffs)."""
        for t in self.learnable_params:
            if t.grad is None:
                t.grad = torch.zeros_like(t)
            else:
                t.grad.zero_()

    def reshape(self) -> None:
        """Propagate input blob shapes through every layer (Caffe's Net::Reshape)."""
        for layer, bottoms, tops in zip(self.layers, self.bottom_names, self.top_names):
            shapes = layer.reshape([self.blobs[b].shape for b in bottoms])
            for name, shape in zip(tops, shapes):
                blob = self.blobs[name]
                if tuple(shape) != blob.shape:
                    if layer.owns_tops:
                        blob.reshape(*shape)
                    else:
                        blob._unpin()
                        blob._shape = tuple(shape)
                        blob._tensor = None
                        blob._diff = None

    def output_values(self) -> dict[str, float | np.ndarray]:
        """Output blob values for logging: floats for one-value blobs, arrays otherwise."""
        out: dict[str, float | np.ndarray] = {}
        for name in self.outputs:
            arr = self.blobs[name].value().detach().cpu().numpy()
            out[name] = float(arr.reshape(-1)[0]) if arr.size == 1 else arr.copy()
        return out

    # -- weights ----------------------------------------------------------------------------------
    def copy_trained_layers_from(
        self, source: ModelSource, origin: str = "<NetParameter>", *, report: bool = True
    ) -> set[str]:
        """Caffe's CopyTrainedLayersFrom: blobs copied by layer name; absent layers ignored; a blob count
        or shape mismatch raises NetError naming the layer and both shapes. A comma-separated string
        names several caffemodels, applied in order; ``origin`` names a parsed message in errors.
        Returns the layers copied; with ``report``, logs those with parameters left out (engine.coverage)."""
        if isinstance(source, caffe_pb2.NetParameter):
            return self._copy_parsed([(source, origin)], report)
        return self._copy_parsed(_read_weights(source), report)

    def _copy_parsed(self, parsed: list[tuple[caffe_pb2.NetParameter, str]], report: bool) -> set[str]:
        """Copy parsed caffemodels (message, origin) in order; with ``report`` log the layers left out."""
        from pixsent.engine.coverage import log_uncovered

        covered = set().union(*(self._copy_from_param(src, origin) for src, origin in parsed))
        if report:
            log_uncovered(self, covered, ", ".join(origin for _, origin in parsed))
        return covered

    def _copy_from_param(self, src: caffe_pb2.NetParameter, origin: str) -> set[str]:
        from pixsent.formats.blob import blob_shape, blob_to_array, legacy_shape_equals

        if src.layers and not src.layer:
            from pixsent.formats.upgrade import upgrade_net

            copy = caffe_pb2.NetParameter()
            copy.CopyFrom(src)
            src = upgrade_net(copy, origin)
        index = {n: i for i, n in enumerate(self.layer_names)}
        covered: set[str] = set()
        with torch.no_grad():
            for sl in src.layer:
                i = index.get(sl.name)
                if i is None:
                    continue
                target = self.layers[i].blobs
                if len(target) != len(sl.blobs):
                    raise NetError(
                        f"{origin}: layer {sl.name!r} has {len(sl.blobs)} blobs, "
                        f"the net's layer has {len(target)}"
                    )
                for j, (t, b) in enumerate(zip(target, sl.blobs)):
                    shape = tuple(t.shape)
                    if blob_shape(b) != shape and not legacy_shape_equals(b, shape):
                        raise NetError(
                            f"{origin}: cannot copy param {j} of layer {sl.name!r}: source shape "
                            f"{blob_shape(b)} does not match target shape {shape}"
                        )
                    arr = blob_to_array(b, source=origin).reshape(shape)
                    t.copy_(torch.as_tensor(arr).to(t.device))  # (ascontiguousarray makes 0-d 1-d)
                covered.add(sl.name)
        return covered

    def share_weights(self, other: Net) -> None:
        """Use ``other``'s parameter tensors for layers of the same name (Caffe's ShareTrainedLayersWith)."""
        theirs = dict(zip(other.layer_names, other.layers))
        for layer in self.layers:
            src = theirs.get(layer.name)
            if src is None or not src.blobs:
                continue
            if len(src.blobs) != len(layer.blobs):
                raise NetError(
                    f"layer {layer.name!r}: {len(src.blobs)} shared blobs for a layer with {len(layer.blobs)}"
                )
            for j, (mine, t) in enumerate(zip(layer.blobs, src.blobs)):
                if tuple(mine.shape) != tuple(t.shape):
                    raise NetError(
                        f"layer {layer.name!r}: cannot share param {j}: "
                        f"shape {tuple(t.shape)} vs {tuple(mine.shape)}"
                    )
            layer.blobs[:] = list(src.blobs)
        self._collect_params()

    def to_proto(self, write_diff: bool = False) -> caffe_pb2.NetParameter:
        """Caffe's Net::ToProto: the net name and every layer's parameter with its blobs in ``shape`` form."""
        from pixsent.formats.blob import array_to_blob

        out = caffe_pb2.NetParameter(name=self.name)
        for layer in self.layers:
            lp = out.layer.add()
            lp.CopyFrom(layer.param)
            del lp.blobs[:]
            for t in layer.blobs:
                data = t.detach().cpu().numpy()
                diff = None
                if write_diff:
                    g = t.grad
                    diff = g.detach().cpu().numpy() if g is not None else np.zeros_like(data)
                lp.blobs.append(array_to_blob(data, diff=diff))
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the weights as a binary caffemodel (atomically)."""
        from pixsent.formats.caffemodel import write_caffemodel

        return write_caffemodel(self.to_proto(), path)

    # -- random state (exact resume) -------------------------------------------------------------
    def rng_state(self) -> dict:
        """Where the net's data layers and own generator stand (see engine/layers/data.py): what a resumed
        run needs besides weights and solver history to continue exactly. ``restarting`` names the
        sources whose position is not saved (they start over on resume, as everything does in Caffe)."""
        layers = {name: layer.rng_state() for name, layer in self._rng_layers().items()}
        own = self.ctx.own_rng
        restarting = [n for n, layer in zip(self.layer_names, self.layers) if layer.type in _UNSAVED_SOURCES]
        return {
            "layers": layers,
            "own_rng": own.get_state() if own is not None else None,
            "restarting": restarting,
        }

    def _rng_layers(self) -> dict[str, Layer]:
        return {n: layer for n, layer in zip(self.layer_names, self.layers) if hasattr(layer, "rng_state")}

    def rng_state_mismatch(self, state: dict) -> str:
        """Why ``state`` (an ``rng_state()``) cannot be restored into this net; "" when it can."""
        mine, saved = self._rng_layers(), state["layers"]
        if set(mine) != set(saved):
            return f"saved data layers {sorted(saved)}, the net has {sorted(mine)}"
        for name, layer in mine.items():
            reason = layer.rng_state_mismatch(saved[name])
            if reason:
                return f"layer {name!r}: {reason}"
        if (state["own_rng"] is None) != (self.ctx.own_rng is None):
            return "saved state and net disagree on a generator of the net's own"
        return ""

    def restore_rng_state(self, state: dict) -> None:
        """Continue from an ``rng_state()`` of a net with the same data layers (NetError naming what
        differs, before anything is changed)."""
        reason = self.rng_state_mismatch(state)
        if reason:
            raise NetError(f"net {self.name!r}: {reason}")
        for name, layer in self._rng_layers().items():
            layer.restore_rng_state(state["layers"][name])
        if self.ctx.own_rng is not None:
            self.ctx.own_rng.set_state(state["own_rng"])

    def close(self) -> None:
        """Stop background work (data prefetch threads)."""
        for layer in self.layers:
            stop = getattr(layer, "close", None)
            if stop is not None:
                stop()

    def __repr__(self) -> str:
        return f"<Net {self.name!r} phase={caffe_pb2.Phase.Name(self.phase)} layers={len(self.layers)}>"
