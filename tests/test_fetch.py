"""Downloads from a local HTTP server (with and without Range): resume, checksums, mirror, fallback."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from pixsent.errors import DataError
from pixsent.fetch import download, fetch_any, file_digest

PAYLOAD = bytes(range(256)) * 4000  # 1,024,000 bytes
SHA1 = hashlib.sha1(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /model.bin; honours ``Range: bytes=N-`` unless the server's ``ranges`` is off."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.requests.append((self.path, self.headers.get("Range")))
        if self.path != "/model.bin":
            self.send_error(404)
            return
        body, status = PAYLOAD, 200
        rng = self.headers.get("Range")
        if rng and self.server.ranges:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(PAYLOAD):
                self.send_error(416)
                return
            body, status = PAYLOAD[start:], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header(
                "Content-Range", f"bytes {len(PAYLOAD) - len(body)}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
            )
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(params=[True, False], ids=["ranges", "no-ranges"])
def server(request):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.ranges = request.param
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_download_verifies_and_renames(server, tmp_path):
    dest = download(f"{server.url}/model.bin", tmp_path / "m.bin", sha1=SHA1, sha256=SHA256, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["m.bin"]
    # an existing, verified file is not downloaded again
    download(f"{server.url}/model.bin", dest, sha1=SHA1, progress=False)
    assert len(server.requests) == 1


def test_resume_from_partial_file(server, tmp_path):
    dest = tmp_path / "m.bin"
    Path(str(dest) + ".part").write_bytes(PAYLOAD[:300_000])
    download(f"{server.url}/model.bin", dest, sha256=SHA256, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/model.bin", "bytes=300000-")]


def test_resume_with_complete_partial_file(server, tmp_path):
    dest = tmp_path / "m.bin"
    Path(str(dest) + ".part").write_bytes(PAYLOAD)
    download(f"{server.url}/model.bin", dest, sha256=SHA256, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    dest = tmp_path / "m.bin"
    wrong = "0" * 40
    with pytest.raises(DataError) as err:
        download(f"{server.url}/model.bin", dest, sha1=wrong, progress=False)
    msg = str(err.value)
    assert str(dest) in msg and wrong in msg and SHA1 in msg
    assert list(tmp_path.iterdir()) == []


def test_mirror_is_used_first(server, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "model.bin").write_bytes(PAYLOAD)
    (mirror / "other.bin").write_bytes(PAYLOAD[::-1])
    dest = download(f"{server.url}/model.bin", tmp_path / "a.bin", sha1=SHA1, mirror=mirror, progress=False)
    assert dest.read_bytes() == PAYLOAD and server.requests == []
    dest = download(
        f"{server.url}/x", tmp_path / "b.bin", mirror=mirror, mirror_name="other.bin", progress=False
    )
    assert dest.read_bytes() == PAYLOAD[::-1]


def test_fetch_any_falls_back(server, tmp_path):
    dest = fetch_any([f"{server.url}/missing.bin", f"{server.url}/model.bin"], tmp_path / "m.bin", sha1=SHA1,
                     progress=False)  # fmt: skip
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(DataError, match="HTTP 404"):
        fetch_any([f"{server.url}/missing.bin"], tmp_path / "n.bin", progress=False)


def test_file_digest(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(PAYLOAD)
    assert file_digest(path, "sha1") == SHA1 and file_digest(path) == SHA256


def test_local_paths_and_file_urls(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    assert download(str(src), tmp_path / "a.bin", sha1=SHA1, progress=False).read_bytes() == PAYLOAD
    assert download(src.as_uri(), tmp_path / "b.bin", sha256=SHA256, progress=False).read_bytes() == PAYLOAD
    with pytest.raises(DataError, match="file not found"):
        download(str(tmp_path / "none.bin"), tmp_path / "c.bin", progress=False)
    with pytest.raises(DataError, match="cannot download"):
        download("gopher2://x/y.bin", tmp_path / "d.bin", progress=False)
