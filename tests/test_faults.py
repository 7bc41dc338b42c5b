"""Fault injection (issue 14): full disks, files cut short, bad split files, two writers of one output,
processes killed with SIGKILL at chosen points, a trainer whose log pipe closes under SIGHUP.

A full disk is a small tmpfs mounted for the test (root only; the tests that need one are skipped
elsewhere, and an in-process ENOSPC stands in for the unit-level ones). Kills at chosen points are made by
a child Python that replaces one function with ``os.kill(os.getpid(), SIGKILL)``; slow writers by one that
sleeps per image. Every test here fails on the code before the fix of its item (item numbers in the names).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from pixsent.errors import DataError, NetError

PY = sys.executable

# ---------------------------------------------------------------- helpers


@pytest.fixture
def small_disk(tmp_path):
    """make(kb) -> a folder that is a tmpfs of that size (unmounted after the test); skip when not root."""
    mounted: list[Path] = []

    def make(kb: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("a small tmpfs needs root (mount -t tmpfs)")
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(folder)], capture_output=True
            )
        except FileNotFoundError:
            pytest.skip("no mount command")
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill_disk(folder: Path) -> None:
    """Write a filler file into ``folder`` until its filesystem is full."""
    with open(folder / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def cli(*args, cwd=None, timeout=180) -> subprocess.CompletedProcess:
    """``python -m pixsent ARGS`` in a subprocess (text output captured)."""
    return subprocess.run(
        [PY, "-m", "pixsent", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def one_error_line(done: subprocess.CompletedProcess, command: str) -> str:
    """Non-zero exit, no traceback, exactly one `pixsent COMMAND: error:` line; returns it."""
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith(f"pixsent {command}: error: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def write_images(folder: Path, n: int, size: int = 64, seed: int = 0) -> Path:
    """n random JPEGs img<k>.jpg and list.txt (labels alternate); returns the list."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    lines = []
    for k in range(n):
        cv2.imwrite(str(folder / f"img{k}.jpg"), rng.randint(0, 256, (size, size, 3)).astype(np.uint8))
        lines.append(f"img{k}.jpg {k % 2}\n")
    listfile = folder / "list.txt"
    listfile.write_text("".join(lines))
    return listfile


SLOW_CONVERT = """
import sys, time
import pixsent.data.imageset as m
work = m._work
def slow(job, *rest):
    time.sleep(0.2)
    return work(job, *rest)
m._work = slow
from pixsent.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_slow_convert(images: Path, listfile: Path, db: Path, *extra: str) -> subprocess.Popen:
    """A convert_imageset that takes 0.2 s per image (one process), started in the background."""
    argv = ["convert_imageset", "--quiet", "--workers", "1", *extra, f"{images}/", str(listfile), str(db)]
    return subprocess.Popen([PY, "-c", SLOW_CONVERT, *argv], stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true (a fault test's own synchronisation)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def temporaries(folder: Path) -> list[str]:
    """Names of the hidden temporaries of atomic writes in ``folder`` (none when it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def gone(pid: int) -> bool:
    """True when PID has exited (also when it is a zombie no one has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


TINY_NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 100 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 0 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 500 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def tiny_solver(folder: Path, prefix: str, max_iter: int = 4, snapshot: int = 2, display: int = 0) -> Path:
    """solver.prototxt + net.prototxt in ``folder``: 50 k parameters (a 200 kB caffemodel), SGD momentum."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.prototxt").write_text(TINY_NET)
    solver = folder / "solver.prototxt"
    solver.write_text(
        f'net: "{folder / "net.prototxt"}"\nbase_lr: 0.01\nlr_policy: "fixed"\nmomentum: 0.9\n'
        f'max_iter: {max_iter}\nsnapshot: {snapshot}\nsnapshot_prefix: "{prefix}"\ndisplay: {display}\n'
        "random_seed: 1\nsolver_mode: CPU\n"
    )
    return solver


# ---------------------------------------------------------------- 1. a full disk


def test_1_snapshot_on_full_disk_is_one_line_and_stays_resumable(small_disk, tmp_path, capsys):
    """The first snapshot pair (about 410 kB) fits a 512 kB disk, the second does not (`pixsent caffe train`
    run in-process, as the command line runs it)."""
    from pixsent.cli import main

    disk = small_disk(512)
    solver = tiny_solver(tmp_path / "run", str(disk / "snap"))
    capsys.readouterr()
    try:
        rc = main(["caffe", "train", "-solver", str(solver)])
    except Exception as exc:  # the command line would print a traceback
        print(f"Traceback: {exc!r}", file=sys.stderr)
        rc = 1
    done = subprocess.CompletedProcess([], rc, "", capsys.readouterr().err)
    line = one_error_line(done, "caffe")
    assert f"{disk}/snap_iter_4." in line and "no space left" in line and "free" in line, line
    names = sorted(p.name for p in disk.iterdir())  # the first snapshot (with its resume sidecar) only
    assert {"snap_iter_2.caffemodel", "snap_iter_2.solverstate"} <= set(names), names
    assert all(n.startswith("snap_iter_2.") for n in names), names

    from pixsent.engine.solvers.solver import solver_from_file

    resumed = solver_from_file(str(solver))
    resumed.restore(str(disk / "snap_iter_2.solverstate"))
    assert resumed.iter == 2


def test_1_convert_imageset_on_full_disk_is_one_line_and_leaves_nothing(small_disk, tmp_path):
    """30 raw 128x128 images (1.5 MB) into a 1 MB disk: LMDB's 'Input/output error' becomes one line."""
    listfile = write_images(tmp_path / "images", 30, size=32)
    disk = small_disk(1024)
    db = disk / "train_lmdb"
    done = cli(
        "convert_imageset", "--quiet", "--resize_height", 128, "--resize_width", 128,
        f"{tmp_path / 'images'}/", listfile, db,
    )  # fmt: skip
    line = one_error_line(done, "convert_imageset")
    assert f"{db}: no space left" in line and "needs about 1.5 MB" in line and "free" in line, line
    assert list(disk.iterdir()) == []  # no database, no temporary, no lock file


def test_1_compute_image_mean_on_full_disk_is_one_line_and_leaves_nothing(small_disk, tmp_path):
    listfile = write_images(tmp_path / "images", 4, size=32)
    from pixsent.data.imageset import convert_imageset

    convert_imageset(tmp_path / "images", listfile, tmp_path / "db", workers=1, progress=False)
    disk = small_disk(64)
    fill_disk(disk)
    for out, flag in (("mean.binaryproto", []), ("mean.npy", ["--npy"])):
        done = cli("compute_image_mean", "--quiet", tmp_path / "db", *flag, disk / out)
        line = one_error_line(done, "compute_image_mean")
        assert f"{disk / out}: no space left" in line and "needs about" in line, line
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_1_pipeline_names_the_trainers_own_error(tmp_path):
    """A trainer that stops on a full disk: the fold's error repeats its line instead of 'see the log'."""
    from pixsent.workflow.pipeline import FoldConfig, _run_logged
    from pixsent.workflow.runs import RunPaths

    run = RunPaths(tmp_path, "s", "v", "i", 1)
    run.dir.mkdir(parents=True)
    said = "pixsent caffe: error: snapshots/x_iter_4.caffemodel: no space left on the device (...)"
    trainer = [PY, "-c", f"import sys; print({said!r}, file=sys.stderr); sys.exit(1)"]
    with pytest.raises(NetError, match=r"status 1: snapshots/x_iter_4\.caffemodel: no space left"):
        _run_logged(trainer, run, dict(os.environ), FoldConfig(echo=False))


def test_1_atomic_write_on_full_disk_in_process(tmp_path, monkeypatch):
    """Without a tmpfs: the file object's write raises ENOSPC (as a full disk does); one error names it."""
    import builtins

    from pixsent.formats import atomic
    from pixsent.formats.space import DiskFullError

    real_open = builtins.open

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[:100])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)
    with pytest.raises(DiskFullError, match=r"x\.caffemodel: no space left .*needs about 5\.0 kB"):
        atomic.atomic_write_bytes(tmp_path / "x.caffemodel", b"\1" * 5000)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 2. a JPEG cut short


@pytest.fixture
def cut_jpeg_set(tmp_path):
    """good0.jpg, cut.jpg (a JPEG cut in the middle of its scan), good1.jpg and list.txt."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.RandomState(1)
    for name in ("good0", "whole", "good1"):
        cv2.imwrite(str(images / f"{name}.jpg"), rng.randint(0, 256, (48, 64, 3)).astype(np.uint8))
    data = (images / "whole.jpg").read_bytes()
    (images / "cut.jpg").write_bytes(data[: len(data) // 2])
    (images / "whole.jpg").unlink()
    listfile = tmp_path / "list.txt"
    listfile.write_text("good0.jpg 0\ncut.jpg 1\ngood1.jpg 0\n")
    return images, listfile


def test_2_truncated_jpeg_is_skipped_by_name_and_line(cut_jpeg_set, tmp_path):
    images, listfile = cut_jpeg_set
    done = cli("convert_imageset", "--quiet", "--workers", 1, f"{images}/", listfile, tmp_path / "db")
    assert done.returncode == 0, done.stderr
    assert f"skipped unreadable image cut.jpg ({listfile}:2): truncated JPEG" in done.stderr
    assert "Premature end of JPEG file" not in done.stderr  # libjpeg's nameless warning: never reached
    from pixsent.formats.lmdb_io import LMDBReader

    with LMDBReader(tmp_path / "db") as reader:
        assert [k.decode() for k in reader.keys()] == ["00000000_good0.jpg", "00000002_good1.jpg"]  # noqa: SIM118


def test_2_truncated_jpeg_fails_under_strict(cut_jpeg_set, tmp_path):
    images, listfile = cut_jpeg_set
    done = cli("convert_imageset", "--quiet", "--strict", f"{images}/", listfile, tmp_path / "db")
    line = one_error_line(done, "convert_imageset")
    assert f"{listfile}:2: cannot read image {images}/cut.jpg: truncated JPEG" in line, line
    assert not (tmp_path / "db").exists()


def _jpeg(seed: int = 0, **flags) -> bytes:
    img = np.random.RandomState(seed).randint(0, 256, (40, 56, 3)).astype(np.uint8)
    params = [p for k, v in flags.items() for p in (getattr(cv2, k), v)]
    ok, buf = cv2.imencode(".jpg", img, params)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    "flags",
    [{}, {"IMWRITE_JPEG_PROGRESSIVE": 1}, {"IMWRITE_JPEG_RST_INTERVAL": 2}],
    ids=["baseline", "progressive", "restart-markers"],
)
def test_2_jpeg_walk_finds_every_cut_and_no_whole_file(flags):
    from pixsent.data.jpeg import jpeg_complete

    data = _jpeg(**flags)
    assert jpeg_complete(data) and jpeg_complete(data + b"trailing bytes\xff\xd8")
    assert not any(jpeg_complete(data[:k]) for k in range(2, len(data)))


def test_2_jpeg_walk_is_not_fooled_by_an_exif_thumbnail():
    """A thumbnail (a whole JPEG, EOI included) inside APP1 must not make a cut main image look complete."""
    from pixsent.data.jpeg import jpeg_complete

    main, thumb = _jpeg(1), _jpeg(2)
    payload = b"Exif\0\0" + thumb
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    data = main[:2] + app1 + main[2:]
    assert jpeg_complete(data)
    assert not jpeg_complete(data[: len(data) - len(main) // 3])


# ---------------------------------------------------------------- 3. bad split files in the pipeline


def _fold_cfg(tmp_path: Path, train: str, test: str):
    from pixsent.workflow.pipeline import FoldConfig

    fold = tmp_path / "splits" / "demo_agrees" / "test1"
    fold.mkdir(parents=True, exist_ok=True)
    (fold / "train.txt").write_text(train)
    (fold / "test.txt").write_text(test)
    return FoldConfig(
        subset="demo",
        init="scratch",
        fold=1,
        runs=tmp_path / "runs",
        images=tmp_path / "images",
        splits=tmp_path / "splits",
        lmdb_root=tmp_path / "lmdb",
        recipe="demo",
        progress=False,
        echo=False,
    ), fold


@pytest.mark.parametrize(
    "train, test, file, line, message",
    [
        ("a 0\nb 1\nc 0\n", "d 1\nb 1\n", "train.txt", 2, "b is also in this fold's test.txt:2"),
        ("a 0\nb 1\na 0\n", "d 1\n", "train.txt", 3, "duplicate id a (first at line 1)"),
        ("a 0\nb 2\n", "d 1\n", "train.txt", 2, "label 2 of b is not 0 or 1"),
        ("a 0\nb 1\n", "\n", "test.txt", 0, "file is empty"),
    ],
    ids=["overlap", "duplicate", "label-2", "empty"],
)
def test_3_pipeline_refuses_split_files_that_splits_check_rejects(tmp_path, train, test, file, line, message):
    from pixsent.data.splits import check_splits
    from pixsent.workflow.pipeline import run_fold

    cfg, fold = _fold_cfg(tmp_path, train, test)
    with pytest.raises(DataError) as err:
        run_fold(cfg)
    assert str(err.value).startswith(f"{fold / file}:{line}: {message}"), err.value
    problems = [str(p) for p in check_splits(fold.parent)]
    assert any(str(err.value).startswith(p) for p in problems)  # the words of `pixsent splits check`
    assert not (tmp_path / "lmdb").exists()  # nothing built
    assert not (cfg.run_paths().dir / "train.txt").exists()


def test_3_splits_check_names_an_empty_file(tmp_path):
    from pixsent.data.splits import check_splits

    for k, (train, test) in enumerate((("a 0\n", ""), ("", "a 0\n")), 1):
        (tmp_path / f"test{k}").mkdir()
        (tmp_path / f"test{k}" / "train.txt").write_text(train)
        (tmp_path / f"test{k}" / "test.txt").write_text(test)
    found = [str(p) for p in check_splits(tmp_path)]
    assert f"{tmp_path}/test1/test.txt:0: file is empty (no `id label` lines)" in found
    assert f"{tmp_path}/test2/train.txt:0: file is empty (no `id label` lines)" in found


# ---------------------------------------------------------------- 4. two writers of one LMDB


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_4_second_writer_of_an_lmdb_is_refused_naming_the_first(tmp_path, overwrite):
    listfile = write_images(tmp_path / "images", 30)
    db = tmp_path / "out" / "db"
    extra = ("--overwrite",) if overwrite else ()
    if overwrite:  # an existing database both runs replace
        assert cli("convert_imageset", "--quiet", f"{tmp_path / 'images'}/", listfile, db).returncode == 0
    first = start_slow_convert(tmp_path / "images", listfile, db, *extra)
    try:
        wait_for(lambda: any(".tmp-" in n for n in temporaries(db.parent)), what="the first writer")
        second = cli("convert_imageset", "--quiet", *extra, f"{tmp_path / 'images'}/", listfile, db)
        line = one_error_line(second, "convert_imageset")
        assert f"{db}: in use by PID {first.pid} (writing this LMDB)" in line, line
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        first.kill()
        first.wait()
    from pixsent.formats.lmdb_io import LMDBReader

    with LMDBReader(db) as reader:
        assert len(reader) == 30
    assert sorted(p.name for p in db.parent.iterdir()) == ["db"]  # no temporary, no lock file


def test_4_lock_is_released_by_the_kernel_when_its_holder_is_killed(tmp_path):
    from pixsent.formats.locks import LockedError, acquire

    holder = subprocess.Popen(
        [PY, "-c", "import sys, time; from pixsent.formats.locks import acquire; "
         f"acquire({str(tmp_path / 'db')!r}, 'test holder'); print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=rf"PID {holder.pid} \(test holder\)"):
            acquire(tmp_path / "db", "second")
    finally:
        holder.kill()
        holder.wait()
    said = []
    with acquire(tmp_path / "db", "third", say=said.append):
        assert said == [f"{tmp_path / 'db'}: taking over the lock left by PID {holder.pid} "
                        "(test holder, exited), which did not release it"]  # fmt: skip
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 5. two pipelines in one run folder


def test_5_second_pipeline_in_a_run_folder_is_refused(tmp_path):
    from pixsent.formats.locks import LockedError
    from pixsent.workflow.pipeline import run_fold

    cfg, _ = _fold_cfg(tmp_path, "a 0\nb 1\n", "c 1\n")
    run = cfg.run_paths()
    run.dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [PY, "-c", "import time; from pixsent.formats.locks import acquire; "
         f"acquire({str(run.dir)!r}, 'pixsent pipeline'); print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=rf"{run.dir}: in use by PID {holder.pid} \(pixsent pipeline\)"):
            run_fold(cfg)
        assert sorted(p.name for p in run.dir.iterdir()) == []  # the second one touched nothing
    finally:
        holder.kill()
        holder.wait()


def test_5_stale_run_lock_is_taken_over_with_a_line(tmp_path, capsys):
    from pixsent.workflow.pipeline import run_fold

    cfg, _ = _fold_cfg(tmp_path, "a 0\nb 1\n", "c 1\n")
    run = cfg.run_paths()
    run.dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [PY, "-c", "import os, signal; from pixsent.formats.locks import acquire; "
         f"acquire({str(run.dir)!r}, 'pixsent pipeline'); os.kill(os.getpid(), signal.SIGKILL)"],
    )  # fmt: skip
    holder.wait()
    with pytest.raises(DataError, match="image folder not found"):  # got past the lock: no images here
        run_fold(cfg)
    err = capsys.readouterr().err
    assert f"taking over the lock left by PID {holder.pid} (pixsent pipeline, exited)" in err, err
    assert not list(run.dir.parent.glob(".*.lock"))  # released again


LOGGED_TRAINER = """
import os, signal, sys
from pathlib import Path
# SIGHUP as in a terminal's session, also when the suite itself runs under nohup (an ignored signal is
# inherited across exec, and the pipeline would then outlive the hang-up this test sends)
signal.signal(signal.SIGHUP, signal.SIG_DFL)
from pixsent.workflow.pipeline import FoldConfig, _run_logged
from pixsent.workflow.runs import RunPaths
run = RunPaths(Path(sys.argv[2]), "s", "v", "i", 1)
run.dir.mkdir(parents=True, exist_ok=True)
if sys.argv[1] == "locked":  # as run_fold holds the run folder while it trains
    from pixsent.formats.locks import acquire
    acquire(run.dir, "pixsent pipeline")
_run_logged(sys.argv[3:], run, dict(os.environ), FoldConfig(echo=False))
"""


def test_5_trainer_keeps_the_run_folder_locked_after_its_pipeline_is_killed(tmp_path):
    from pixsent.formats.locks import LockedError, acquire, lock_file
    from pixsent.workflow.runs import RunPaths

    run = RunPaths(tmp_path / "runs", "s", "v", "i", 1)
    trainer = [PY, "-c", "import time; print('training', flush=True); time.sleep(120)"]
    pipeline = subprocess.Popen([PY, "-c", LOGGED_TRAINER, "locked", str(run.root), *trainer])
    trainer_pid = None
    try:
        lock = lock_file(run.dir)
        text = wait_for(lambda: lock.is_file() and "trainer" in lock.read_text() and lock.read_text())
        trainer_pid = int(text.splitlines()[1].split()[0])
        pipeline.kill()  # only the pipeline, as when only `make` is killed
        pipeline.wait()
        with pytest.raises(LockedError) as err:
            acquire(run.dir, "second pipeline")
        holders = f"PID {pipeline.pid} (pixsent pipeline, exited) and PID {trainer_pid} (trainer)"
        assert holders in str(err.value), err.value
    finally:
        if trainer_pid is not None:
            os.kill(trainer_pid, signal.SIGKILL)
        pipeline.kill()
    wait_for(lambda: gone(trainer_pid), what="the trainer to exit")
    said = []
    with acquire(run.dir, "third pipeline", say=said.append):
        assert len(said) == 1 and "taking over" in said[0]


def test_5_second_pipeline_waits_for_the_fold_lmdbs_another_builds(tmp_path, capsys):
    """Run folders of one fold share its LMDB folder: a second pipeline waits for the first to build it."""
    from pixsent.workflow.pipeline import _step_lock, lmdb_dir

    cfg, _ = _fold_cfg(tmp_path, "a 0\n", "c 1\n")
    folder = str(lmdb_dir(cfg).resolve())
    holder = subprocess.Popen(
        [PY, "-c", "import sys, time; from pixsent.formats.locks import acquire; "
         f"lock = acquire({folder!r}, 'building'); print('held', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        threading.Timer(1.0, holder.stdin.close).start()  # the builder finishes a second from now
        with _step_lock(cfg, "lmdb"):
            assert holder.wait(timeout=60) == 0  # got the lock only once the builder was done
    finally:
        holder.kill()
        holder.wait()
    assert f"{folder}: waiting for PID {holder.pid} (building) to finish with it" in capsys.readouterr().err


# ---------------------------------------------------------------- 6. weights that do not cover the net


@pytest.fixture
def cut_caffemodel(tmp_path):
    """(net prototxt, a caffemodel of the tiny net cut at the message boundary before its layer ip2)."""
    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine.net import Net

    (tmp_path / "net.prototxt").write_text(TINY_NET)
    full = Net(str(tmp_path / "net.prototxt"), caffe_pb2.TEST).to_proto()
    head = caffe_pb2.NetParameter()
    head.CopyFrom(full)
    while head.layer and head.layer[-1].name != "ip1":
        del head.layer[-1]
    data, cut = full.SerializeToString(), head.SerializeToString()
    assert data.startswith(cut) and len(cut) < len(data)  # a real cut of the file at a layer boundary
    (tmp_path / "cut.caffemodel").write_bytes(cut)
    return tmp_path / "net.prototxt", tmp_path / "cut.caffemodel"


def _said(err: str, weights: Path) -> list[str]:
    return [ln for ln in err.splitlines() if f"Layers with parameters not in {weights}" in ln]


def test_6_weights_missing_a_layer_are_said_at_copy_from(cut_caffemodel, capsys):
    import pixsent.caffe as caffe

    net_file, weights = cut_caffemodel
    net = caffe.Net(str(net_file), caffe.TEST)
    capsys.readouterr()
    net.copy_from(str(weights))
    lines = _said(capsys.readouterr().err, weights)
    assert len(lines) == 1 and lines[0].endswith("left at their initial values: ip2"), lines


def test_6_weights_missing_a_layer_are_said_once_at_train_weights(cut_caffemodel, tmp_path, capsys):
    from pixsent.cli.caffe_tool import CaffeFlags, train

    net_file, weights = cut_caffemodel
    solver = tiny_solver(tmp_path / "run", str(tmp_path / "run" / "snap"), max_iter=1, snapshot=0)
    capsys.readouterr()
    train(CaffeFlags(solver=str(solver), weights=str(weights)))
    lines = _said(capsys.readouterr().err, weights)
    assert len(lines) == 1 and lines[0].endswith(": ip2"), lines


def test_6_weights_covering_the_net_say_nothing(cut_caffemodel, tmp_path, capsys):
    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine.net import Net

    net_file, _ = cut_caffemodel
    net = Net(str(net_file), caffe_pb2.TEST)
    net.save(str(tmp_path / "whole.caffemodel"))
    capsys.readouterr()
    Net(str(net_file), caffe_pb2.TEST).copy_trained_layers_from(str(tmp_path / "whole.caffemodel"))
    assert "Layers with parameters not in" not in capsys.readouterr().err


# ---------------------------------------------------------------- 7. temporaries of killed writers


def test_7_lmdb_temporary_of_a_killed_writer_is_removed_by_the_next(tmp_path):
    listfile = write_images(tmp_path / "images", 30)
    out = tmp_path / "out"
    first = start_slow_convert(tmp_path / "images", listfile, out / "train_lmdb")
    try:
        left = wait_for(lambda: temporaries(out), what="the first writer's temporary")
    finally:
        first.send_signal(signal.SIGKILL)  # kill -9 while it writes
        first.wait()
    assert temporaries(out) == left and str(first.pid) in left[0]
    done = cli("convert_imageset", "--quiet", f"{tmp_path / 'images'}/", listfile, out / "test_lmdb")
    assert done.returncode == 0, done.stderr
    assert f"removed {out / left[0]} (" in done.stderr and f"left by PID {first.pid}" in done.stderr
    assert temporaries(out) == []


KILL_BEFORE_RENAME = """
import os, signal, sys
import pixsent.formats.atomic as atomic
from pixsent.caffe.proto import caffe_pb2
from pixsent.formats.caffemodel import write_caffemodel
atomic.replace_path = lambda tmp, path: os.kill(os.getpid(), signal.SIGKILL)  # kill -9 at this point
write_caffemodel(caffe_pb2.NetParameter(name="x", layer=[caffe_pb2.LayerParameter(name="l")]), sys.argv[1])
"""


def test_7_snapshot_temporary_of_a_killed_trainer_is_removed_by_the_next(tmp_path, capsys):
    from pixsent.cli.caffe_tool import CaffeFlags, train

    snaps = tmp_path / "run" / "snapshots"
    snaps.mkdir(parents=True)
    killed = subprocess.Popen([PY, "-c", KILL_BEFORE_RENAME, str(snaps / "tiny_iter_2.caffemodel")])
    assert killed.wait() == -signal.SIGKILL
    left = temporaries(snaps)
    assert len(left) == 1 and left[0].startswith(".tiny_iter_2.caffemodel.tmp-")
    solver = tiny_solver(tmp_path / "run", str(snaps / "tiny"), max_iter=2, snapshot=0)
    capsys.readouterr()
    train(CaffeFlags(solver=str(solver)))
    err = capsys.readouterr().err
    assert f"removed {snaps / left[0]} (" in err and f"left by PID {killed.pid}, which is no longer" in err
    assert temporaries(snaps) == [] and (snaps / "tiny_iter_2.caffemodel").is_file()


# ---------------------------------------------------------------- 8. one LMDB build per fold content


def test_8_fold_lmdb_is_shared_by_run_folders_and_keyed_by_content(tmp_path):
    from pixsent.recipes.demo import DemoConfig, fold_config, generate_dataset
    from pixsent.workflow.pipeline import lmdb_dir, step_lmdb, step_splits

    dcfg = DemoConfig(out=tmp_path, n_images=20, folds=2, progress=False)
    root = generate_dataset(dcfg)
    configs = [fold_config(dcfg, root, fold=1, runs=tmp_path / f"runs{k}") for k in range(3)]
    configs[2] = replace(configs[2], variant="fc7-2")

    def build(cfg) -> str:
        run = cfg.run_paths()
        run.dir.mkdir(parents=True, exist_ok=True)
        step_splits(cfg, run)
        return step_lmdb(cfg, run)

    data = lmdb_dir(configs[0]) / "train_lmdb" / "data.mdb"
    assert build(configs[0]) == "done"
    built = data.stat().st_mtime_ns
    assert [build(c) for c in configs[1:]] == ["cached", "cached"]  # other runs folders, another variant
    split = root / "splits" / "demo_agrees" / "test1" / "train.txt"
    os.utime(split, ns=(built + 10**9, built + 10**9))  # same bytes, new time
    assert build(configs[1]) == "cached" and data.stat().st_mtime_ns == built
    split.write_text("".join(reversed(split.read_text().splitlines(keepends=True))))  # same ids, new order
    assert build(configs[1]) == "done" and data.stat().st_mtime_ns != built


# ---------------------------------------------------------------- 9. SIGHUP to `make`'s process group


def test_9_trainer_finishes_its_snapshot_pair_when_its_log_pipe_closes(tmp_path):
    """SIGHUP to the group of a pipeline and its trainer: the pipeline dies (its pipe closes), the trainer
    writes its snapshot pairs whole, logs on into train.log and exits."""
    from pixsent.workflow.runs import RunPaths

    run = RunPaths(tmp_path / "runs", "s", "v", "i", 1)
    solver = tiny_solver(run.dir, "snapshots/tiny", max_iter=100000, snapshot=0)
    (run.dir / "snapshots").mkdir()
    cmd = [PY, "-m", "pixsent", "caffe", "train", "-solver", solver.name]
    pipeline = subprocess.Popen(
        [PY, "-c", LOGGED_TRAINER, "unlocked", str(run.root), *cmd], start_new_session=True
    )
    trainer = None
    try:
        wait_for(
            lambda: run.log.is_file() and "Starting Optimization" in run.log.read_text(), 120, "training"
        )
        children = Path(f"/proc/{pipeline.pid}/task/{pipeline.pid}/children").read_text().split()
        trainer = int(children[0])
        time.sleep(0.5)
        os.killpg(pipeline.pid, signal.SIGHUP)
        assert pipeline.wait(timeout=30) == -signal.SIGHUP
        wait_for(lambda: gone(trainer), 120, "the trainer to stop")
    finally:
        for pid in (pipeline.pid, trainer):
            if pid is not None and not gone(pid):
                os.kill(pid, signal.SIGKILL)
    models = sorted(p.stem for p in (run.dir / "snapshots").glob("*.caffemodel"))
    states = sorted(p.stem for p in (run.dir / "snapshots").glob("*.solverstate"))
    assert models and models == states, (models, states)
    log = run.log.read_text()
    assert "output pipe closed" in log and "Optimization stopped early." in log
    assert temporaries(run.dir / "snapshots") == []
