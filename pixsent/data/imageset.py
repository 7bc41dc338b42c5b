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

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
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


def _join(root: str, path: str) -> str:
    if not root or root.endswith(("/", os.sep)):
        return root + path
    return f"{root}/{path}"


def _work(job: _Job, root: str, opts: ImageOptions) -> tuple[_Job, bytes | None]:
    """Decode one list entry into a serialized Datum (None when unreadable)."""
    if opts.encoding == "?":  # --encoded without --encode_type: Caffe guesses from the extension
        opts = ImageOptions(opts.height, opts.width, opts.gray, guess_encoding(job.path))
    datum = image_to_datum(_join(root, job.path), job.label, opts)
    return job, None if datum is None else datum.SerializeToString()


def _results(
    jobs: list[_Job], root: str, opts: ImageOptions, workers: int
) -> Iterator[tuple[_Job, bytes | None]]:
    """Yield (job, value) in list order, decoded by WORKERS threads when > 1.

    Threads, not processes: reading, the JPEG check's scan, OpenCV's decode and resize and the pixel copy
    run without the GIL, and nothing has to start a worker or ship 200 KB datums between processes. Jobs
    are submitted a window ahead of the consumer, so memory stays bounded; an error in a worker is raised
    here, in order. OpenCV's own threads are set to 1 for the build (the workers are the parallelism) and
    restored afterwards.
    """
    if workers <= 1:
        yield from (_work(job, root, opts) for job in jobs)
        return
    from concurrent.futures import ThreadPoolExecutor

    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="convert_imageset")
    try:
        window = workers * 8
        futures = [pool.submit(_work, job, root, opts) for job in jobs[:window]]
        for i in range(len(jobs)):
            result = futures[i].result()
            futures[i] = None  # free memory as we go
            if i + window < len(jobs):
                futures.append(pool.submit(_work, jobs[i + window], root, opts))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        cv2.setNumThreads(cv_threads)


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
