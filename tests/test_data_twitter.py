"""The Twitter images: the committed manifest against ../shared, fetching from both public homes (a local
HTTP server stands in for them), the mirror, and every real image through LMDB building, evaluation and
maps, with unreadable images named."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pixsent.cli import main
from pixsent.errors import DataError
from pixsent.recipes.paper import twitter
from pixsent.recipes.paper.twitter import Item

# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tw(shared_data) -> Path:
    """../shared/data/twitter (images/, ground_truth/, SHA256SUMS)."""
    path = shared_data / "twitter"
    if not (path / "images").is_dir():
        pytest.skip(f"Twitter images not found at {path}")
    return path


@pytest.fixture(scope="module")
def manifest() -> dict[str, str]:
    return {item.name: item.sha256 for item in twitter.read_manifest(twitter.IMAGES_MANIFEST, "images")}


def _some_items(tw: Path, manifest: dict[str, str], n: int) -> list[Item]:
    """The N smallest real images, as manifest items (a few KB each: quick to serve)."""
    names = sorted(manifest, key=lambda name: ((tw / "images" / name).stat().st_size, name))[:n]
    return [Item("images", name, manifest[name]) for name in names]


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves the server's ``files`` (path -> bytes) with ``Range: bytes=N-``; a path in ``cut_once`` is
    answered once with its full Content-Length but only half the body, then the connection is closed."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng:
            start, status = int(rng.removeprefix("bytes=").split("-")[0]), 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if self.path in srv.cut_once:
            srv.cut_once.discard(self.path)
            self.wfile.write(body[start : start + (len(body) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.cut_once, srv.requests = {}, set(), []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def _leftovers(folder: Path) -> list[str]:
    """Temporary names left in FOLDER (atomic writes and .part downloads)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".part")


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ------------------------------------------------------------------------------------- the manifest


def test_manifest_covers_exactly_the_shared_images_and_every_one_matches(tw, manifest):
    names = sorted(os.listdir(tw / "images"))
    assert len(manifest) == 1269 and sorted(manifest) == names
    wrong = [n for n in names if hashlib.sha256((tw / "images" / n).read_bytes()).hexdigest() != manifest[n]]
    assert wrong == []


def test_manifest_is_regenerated_byte_for_byte(tw, tmp_path):
    out = tmp_path / "images.sha256"
    assert twitter.write_manifest(tw / "images", out) == 1269
    assert out.read_bytes() == twitter.IMAGES_MANIFEST.read_bytes()
    assert twitter.write_manifest(tw / "ground_truth", tmp_path / "gt.sha256") == 3
    assert (tmp_path / "gt.sha256").read_bytes() == twitter.GROUND_TRUTH_MANIFEST.read_bytes()


def test_ground_truth_and_split_images_are_all_in_the_manifest(tw, shared_data, manifest):
    from pixsent.recipes.paper.dataset import split_image_ids

    counts = {}
    for item in twitter.read_manifest(twitter.GROUND_TRUTH_MANIFEST, "ground_truth"):
        path = tw / "ground_truth" / item.name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == item.sha256
        ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
        assert set(ids) <= set(manifest)
        counts[item.name] = len(ids)
    assert counts == {
        "twitter_five_agrees.txt": 882,
        "twitter_four_agrees.txt": 1116,
        "twitter_three_agrees.txt": 1269,
    }
    assert len(split_image_ids(shared_data / "splits", ("three",))) == 1265
    assert set(split_image_ids(shared_data / "splits")) <= set(manifest)  # every subset's split files


def test_manifest_rejects_paths(tmp_path):
    bad = tmp_path / "m.sha256"
    bad.write_text(f"{'0' * 64}  ../evil.jpg\n")
    with pytest.raises(DataError, match="not a bare file name"):
        twitter.read_manifest(bad, "images")


# ------------------------------------------------------------------------------------ the GitHub copy


def test_github_copy_file_by_file_names_corrupt_and_missing_and_resumes(tw, manifest, server, tmp_path):
    items = _some_items(tw, manifest, 5)
    good, corrupt, absent, cut, gt = items[0], items[1], items[2], items[3], items[4]
    for item in (good, cut, gt):
        server.files[f"/gh/images/{item.name}"] = (tw / "images" / item.name).read_bytes()
    server.files[f"/gh/images/{corrupt.name}"] = b"\xff\xd8" + b"x" * 500  # not the manifest's bytes
    server.cut_once.add(f"/gh/images/{cut.name}")
    dest = tmp_path / "twitter"
    kw = dict(source="github", github_base=f"{server.url}/gh", items=items, jobs=2, progress=False)

    report = twitter.fetch_twitter(dest, **kw)
    assert report.downloaded == 2 and not report.ok
    assert report.failed == [corrupt.relpath]
    assert sorted(report.missing) == sorted([absent.relpath, cut.relpath])
    lines = "\n".join(report.problem_lines())
    assert f"checksum: {corrupt.relpath} (GitHub copy:" in lines and "sha256 mismatch" in lines
    assert f"missing: {absent.relpath} (GitHub copy:" in lines and "HTTP 404" in lines
    assert "run again to resume" in lines
    assert not (dest / corrupt.relpath).exists() and not (dest / absent.relpath).exists()
    part = dest / "images" / f"{cut.name}.part"
    assert 0 < part.stat().st_size < (tw / "images" / cut.name).stat().st_size  # the half that came

    server.requests.clear()
    half = part.stat().st_size
    again = twitter.fetch_twitter(dest, **kw)
    assert again.kept == 2 and again.downloaded == 1
    assert (f"/gh/images/{cut.name}", f"bytes={half}-") in server.requests  # resumed, not restarted
    assert not any(r[0].endswith(good.name) for r in server.requests)  # present and valid: not asked for
    assert (dest / cut.relpath).read_bytes() == (tw / "images" / cut.name).read_bytes()
    assert sorted(again.unresolved) == sorted([corrupt.relpath, absent.relpath])
    assert _leftovers(dest / "images") == []


# ----------------------------------------------------------------------------- the original archive


def test_original_archive_resumes_then_only_verified_members_are_taken(tw, manifest, server, tmp_path):
    items = _some_items(tw, manifest, 4)
    ok1, ok2, corrupt, absent = items
    members = {f"twitter/images/{i.name}": (tw / "images" / i.name).read_bytes() for i in (ok1, ok2)}
    members[f"twitter/images/{corrupt.name}"] = b"not the image"
    members["twitter/readme.txt"] = b"other files are ignored"
    server.files["/twitter.zip"] = _zip(members)
    server.cut_once.add("/twitter.zip")
    dest = tmp_path / "tw"
    kw = dict(source="original", archive_urls=[f"{server.url}/twitter.zip"], items=items, progress=False)

    first = twitter.fetch_twitter(dest, **kw)
    assert first.extracted == 0 and len(first.missing) == 4
    assert "download incomplete" in first.sources[0] and (dest / "twitter.zip.part").is_file()

    server.requests.clear()
    second = twitter.fetch_twitter(dest, **kw)
    assert server.requests == [("/twitter.zip", f"bytes={len(server.files['/twitter.zip']) // 2}-")]
    assert second.extracted == 2 and second.failed == [corrupt.relpath] and second.missing == [absent.relpath]
    lines = "\n".join(second.problem_lines())
    assert f"checksum: {corrupt.relpath} (original archive member twitter/images/{corrupt.name}" in lines
    assert f"missing: {absent.relpath} (not in original archive twitter.zip)" in lines
    assert sorted(p.name for p in (dest / "images").iterdir()) == sorted([ok1.name, ok2.name])


def test_auto_takes_what_the_archive_lacks_from_github(tw, manifest, server, tmp_path):
    items = _some_items(tw, manifest, 3)
    server.files["/twitter.zip"] = _zip({items[0].name: (tw / "images" / items[0].name).read_bytes()})
    for item in items[1:]:
        server.files[f"/gh/images/{item.name}"] = (tw / "images" / item.name).read_bytes()
    report = twitter.fetch_twitter(
        tmp_path / "tw",
        archive_urls=[f"{server.url}/twitter.zip"],
        github_base=f"{server.url}/gh",
        items=items,
        progress=False,
    )
    assert report.ok and report.extracted == 1 and report.downloaded == 2


def test_html_page_instead_of_archive_is_dropped_and_github_used(tw, manifest, server, tmp_path):
    items = _some_items(tw, manifest, 2)
    server.files["/twitter.zip"] = b"<html>moved</html>"
    for item in items:
        server.files[f"/gh/images/{item.name}"] = (tw / "images" / item.name).read_bytes()
    dest = tmp_path / "tw"
    report = twitter.fetch_twitter(
        dest,
        archive_urls=[f"{server.url}/twitter.zip"],
        github_base=f"{server.url}/gh",
        items=items,
        progress=False,
    )
    assert report.ok and report.downloaded == 2 and "not a readable zip" in report.sources[0]
    assert not (dest / "twitter.zip").exists()  # the next run downloads it afresh


# ------------------------------------------------------------------------------------------- mirror


def test_mirror_layouts_and_a_corrupt_mirror_copy(tw, manifest, tmp_path):
    items = _some_items(tw, manifest, 3)
    flat = tmp_path / "flat"  # the files directly in the folder
    flat.mkdir()
    for item in items:
        shutil.copy(tw / "images" / item.name, flat / item.name)
    (flat / items[2].name).write_bytes(b"damaged")
    report = twitter.fetch_twitter(tmp_path / "a", mirror=flat, offline=True, items=items, progress=False)
    assert report.copied == 2 and report.failed == [items[2].relpath]
    assert (
        f"checksum: {items[2].relpath} (mirror copy {flat / items[2].name}: sha256"
        in report.problem_lines()[0]
    )
    # a file already in DEST that fails its checksum is named too, and replaced once a good copy is found
    dest = tmp_path / "b"
    (dest / "images").mkdir(parents=True)
    (dest / items[0].relpath).write_bytes(b"stale")
    assert twitter.fetch_twitter(dest, offline=True, items=items[:1], progress=False).failed == [
        items[0].relpath
    ]
    fixed = twitter.fetch_twitter(dest, mirror=tw, offline=True, items=items[:1], progress=False)
    assert fixed.ok and fixed.copied == 1


def test_data_fetch_from_the_shared_mirror(tw, shared_data, tmp_path, capsys):
    """All 1272 files (1269 images, 3 lists) verified from ../shared/data/twitter (images/ inside), offline;
    a second call keeps them all."""
    dest = tmp_path / "twitter"
    argv = ["data", "fetch", "--dest", str(dest), "--mirror", str(tw), "--offline", "--quiet"]
    rc = main([*argv, "--splits", str(shared_data / "splits")])
    captured = capsys.readouterr()
    assert rc == 0 and captured.out == "", captured.out
    assert "1272 of 1272 files verified" in captured.err and "1272 from the mirror" in captured.err
    assert len(os.listdir(dest / "images")) == 1269 and len(os.listdir(dest / "ground_truth")) == 3
    assert (
        main(["data", "fetch", "--dest", str(dest), "--offline", "--quiet", "--splits", str(tmp_path)]) == 0
    )
    assert "1272 already there" in capsys.readouterr().err


def test_shared_data_folder_as_mirror(tw, shared_data, manifest, tmp_path):
    """make's default MIRROR, ../shared/data, holds them under twitter/images and twitter/ground_truth."""
    items = _some_items(tw, manifest, 3) + twitter.read_manifest(
        twitter.GROUND_TRUTH_MANIFEST, "ground_truth"
    )
    report = twitter.fetch_twitter(
        tmp_path / "tw", mirror=shared_data, offline=True, items=items, progress=False
    )
    assert report.ok and report.copied == 6


def test_data_fetch_names_every_missing_file_and_exits_1(tw, shared_data, tmp_path, capsys):
    dest = tmp_path / "twitter"
    shutil.copytree(tw / "ground_truth", dest / "ground_truth")
    (dest / "images").mkdir()
    names = sorted(os.listdir(tw / "images"))
    for name in names[9:]:
        os.symlink(tw / "images" / name, dest / "images" / name)
    argv = ["data", "fetch", "--dest", str(dest), "--offline", "--quiet"]
    assert main([*argv, "--splits", str(shared_data / "splits")]) == 1
    out = capsys.readouterr()
    missing = sorted(line.split()[1] for line in out.out.splitlines() if line.startswith("missing: "))
    assert missing == [f"images/{n}" for n in names[:9]] and "9 missing, 0 failing" in out.err
    split_lines = [line for line in out.out.splitlines() if line.startswith("split image missing: ")]
    assert split_lines and all("_agrees/test" in line and ".txt:" in line for line in split_lines)


# ---------------------------------------------------------------- every real image: LMDB, evaluation, maps


def test_lmdb_of_all_1269_real_images_and_every_record_decodes(tw, tmp_path):
    from pixsent.caffe.proto import caffe_pb2
    from pixsent.data.images import read_image
    from pixsent.data.imageset import convert_imageset
    from pixsent.formats.lmdb_io import LMDBReader

    listfile = tw / "ground_truth" / "twitter_three_agrees.txt"
    labels = dict(line.split() for line in listfile.read_text().splitlines() if line.strip())
    report = convert_imageset(
        tw / "images", listfile, tmp_path / "db", resize=(256, 256), workers=2, progress=False
    )
    assert report.written == 1269 and report.skipped == []
    datum = caffe_pb2.Datum()
    seen = []
    for k, (key, value) in enumerate(LMDBReader(tmp_path / "db")):
        datum.ParseFromString(value)
        name = key.decode().split("_", 1)[1]
        assert (datum.channels, datum.height, datum.width) == (3, 256, 256) and not datum.encoded
        assert len(datum.data) == 3 * 256 * 256 and datum.label == int(labels[name])
        if k % 50 == 0:  # the pixels are the image's, resized as Caffe does (exact: same OpenCV calls)
            pixels = np.frombuffer(datum.data, np.uint8).reshape(3, 256, 256).transpose(1, 2, 0)
            np.testing.assert_array_equal(pixels, read_image(tw / "images" / name, 256, 256))
        seen.append(name)
    assert sorted(seen) == sorted(labels) and len(seen) == 1269


def test_every_real_image_decodes_for_evaluation_and_maps(tw):
    """The decoder of evaluation and maps (pycaffe's load_image) reads all 1269 real images."""
    from pixsent.workflow import evaluate as ev

    listfile = tw / "ground_truth" / "twitter_three_agrees.txt"
    entries = ev.read_list_lines(listfile)
    assert len(entries) == 1269 and ev.unreadable_images(tw / "images", listfile, entries) == []


# ------------------------------------------------------------------- unreadable images in a real list

REAL_LIST = "five_agrees/test1/test.txt"


@pytest.fixture
def damaged(tw, shared_data, tmp_path) -> dict:
    """Every real image (links to ../shared), two of a real test list damaged: one cut to its first 200
    bytes (no longer decodable), one removed; with their line numbers in the list."""
    listfile = shared_data / "splits" / REAL_LIST
    entries = [line.split() for line in listfile.read_text().splitlines()]
    root = tmp_path / "images"
    root.mkdir()
    for name in os.listdir(tw / "images"):
        os.symlink(tw / "images" / name, root / name)
    corrupt, gone = entries[2][0], entries[5][0]
    (root / corrupt).unlink()
    (root / corrupt).write_bytes((tw / "images" / corrupt).read_bytes()[:200])  # JPEG header only
    (root / gone).unlink()
    return {"list": listfile, "root": root, "corrupt": (3, corrupt), "gone": (6, gone), "n": len(entries)}


def test_convert_imageset_names_unreadable_and_missing_real_images(damaged, tmp_path, capsys):
    from pixsent.data.imageset import convert_imageset

    listfile = damaged["list"]
    report = convert_imageset(
        damaged["root"], listfile, tmp_path / "db", resize=(32, 32), workers=2, progress=False
    )
    (c_line, corrupt), (g_line, gone) = damaged["corrupt"], damaged["gone"]
    assert report.written == damaged["n"] - 2
    assert report.skipped == [f"{listfile}:{c_line}: {corrupt}", f"{listfile}:{g_line}: {gone}"]
    err = capsys.readouterr().err
    assert f"skipped unreadable image {corrupt} ({listfile}:{c_line})" in err
    assert f"skipped missing image {gone} ({listfile}:{g_line})" in err


def test_evaluation_names_every_unreadable_and_missing_real_image(damaged, tmp_path):
    from pixsent.workflow import evaluate as ev

    with pytest.raises(DataError) as err:  # raised before the net is opened: no weights needed
        ev.evaluate_list(tmp_path / "none.prototxt", tmp_path / "none.caffemodel", damaged["root"],
                         damaged["list"], ev.EvalConfig(progress=False))  # fmt: skip
    msg = str(err.value)
    (c_line, corrupt), (g_line, gone) = damaged["corrupt"], damaged["gone"]
    assert "2 test image(s) missing or unreadable" in msg
    assert f"{damaged['list']}:{c_line}: {damaged['root'] / corrupt}: cannot decode image" in msg
    assert f"{damaged['list']}:{g_line}: {gone}: not found under {damaged['root']}" in msg


def test_fold_lmdb_step_names_skipped_real_images_also_when_cached(damaged, shared_data, tmp_path, capsys):
    from pixsent.workflow.pipeline import FoldConfig, read_stamp, step_lmdb, step_splits

    cfg = FoldConfig(
        runs=tmp_path / "runs",
        images=damaged["root"],
        splits=shared_data / "splits",
        lmdb_root=tmp_path / "lmdb",
        workers=2,
        progress=False,
        extra={"image_size": 16},
    )
    run = cfg.run_paths()
    step_splits(cfg, run)
    assert step_lmdb(cfg, run) == "done"
    (c_line, corrupt), (g_line, gone) = damaged["corrupt"], damaged["gone"]
    test_list = run.dir / "test.txt"  # the run's copy of the split file: same lines
    assert test_list.read_text() == damaged["list"].read_text()
    expected = [f"{test_list}:{c_line}: {corrupt}", f"{test_list}:{g_line}: {gone}"]
    assert read_stamp(run, "lmdb").info["skipped"] == expected
    err = capsys.readouterr().err
    assert "2 image(s) missing or unreadable" in err and all(f"  {line}" in err for line in expected)
    assert step_lmdb(cfg, run) == "cached"  # a reused build names them again
    err = capsys.readouterr().err
    assert all(f"  {line}" in err for line in expected)
    from pixsent.formats.lmdb_io import LMDBReader

    assert len(LMDBReader(tmp_path / "lmdb/five_agrees/fold1/test_lmdb")) == damaged["n"] - 2


def test_maps_name_an_unreadable_real_image_and_map_the_others(golden, damaged, tmp_path):
    from pixsent.analysis import maps

    root = damaged["root"]
    good = sorted(p for p in root.iterdir() if p.name != damaged["corrupt"][1])[:2]
    corrupt = root / damaged["corrupt"][1]
    weights, cfg = golden / "mini_caffenet/fullconv.caffemodel", maps.MapConfig(size=227)
    with pytest.raises(DataError, match="1 image\\(s\\) not found"):
        maps.run_maps(
            [good[0], root / damaged["gone"][1]], weights, None, tmp_path / "m0", cfg, progress=False
        )
    out = tmp_path / "maps"
    with pytest.raises(DataError) as err:
        maps.run_maps(
            [good[0], corrupt, good[1]], weights, None, out, cfg, grid=out / "grid.png", progress=False
        )
    assert "1 image(s) unreadable" in str(err.value) and f"{corrupt}: cannot decode image" in str(err.value)
    assert sorted(p.name for p in out.glob("*_overlay.png")) == sorted(f"{p.stem}_overlay.png" for p in good)
    assert (out / "grid.png").is_file()


def test_mirror_archive_gives_what_it_holds_and_a_bad_one_is_reported(tw, manifest, tmp_path):
    items = _some_items(tw, manifest, 4)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    held = {f"twitter/images/{i.name}": (tw / "images" / i.name).read_bytes() for i in items[:2]}
    (mirror / twitter.TWITTER_ARCHIVE_NAME).write_bytes(_zip(held))
    dest = tmp_path / "tw"
    report = twitter.fetch_twitter(dest, mirror=mirror, offline=True, items=items, progress=False)
    assert report.extracted == 2 and report.missing == [i.relpath for i in items[2:]]
    assert "not in mirror archive twitter.zip" in report.problem_lines()[0]
    assert _leftovers(dest / "images") == [] and sorted(os.listdir(dest)) == ["images"]
    (mirror / twitter.TWITTER_ARCHIVE_NAME).write_bytes(b"not a zip")
    bad = twitter.fetch_twitter(tmp_path / "tw2", mirror=mirror, offline=True, items=items, progress=False)
    assert "not a readable zip archive" in bad.sources[0] and len(bad.missing) == 4
    assert not (tmp_path / "tw2").exists()  # nothing written


def test_github_gives_up_when_the_host_cannot_be_reached(tw, manifest, tmp_path, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port on which nothing listens: every connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(twitter, "UNREACHABLE_IN_A_ROW", 3)
    items = _some_items(tw, manifest, 6)
    report = twitter.fetch_twitter(tmp_path / "tw", source="github", github_base=f"http://127.0.0.1:{port}",
                                   items=items, jobs=1, progress=False)  # fmt: skip
    assert report.missing == [i.relpath for i in items] and "3 downloads in a row failed" in report.sources[0]
    lines = report.problem_lines()
    assert all("cannot download" in line for line in lines[:3])
    assert all("GitHub copy not tried (host unreachable)" in line for line in lines[3:])
