"""Data layers: Input, DummyData, Data (LMDB) and ImageData (image list), the last two prefetching."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.fillers import fill
from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.registry import register_layer
from pixsent.engine.transform import DataTransformer
from pixsent.errors import DataError, FormatError, NetError


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
            self._cache = [
                fill(s, f, self.ctx.generator).to(self.ctx.device) for s, f in zip(self.shapes, self.fillers)
            ]
        return list(self._cache)


class _BatchLoader:
    """Assembles transformed batches from an endless item iterator (runs on the prefetch thread)."""

    def __init__(
        self,
        items: Iterator[tuple[np.ndarray, float]],
        transformer: DataTransformer,
        global_batch: int,
        lo: int,
        hi: int,
        layer: str,
    ) -> None:
        self.items, self.transformer, self.layer = items, transformer, layer
        self.global_batch, self.lo, self.hi = global_batch, lo, hi
        first = next(items)
        self.pending = [first]
        self.item_shape = transformer.out_shape(*first[0].shape)

    def _next(self) -> tuple[np.ndarray, float]:
        return self.pending.pop() if self.pending else next(self.items)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """The next global batch's random draws, and this rank's slice of transformed images and labels."""
        data = np.empty((self.hi - self.lo, *self.item_shape), dtype=np.float32)
        labels = np.empty((self.hi - self.lo,), dtype=np.float32)
        for k in range(self.global_batch):
            image, label = self._next()
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
        return data, labels


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

    def get(self) -> tuple[np.ndarray, np.ndarray]:
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

    def open_source(self) -> Iterator[tuple[np.ndarray, float]]:
        """Endless (C x H x W image, label) pairs in source order."""
        raise NotImplementedError

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        if getattr(self, "_prefetcher", None) is not None:
            return list(self._shapes)
        b = self.batch_size()
        if b <= 0:
            raise NetError(f"layer {self.name!r}: batch_size must be positive")
        world, rank = self.ctx.world_size, self.ctx.rank
        if b % world:
            raise NetError(f"layer {self.name!r}: batch_size {b} does not divide among {world} ranks")
        seed = int(torch.randint(0, 2**62, (1,), generator=self.ctx.generator).item())
        self.rng = np.random.default_rng(seed)
        transformer = DataTransformer(self.param.transform_param, self.phase, self.rng, self.name)
        lo, hi = rank * b // world, (rank + 1) * b // world
        loader = _BatchLoader(self.open_source(), transformer, b, lo, hi, self.name)
        self._shapes = [(hi - lo, *loader.item_shape), (hi - lo,)][: len(self.param.top)]
        self._prefetcher = _Prefetcher(loader, self.prefetch_count, self.name)
        return list(self._shapes)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return list(self._shapes)

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        data, labels = self._prefetcher.get()
        dev = self.ctx.device
        tops = [torch.from_numpy(data), torch.from_numpy(labels)][: len(self.param.top)]
        if dev.type != "cpu":
            tops = [t.pin_memory().to(dev, non_blocking=True) for t in tops]
        return tops

    def close(self) -> None:
        """Stop the prefetch thread."""
        pf = getattr(self, "_prefetcher", None)
        if pf is not None:
            pf.stop()
            pf.thread.join(timeout=5)

    def __del__(self) -> None:
        pf = getattr(self, "_prefetcher", None)
        if pf is not None:
            pf.stop()


_LMDB_LOCK = threading.Lock()


class _LMDBSource:
    """Endless (key, value) pairs of an LMDB in key order, wrapping around.

    It reads ``chunk`` entries at a time and closes the environment in between, because an LMDB
    environment may be open only once per process: a net kept alive must not stop other code (or a
    second net) from opening the same database.
    """

    def __init__(self, path: str, chunk: int, owner: str = "") -> None:
        self.path = Path(path)
        self.chunk = max(16, chunk)
        self.after: bytes | None = None
        where = f"{owner}: data_param.source {str(path)!r}" if owner else str(path)
        if not self.path.exists():
            raise DataError(f"{where}: LMDB not found (cwd {Path.cwd()})")
        if not self._read():
            raise DataError(f"{where}: LMDB is empty")

    def _read(self) -> list[tuple[bytes, bytes]]:
        import lmdb

        with _LMDB_LOCK:
            try:
                env = lmdb.open(
                    str(self.path), readonly=True, lock=False, subdir=self.path.is_dir(), readahead=False
                )
            except lmdb.Error as exc:
                raise FormatError(f"{self.path}: not an LMDB ({exc})") from None
            try:
                with env.begin(buffers=False) as txn:
                    cur = txn.cursor()
                    ok = cur.first() if self.after is None else cur.set_range(self.after)
                    if ok and self.after is not None and cur.key() == self.after:
                        ok = cur.next()
                    out: list[tuple[bytes, bytes]] = []
                    while ok and len(out) < self.chunk:
                        out.append((cur.key(), cur.value()))
                        ok = cur.next()
            finally:
                env.close()
        return out

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        while True:
            items = self._read()
            if not items:
                if self.after is None:
                    raise DataError(f"{self.path}: LMDB is empty")
                self.after = None
                continue
            self.after = items[-1][0]
            yield from items


@register_layer("Data")
class Data(_PrefetchingData):
    """Batches of Datums from an LMDB (data_param.source, relative to the working directory), keys in
    order, wrapping to the first key after the last; ``rand_skip`` skips a random number of items first."""

    def batch_size(self) -> int:
        return int(self.param.data_param.batch_size)

    def open_source(self) -> Iterator[tuple[np.ndarray, float]]:
        p = self.param.data_param
        if p.backend != caffe_pb2.DataParameter.LMDB:
            raise NetError(f"layer {self.name!r}: only the LMDB backend is supported (set backend: LMDB)")
        self.prefetch_count = int(p.prefetch)
        from pixsent.formats.datum import datum_to_array, parse_datum

        reader = _LMDBSource(p.source, 2 * int(p.batch_size), owner=f"layer {self.name!r}")
        is_color = not self.param.transform_param.force_gray
        skip = int(self.rng.integers(0, p.rand_skip + 1)) if p.rand_skip else 0

        def items() -> Iterator[tuple[np.ndarray, float]]:
            for n, (key, value) in enumerate(reader):
                if n < skip:
                    continue
                where = f"{p.source}: key {key.decode(errors='replace')}"
                datum = parse_datum(value, where)
                yield datum_to_array(datum, is_color, where), float(datum.label)

        return items()


@register_layer("ImageData")
class ImageData(_PrefetchingData):
    """Batches of images listed in a text file ("path label" per line, root_folder prefixed), read with
    OpenCV and resized to new_height x new_width with INTER_LINEAR; ``shuffle`` reshuffles every epoch."""

    def batch_size(self) -> int:
        return int(self.param.image_data_param.batch_size)

    def open_source(self) -> Iterator[tuple[np.ndarray, float]]:
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
        flag = cv2.IMREAD_COLOR if p.is_color else cv2.IMREAD_GRAYSCALE
        rng = self.rng
        skip = int(rng.integers(0, p.rand_skip + 1)) if p.rand_skip else 0

        def items() -> Iterator[tuple[np.ndarray, float]]:
            order = list(lines)
            if p.shuffle:
                rng.shuffle(order)
            n = 0
            while True:
                for path, label in order:
                    n += 1
                    if n <= skip:
                        continue
                    full = p.root_folder + path
                    img = cv2.imread(full, flag)
                    if img is None:
                        raise DataError(f"{p.source}: could not read image {full}")
                    if p.new_height:
                        img = cv2.resize(img, (p.new_width, p.new_height), interpolation=cv2.INTER_LINEAR)
                    if img.ndim == 2:
                        img = img[:, :, None]
                    yield np.ascontiguousarray(img.transpose(2, 0, 1)), label
                if p.shuffle:
                    rng.shuffle(order)

        return items()
