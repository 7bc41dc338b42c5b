"""convert_imageset: build a Caffe LMDB of Datums from an image list, in parallel and atomically.

Caffe facts (BVLC tools/convert_imageset.cpp, master): the key of list line i (0-based, counted after
the optional shuffle) is `%08d_<path as written>`; an image that cannot be read is logged and skipped,
but its index is still consumed, so keys can have gaps; with --encoded and no --encode_type the
encoding is guessed from each file's extension; --check_size compares every raw datum's size with the
first one. Caffe shuffles with its own unseeded RNG, so its order cannot be reproduced bit for bit:
pixsent shuffles with numpy's RandomState(seed) (seed 0 unless given) and says so. Caffe refuses to
open an existing database; pixsent too, unless overwrite=True. Caffe concatenates ROOTFOLDER and the
path as strings; pixsent inserts a '/' when ROOTFOLDER lacks one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixsent.data.imagelist import ListEntry, read_image_list
from pixsent.data.images import ImageOptions, guess_encoding, image_to_datum, unreadable_reason
from pixsent.errors import DataError

DEFAULT_SEED = 0


@dataclass
class ConvertReport:
    """What a build did: counts, skipped images (with their list lines) and the output path."""

    db_path: Path
    written: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _Job:
    index: int
    path: str
    label: int
    line: int


_OPTS: ImageOptions | None = None
_ROOT = ""
_WORK = None  # the per-job function a worker runs (set by _init_worker; _work unless replaced)


def _init_worker(root: str, opts: ImageOptions, work=None) -> None:
    """Worker initialiser: one OpenCV thread per process (the pool provides the parallelism)."""
    global _OPTS, _ROOT, _WORK
    import cv2

    cv2.setNumThreads(1)
    _OPTS, _ROOT, _WORK = opts, root, work


def _join(root: str, path: str) -> str:
    if not root or root.endswith(("/", os.sep)):
        return root + path
    return f"{root}/{path}"


def _work(job: _Job) -> tuple[_Job, bytes | None]:
    """Decode one list entry into a serialized Datum (None when unreadable)."""
    assert _OPTS is not None
    opts = _OPTS
    if opts.encoding == "?":  # --encoded without --encode_type: Caffe guesses from the extension
        opts = ImageOptions(opts.height, opts.width, opts.gray, guess_encoding(job.path))
    datum = image_to_datum(_join(_ROOT, job.path), job.label, opts)
    return job, None if datum is None else datum.SerializeToString()


def _work_chunk(jobs: list[_Job]) -> list[tuple[_Job, bytes | None]]:
    """Pool entry point (module level, so it pickles): decode a chunk of jobs in a worker."""
    work = _WORK or _work
    return [work(job) for job in jobs]


def _results(
    jobs: list[_Job], root: str, opts: ImageOptions, workers: int
) -> Iterator[tuple[_Job, bytes | None]]:
    """Yield (job, value) in list order, decoded by WORKERS processes when > 1.

    A ProcessPoolExecutor is used because it fails loudly (BrokenProcessPool) when a worker dies, where
    multiprocessing.Pool would wait forever for the lost result; chunks are submitted a window at a time.
    """
    if workers <= 1:
        global _OPTS, _ROOT
        _OPTS, _ROOT = opts, root  # in-process: leave the caller's OpenCV thread setting alone
        yield from map(_work, jobs)
        return
    from concurrent.futures import ProcessPoolExecutor

    size = max(1, min(16, len(jobs) // (workers * 4) or 1))
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    # never plain fork: the caller may hold OpenCV, torch or tqdm threads whose locks a forked child inherits
    # held (a deadlock seen in the test suite); a fork server forks from a clean single-threaded process
    ctx = mp.get_context("forkserver" if sys.platform.startswith("linux") else "spawn")
    init = (root, opts, _work)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=init)
    try:
        window = workers * 4
        futures = [pool.submit(_work_chunk, c) for c in chunks[:window]]
        for i in range(len(chunks)):
            result = futures[i].result()
            futures[i] = None  # free memory as we go
            if i + window < len(chunks):
                futures.append(pool.submit(_work_chunk, chunks[i + window]))
            yield from result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _writer(db_path: Path, overwrite: bool, expected_bytes: int = 0):
    """LMDBWriter with a map sized for the expected data, so no batch is replayed after MapFullError."""
    from pixsent.formats.lmdb_io import LMDBWriter

    map_size = max(LMDBWriter.INITIAL_MAP_SIZE, int(expected_bytes * 1.5) + (16 << 20))
    return LMDBWriter(
        db_path, overwrite=overwrite, commit_every=1000, map_size=map_size, expected_bytes=expected_bytes
    )


def convert_imageset(
    root: str | Path,
    listfile: str | Path,
    db_path: str | Path,
    *,
    resize: tuple[int, int] = (0, 0),
    shuffle: bool = False,
    gray: bool = False,
    encoded: bool = False,
    encode_type: str = "",
    check_size: bool = False,
    strict: bool = False,
    workers: int | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    entries: list[ListEntry] | None = None,
) -> ConvertReport:
    """Build DB_PATH from LISTFILE's images under ROOT like Caffe's convert_imageset; resize is (h, w)."""
    import time

    from tqdm import tqdm

    db_path = Path(db_path)
    listfile = Path(listfile)
    if db_path.exists() and not overwrite:
        raise DataError(f"{db_path}: database already exists (pass --overwrite to replace it)")
    if entries is None:
        entries = read_image_list(listfile)
    if shuffle:
        order = np.random.RandomState(DEFAULT_SEED if seed is None else seed).permutation(len(entries))
        entries = [entries[i] for i in order]
    jobs = [_Job(i, e.path, e.label, e.line) for i, e in enumerate(entries)]
    height, width = resize
    encoding = (encode_type or "?") if encoded else ""
    opts = ImageOptions(int(height), int(width), gray, encoding)
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    report = ConvertReport(db_path)
    expected_size: int | None = None
    start = time.perf_counter()
    per_image = (1 if gray else 3) * height * width + 64 if opts.resizes and not encoded else 0
    with _writer(db_path, overwrite, per_image * len(jobs)) as writer:
        bar = tqdm(
            total=len(jobs),
            desc=f"convert_imageset {db_path.name}",
            unit="img",
            disable=not progress,
            file=sys.stderr,
        )
        for job, value in _results(jobs, str(root), opts, workers):
            bar.update()
            if value is None:
                where = f"{listfile}:{job.line}"
                why = unreadable_reason(_join(str(root), job.path))
                if strict:
                    raise DataError(f"{where}: cannot read image {_join(str(root), job.path)}: {why}")
                report.skipped.append(f"{where}: {job.path}")
                kind = "unreadable" if os.path.exists(_join(str(root), job.path)) else "missing"
                detail = f": {why}" if kind == "unreadable" else ""
                print(f"convert_imageset: skipped {kind} image {job.path} ({where}){detail}", file=sys.stderr)
                continue
            if check_size and not encoded:
                size = _data_size(value)
                if expected_size is None:
                    expected_size = size
                elif size != expected_size:
                    raise DataError(
                        f"{listfile}:{job.line}: {job.path} has {size} data bytes, expected {expected_size}"
                    )
            writer.put(f"{job.index:08d}_{job.path}".encode(), value)
            report.written += 1
        bar.close()
        if report.written == 0:
            raise DataError(f"{listfile}: no image could be read; nothing written to {db_path}")
    report.seconds = time.perf_counter() - start
    return report


def _data_size(value: bytes) -> int:
    from pixsent.caffe.proto import caffe_pb2

    datum = caffe_pb2.Datum()
    datum.ParseFromString(value)
    return len(datum.data)
