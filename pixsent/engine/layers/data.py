"""Data layers: Input, DummyData, Data (LMDB) and ImageData (image list), the last two prefetching.

Random streams as Caffe's (base_data_layer.cpp, internal_thread.cpp, data_transformer.cpp): setting up a
prefetching layer draws from the net's generator, in order, (1) a transformer seed when the transform is
random (mirror, or a TRAIN crop) - a generator Caffe replaces at once, (2) ImageData's shuffling seed and
rand_skip, (3) the transformer seed kept, (4) the prefetch thread's seed (that thread's own generator, which
nothing here draws from). Crops and mirrors then come from the transformer's generator, batch by batch.

Each loaded batch carries the loader's position after it (source position and generator states); the
layer remembers the position after the last batch it handed out, so ``rng_state`` / ``restore_rng_state``
save and restore exactly where the next forward continues, however far the prefetch thread has run ahead.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine import glog
from pixsent.engine import rng as caffe_rng
from pixsent.engine.fillers import fill
from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.layers.sources import ImageListSource, LMDBSource
from pixsent.engine.registry import register_layer
from pixsent.engine.transform import DataTransformer
from pixsent.errors import DataError, NetError

Item = tuple[np.ndarray, float]


@register_layer("Input")
class Input(Layer):
    """Tops the user writes (net.blobs[...].data); one input_param shape for all tops or one per top."""

    owns_tops = True

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shapes = [tuple(int(d) for d in s.dim) for s in self.param.input_param.shape]
        ntop = len(self.param.top)
        if len(shapes) == 1:
            shapes *= ntop
        if len(shapes) != ntop:
            raise NetError(f"layer {self.name!r}: {len(shapes)} input shapes for {ntop} tops")
        return shapes

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return [b.shape for b in self.top_blobs]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        return [b.tensor for b in self.top_blobs]


@register_layer("DummyData")
class DummyData(Layer):
    """Tops filled by data_filler(s) (default constant 0); refilled every forward unless all are constant."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.dummy_data_param
        ntop = len(self.param.top)
        if p.shape:
            shapes = [tuple(int(d) for d in s.dim) for s in p.shape]
        else:
            n = len(p.num)
            shapes = [(p.num[i], p.channels[i], p.height[i], p.width[i]) for i in range(n)]
        if len(shapes) == 1:
            shapes *= ntop
        if len(shapes) != ntop:
            raise NetError(f"layer {self.name!r}: {len(shapes)} shapes for {ntop} tops")
        fillers = list(p.data_filler) or [caffe_pb2.FillerParameter(type="constant")]
        if len(fillers) == 1:
            fillers *= ntop
        if len(fillers) != ntop:
            raise NetError(f"layer {self.name!r}: {len(fillers)} data_fillers for {ntop} tops")
        self.shapes, self.fillers = shapes, fillers
        self.refill = any(f.type != "constant" for f in fillers)
        self._cache: list[torch.Tensor] | None = None
        return shapes

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return list(self.shapes)

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        if self._cache is None or self.refill:
            rng = self.ctx.filler_rng()
            self._cache = [fill(s, f, rng).to(self.ctx.device) for s, f in zip(self.shapes, self.fillers)]
        return list(self._cache)


class _BatchLoader:
    """Assembles transformed batches from an item source (runs on the prefetch thread)."""

    def __init__(
        self,
        source,
        read_item: Callable[[], Item],
        transformer: DataTransformer,
        global_batch: int,
        lo: int,
        hi: int,
        layer: str,
    ) -> None:
        self.source, self.read_item, self.transformer, self.layer = source, read_item, transformer, layer
        self.global_batch, self.lo, self.hi = global_batch, lo, hi
        start = self.state()
        first = read_item()  # Caffe reads the first item at set-up for the shapes, then starts from it
        self.restore(start)
        self.item_shape = transformer.out_shape(*first[0].shape)

    def state(self) -> dict:
        """Where the next batch starts: the source's position and the transformer generator's state."""
        rng = self.transformer.rng
        return {"source": self.source.state(), "transform_rng": rng.get_state() if rng is not None else None}

    def restore(self, state: dict) -> None:
        """Continue from a ``state()``."""
        self.source.restore(state["source"])
        rng = self.transformer.rng
        if (state["transform_rng"] is None) != (rng is None):
            raise DataError(f"layer {self.layer!r}: saved state and layer disagree on random transforms")
        if rng is not None:
            rng.set_state(state["transform_rng"])

    def load(self) -> tuple[np.ndarray, np.ndarray, dict]:
        """The next global batch's random draws, this rank's slice of transformed images and labels, and
        the position after the batch."""
        data = np.empty((self.hi - self.lo, *self.item_shape), dtype=np.float32)
        labels = np.empty((self.hi - self.lo,), dtype=np.float32)
        for k in range(self.global_batch):
            image, label = self.read_item()
            draw = self.transformer.draw(image.shape[1], image.shape[2])
            if not self.lo <= k < self.hi:
                continue
            if self.transformer.out_shape(*image.shape) != self.item_shape:
                raise DataError(
                    f"layer {self.layer!r}: item of shape {image.shape} does not fit the batch shape "
                    f"{self.item_shape} (set crop_size or resize)"
                )
            self.transformer.apply(image, draw, out=data[k - self.lo])
            labels[k - self.lo] = label
        return data, labels, self.state()


class _Prefetcher:
    """A daemon thread keeping up to ``count`` loaded batches in a queue, in load order.

    It holds no reference to its layer, so dropping the net lets the layer's finaliser stop it.
    """

    def __init__(self, loader: _BatchLoader, count: int, name: str) -> None:
        self.loader = loader
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, count))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"prefetch-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                item: object = self.loader.load()
            except BaseException as exc:  # handed to the consumer, which re-raises it
                item = exc
            while not self.stop_event.is_set():
                try:
                    self.queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def get(self) -> tuple[np.ndarray, np.ndarray, dict]:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self.stop_event.set()


class _PrefetchingData(Layer):
    """Base of Data and ImageData: a background thread fills a queue of ``prefetch`` ready batches.

    The thread is the only reader of the source, so batches keep the source order. With
    ``ctx.world_size`` W > 1, every rank walks the same global sequence of ``batch_size`` items (and the
    same random draws) and keeps the contiguous slice [rank * b / W, (rank + 1) * b / W), so W ranks
    together see exactly the batch one process would.
    """

    prefetch_count = 4

    def batch_size(self) -> int:
        raise NotImplementedError

    def open_source(self, rng: caffe_rng.CaffeRng) -> tuple[object, Callable[[], Item]]:
        """The item source (with ``state``/``restore``) and a function reading its next (C x H x W image,
        label); set-up draws of the layer (ImageData's) come from ``rng``."""
        raise NotImplementedError

    def _fingerprint(self) -> str:
        """What a saved position depends on: the layer's type, phase, data and transform parameters (not
        file locations: a run folder moved elsewhere still resumes exactly)."""
        p = caffe_pb2.LayerParameter()
        p.CopyFrom(self.param)
        for name in ("name", "top", "bottom", "include", "exclude", "loss_weight", "param"):
            p.ClearField(name)
        p.data_param.ClearField("prefetch")
        p.data_param.ClearField("source")
        p.image_data_param.ClearField("source")
        p.image_data_param.ClearField("root_folder")
        p.transform_param.ClearField("mean_file")
        return hashlib.sha256(p.SerializeToString(deterministic=True) + bytes([self.phase])).hexdigest()

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        if getattr(self, "_prefetcher", None) is not None:
            return list(self._shapes)
        b = self.batch_size()
        if b <= 0:
            raise NetError(f"layer {self.name!r}: batch_size must be positive")
        world, rank = self.ctx.world_size, self.ctx.rank
        if b % world:
            raise NetError(f"layer {self.name!r}: batch_size {b} does not divide among {world} ranks")
        main = self.ctx.rng
        tp = self.param.transform_param
        random_transform = DataTransformer.needs_rand(tp, self.phase)
        if random_transform:
            main.rand()  # BaseDataLayer::LayerSetUp seeds a transformer generator, replaced just below
        transformer = DataTransformer(tp, self.phase, None, self.name)
        source, read_item = self.open_source(main)
        transformer.rng = caffe_rng.fork(main) if random_transform else None
        main.rand()  # the prefetch thread's own generator (StartInternalThread); nothing draws from it here
        lo, hi = rank * b // world, (rank + 1) * b // world
        self._loader = _BatchLoader(source, read_item, transformer, b, lo, hi, self.name)
        self._consumed = self._loader.state()
        self._shapes = [(hi - lo, *self._loader.item_shape), (hi - lo,)][: len(self.param.top)]
        self._prefetcher = _Prefetcher(self._loader, self.prefetch_count, self.name)
        return list(self._shapes)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return list(self._shapes)

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        data, labels, self._consumed = self._prefetcher.get()
        dev = self.ctx.device
        tops = [torch.from_numpy(data), torch.from_numpy(labels)][: len(self.param.top)]
        if dev.type != "cpu":
            tops = [t.pin_memory().to(dev, non_blocking=True) for t in tops]
        return tops

    def rng_state(self) -> dict:
        """Where the next forward continues: source position and generator states after the last batch
        handed out (batches the thread prefetched beyond it are not counted)."""
        return {"fingerprint": self._fingerprint(), **self._consumed}

    def rng_state_mismatch(self, state: dict) -> str:
        """Why ``state`` cannot be restored here ("" when it can)."""
        if state.get("fingerprint") != self._fingerprint():
            return "the saved position belongs to another definition of the layer"
        if (state.get("transform_rng") is None) != (self._loader.transformer.rng is None):
            return "saved state and layer disagree on random transforms"
        return self._loader.source.mismatch(state["source"])

    def restore_rng_state(self, state: dict) -> None:
        """Continue from an ``rng_state()`` (of the same layer definition): the prefetch thread restarts."""
        reason = self.rng_state_mismatch(state)
        if reason:
            raise DataError(f"layer {self.name!r}: {reason}")
        self.close()
        self._loader.restore(state)
        self._consumed = self._loader.state()
        self._prefetcher = _Prefetcher(self._loader, self.prefetch_count, self.name)

    def close(self) -> None:
        """Stop the prefetch thread."""
        pf = getattr(self, "_prefetcher", None)
        if pf is not None:
            pf.stop()
            pf.thread.join(timeout=60)

    def __del__(self) -> None:
        pf = getattr(self, "_prefetcher", None)
        if pf is not None:
            pf.stop()


@register_layer("Data")
class Data(_PrefetchingData):
    """Batches of Datums from an LMDB (data_param.source, relative to the working directory), keys in
    order, wrapping to the first key after the last. ``rand_skip`` is ignored, as by Caffe 1.0's Data
    layer."""

    def batch_size(self) -> int:
        return int(self.param.data_param.batch_size)

    def open_source(self, rng: caffe_rng.CaffeRng) -> tuple[object, Callable[[], Item]]:
        p = self.param.data_param
        if p.backend != caffe_pb2.DataParameter.LMDB:
            raise NetError(f"layer {self.name!r}: only the LMDB backend is supported (set backend: LMDB)")
        self.prefetch_count = int(p.prefetch)
        if p.rand_skip:
            glog.warning(f"layer {self.name!r}: data_param.rand_skip is ignored (so is it by Caffe 1.0)")
        from pixsent.formats.datum import datum_to_array, parse_datum

        reader = LMDBSource(p.source, 2 * int(p.batch_size), owner=f"layer {self.name!r}")
        is_color = not self.param.transform_param.force_gray

        def read_item() -> Item:
            key, value = reader.next()
            where = f"{p.source}: key {key.decode(errors='replace')}"
            datum = parse_datum(value, where)
            return datum_to_array(datum, is_color, where), float(datum.label)

        return reader, read_item


@register_layer("ImageData")
class ImageData(_PrefetchingData):
    """Batches of images listed in a text file ("path label" per line, root_folder prefixed), read with
    OpenCV and resized to new_height x new_width with INTER_LINEAR; ``shuffle`` reshuffles every epoch and
    ``rand_skip`` starts at a random line below it, both from Caffe's generators."""

    def batch_size(self) -> int:
        return int(self.param.image_data_param.batch_size)

    def open_source(self, rng: caffe_rng.CaffeRng) -> tuple[object, Callable[[], Item]]:
        import cv2

        p = self.param.image_data_param
        try:
            text = Path(p.source).read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"{p.source}: cannot read image list ({exc.strerror})") from None
        lines: list[tuple[str, float]] = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.rstrip()
            if not line:
                continue
            path, _, label = line.rpartition(" ")
            try:
                lines.append((path, float(int(label))))
            except ValueError:
                raise DataError(f"{p.source}:{n}: expected 'path label', got {line!r}") from None
        if not lines:
            raise DataError(f"{p.source}: image list is empty")
        if p.new_height and not p.new_width or p.new_width and not p.new_height:
            raise DataError(f"layer {self.name!r}: new_height and new_width must be set together")
        shuffle_rng = caffe_rng.fork(rng) if p.shuffle else None
        skip = rng.rand() % p.rand_skip if p.rand_skip else 0
        try:
            source = ImageListSource(lines, shuffle_rng, skip)
        except DataError as exc:
            raise DataError(f"layer {self.name!r}: {exc}") from None
        flag = cv2.IMREAD_COLOR if p.is_color else cv2.IMREAD_GRAYSCALE

        def read_item() -> Item:
            path, label = source.next()
            full = p.root_folder + path
            img = cv2.imread(full, flag)
            if img is None:
                raise DataError(f"{p.source}: could not read image {full}")
            if p.new_height:
                img = cv2.resize(img, (p.new_width, p.new_height), interpolation=cv2.INTER_LINEAR)
            if img.ndim == 2:
                img = img[:, :, None]
            return np.ascontiguousarray(img.transpose(2, 0, 1)), label

        return source, read_item
