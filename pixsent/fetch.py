"""Downloads of models and data: local mirror first, then resumable HTTP(S) with checksum verification.

The file is streamed into ``DEST.part`` (resumed with a Range request when a partial file exists,
restarted when the server ignores Range), verified against sha1/sha256 when given, and only then
renamed onto ``DEST``; a checksum mismatch deletes the download and raises DataError.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from pixsent.errors import ChecksumError, DataError, UnreachableError

CHUNK = 1 << 20


def file_digest(path: str | os.PathLike[str], algo: str = "sha256") -> str:
    """Hex digest of a file's contents (read in 1 MiB chunks)."""
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected(sha1: str | None, sha256: str | None) -> list[tuple[str, str]]:
    """The (algorithm, lowercase hex digest) pairs to check."""
    return [(algo, digest.lower()) for algo, digest in (("sha1", sha1), ("sha256", sha256)) if digest]


def _verify(path: Path, dest: Path, checks: list[tuple[str, str]]) -> None:
    """Raise ChecksumError (after deleting ``path``) when a digest differs."""
    for algo, want in checks:
        got = file_digest(path, algo)
        if got != want:
            path.unlink(missing_ok=True)
            raise ChecksumError(f"{dest}: {algo} mismatch: expected {want}, got {got}")


def _url_name(url: str) -> str:
    """The file name at the end of a URL's path."""
    return unquote(Path(urlparse(url).path).name)


def _local_path(url: str) -> Path | None:
    """The filesystem path of a ``file://`` URL or a plain path; None for network URLs."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and url[1:3] in (":\\", ":/")):  # Windows drive
        return Path(url)
    return None


def _progress(total: int | None, initial: int, name: str, enabled: bool):
    """A tqdm byte counter on stderr (a no-op object when disabled)."""
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
        desc=name, file=sys.stderr, disable=not enabled, leave=False,
    )  # fmt: skip


def _http_get(url: str, part: Path, *, resume: bool, progress: bool, timeout: float) -> None:
    """Stream ``url`` into ``part``, continuing an existing partial file when the server honours Range."""
    have = part.stat().st_size if (resume and part.exists()) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "pixsent-fetch"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the partial file is already complete
            return
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UnreachableError(f"{url}: cannot download ({getattr(exc, 'reason', exc)})") from None
    except ValueError as exc:
        raise DataError(f"{url}: cannot download ({exc})") from None
    with response:
        partial = response.status == 206
        if not partial:
            have = 0  # server ignored Range (or nothing to resume): start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            open(part, "ab" if partial else "wb") as out,
            _progress(total, have, _url_name(url), progress) as bar,
        ):
            try:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, TimeoutError, http.client.HTTPException) as exc:  # IncompleteRead (chunked)
                raise DataError(f"{url}: download interrupted ({exc}); run again to resume") from None
    if total is not None and part.stat().st_size != total:
        raise DataError(
            f"{url}: download incomplete ({part.stat().st_size} of {total} bytes); run again to resume"
        )


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha1: str | None = None,
    sha256: str | None = None,
    mirror: str | os.PathLike[str] | None = None,
    mirror_name: str | None = None,
    resume: bool = True,
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Fetch ``url`` to ``dest`` (mirror folder first), verify the checksums, return ``dest``.

    An existing ``dest`` that passes the checksums (or any existing ``dest`` when none is given) is kept.
    """
    dest = Path(dest)
    checks = _expected(sha1, sha256)
    if dest.exists() and all(file_digest(dest, algo) == want for algo, want in checks):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    source = Path(mirror) / (mirror_name or _url_name(url)) if mirror else None
    local = _local_path(url)
    if source is not None and source.is_file():
        shutil.copyfile(source, part)
    elif local is not None:
        if not local.is_file():
            raise DataError(f"{url}: file not found")
        shutil.copyfile(local, part)
    else:
        _http_get(url, part, resume=resume, progress=progress, timeout=timeout)
    _verify(part, dest, checks)
    os.replace(part, dest)
    return dest


def fetch_any(urls: Sequence[str], dest: str | os.PathLike[str], **kwargs) -> Path:
    """``download`` from the first URL that works; DataError listing every failure when none does.

    A checksum mismatch moves on to the next URL as well (a mirror may hold a different file).
    """
    if not urls:
        raise DataError(f"{dest}: no URL to download from")
    errors: list[str] = []
    for url in urls:
        try:
            return download(url, dest, **kwargs)
        except DataError as exc:
            errors.append(str(exc))
    raise DataError(f"{dest}: every source failed: " + "; ".join(errors))
