"""The Twitter images (You et al. 2015) from either public home, each file checked against a manifest.

The manifests beside this module list what the dataset is: ``twitter_images.sha256`` (the 1269 JPEGs) and
``twitter_ground_truth.sha256`` (the five/four/three-agree label lists), one ``sha256  name`` line per file,
made once from a complete copy by ``write_manifest`` (`pixsent data manifest`). ``fetch_twitter`` fills
DEST/images and DEST/ground_truth, taking for each file still missing or wrong, in this order: the copy
already in DEST, a mirror folder (the files directly, or under images/ and ground_truth/, or under
twitter/; a twitter.zip there counts as the archive), the original page's zip archive (resumable download;
only members named in a manifest are taken, matched by file name) and the public GitHub copy file by file
(resumable, several at a time). Nothing reaches its final name unverified: every file is written under a
temporary name and renamed once its sha256 matches. The report names every file still missing or failing
its checksum, with what each source said.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from pixsent.errors import ChecksumError, DataError, UnreachableError
from pixsent.recipes.paper.dataset import read_sha256sums, sha256_of

HERE = Path(__file__).resolve().parent
IMAGES_MANIFEST = HERE / "twitter_images.sha256"
GROUND_TRUTH_MANIFEST = HERE / "twitter_ground_truth.sha256"
SOURCES = ("auto", "original", "github")
# The paper's README points to the DeepSent project page for the images; its archive is tried first
# from there, then from the Wayback Machine copy of the same address (the original host is often down).
TWITTER_PAGE = "https://www.cs.rochester.edu/u/qyou/DeepSent/deepsentiment.html"
TWITTER_ARCHIVE_URLS = (
    "https://www.cs.rochester.edu/u/qyou/DeepSent/twitter.zip",
    "http://web.archive.org/web/2017/https://www.cs.rochester.edu/u/qyou/DeepSent/twitter.zip",
)
TWITTER_ARCHIVE_NAME = "twitter.zip"
# The public GitHub copy: <base>/images/<name> and <base>/ground_truth/<name>.
GITHUB_BASE = "https://raw.githubusercontent.com/johnwsh/twitterDataset/main"
UNREACHABLE_IN_A_ROW = 16  # GitHub downloads that found no host, in a row, before the rest are not tried


@dataclass(frozen=True)
class Item:
    """One file of the dataset: its folder under DEST (images or ground_truth), name and sha256."""

    folder: str
    name: str
    sha256: str

    @property
    def relpath(self) -> str:
        return f"{self.folder}/{self.name}"


def read_manifest(path: str | Path, folder: str) -> list[Item]:
    """The items of one manifest (``sha256  name`` lines; names are bare file names)."""
    items = []
    for name, digest in read_sha256sums(path).items():
        if "/" in name or "\\" in name or name in (".", ".."):
            raise DataError(f"{path}: {name!r} is not a bare file name")
        items.append(Item(folder, name, digest))
    return items


def dataset_items() -> list[Item]:
    """Every file of the dataset: the 1269 images, then the three ground-truth lists."""
    return read_manifest(IMAGES_MANIFEST, "images") + read_manifest(GROUND_TRUTH_MANIFEST, "ground_truth")


def write_manifest(folder: str | Path, out: str | Path) -> int:
    """Write OUT (atomically) with ``sha256  name`` for every file directly in FOLDER, sorted by name, as
    sha256sum prints them; hidden files and ``.part`` downloads are left out. Returns the line count."""
    from pixsent.formats.atomic import atomic_write_text

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix != ".part"
    )
    if not files:
        raise DataError(f"{folder}: no files to list")
    atomic_write_text(out, "".join(f"{sha256_of(p)}  {p.name}\n" for p in files))
    return len(files)


@dataclass
class FetchReport:
    """What ``fetch_twitter`` did, and every file still missing or failing its checksum (with why)."""

    dest: Path
    total: int = 0
    kept: int = 0
    copied: int = 0
    extracted: int = 0
    downloaded: int = 0
    sources: list[str] = field(default_factory=list)  # a whole source failing (e.g. no archive)
    notes: dict[str, list[str]] = field(default_factory=dict)  # relpath -> what each source said
    bad: set[str] = field(default_factory=set)  # relpaths for which some copy failed its checksum
    unresolved: list[str] = field(default_factory=list)  # relpaths still missing or wrong, manifest order

    def note(self, item: Item, text: str, *, bad: bool = False) -> None:
        self.notes.setdefault(item.relpath, []).append(text)
        if bad:
            self.bad.add(item.relpath)

    @property
    def missing(self) -> list[str]:
        return [r for r in self.unresolved if r not in self.bad]

    @property
    def failed(self) -> list[str]:
        return [r for r in self.unresolved if r in self.bad]

    @property
    def ok(self) -> bool:
        return not self.unresolved

    def problem_lines(self) -> list[str]:
        """One line per file still missing or failing its checksum, naming it and what each source said."""
        return [
            f"{'checksum' if r in self.bad else 'missing'}: {r} "
            f"({'; '.join(self.notes.get(r) or ['not in the folder; no source tried'])})"
            for r in self.unresolved
        ]

    def summary(self) -> str:
        got = self.total - len(self.unresolved)
        how = f"{self.kept} already there, {self.copied} from the mirror, {self.extracted} from the zip "
        how += f"archive, {self.downloaded} from GitHub"
        return (
            f"twitter: {got} of {self.total} files verified in {self.dest} ({how}); "
            f"{len(self.missing)} missing, {len(self.failed)} failing their checksum"
        )


def _put_copy(source: Path, target: Path) -> None:
    """Copy SOURCE to TARGET under a temporary name, then rename."""
    from pixsent.formats.atomic import atomic_path

    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _put_bytes(data: bytes, target: Path) -> None:
    from pixsent.formats.atomic import atomic_path

    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def _mirror_candidates(mirror: Path, item: Item) -> list[Path]:
    """Where a mirror folder may hold ITEM: under its folder name, directly, or under twitter/."""
    return [mirror / item.folder / item.name, mirror / item.name, mirror / "twitter" / item.relpath]


def _from_mirror(todo: list[Item], mirror: Path, dest: Path, report: FetchReport, bar) -> list[Item]:
    """Copy every verified mirror file; return the items still to get."""
    left = []
    for item in todo:
        found = [p for p in _mirror_candidates(mirror, item) if p.is_file()]
        for path in found:
            got = sha256_of(path)
            if got == item.sha256:
                _put_copy(path, dest / item.relpath)
                report.copied += 1
                bar.update()
                break
            report.note(item, f"mirror copy {path}: sha256 {got} differs from the manifest", bad=True)
        else:
            if not found:
                report.note(item, f"not in mirror {mirror}")
            left.append(item)
    return left


def _from_archive(
    archive: Path, todo: list[Item], dest: Path, report: FetchReport, bar, label: str
) -> tuple[list[Item], bool]:
    """Extract the verified members of ARCHIVE named like TODO's items; (items still to get, readable)."""
    by_name = {item.name: item for item in todo}
    done: set[str] = set()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        report.sources.append(f"{label} {archive}: not a readable zip archive ({exc})")
        return todo, False
    with zf:
        for info in zf.infolist():
            if info.is_dir() or "__MACOSX" in info.filename:
                continue
            item = by_name.get(PurePosixPath(info.filename).name)
            if item is None or item.name in done:
                continue
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, zlib.error, OSError) as exc:
                report.note(item, f"{label} member {info.filename} unreadable ({exc})")
                continue
            got = hashlib.sha256(data).hexdigest()
            if got != item.sha256:
                why = f"{label} member {info.filename}: sha256 {got} differs from the manifest"
                report.note(item, why, bad=True)
                continue
            _put_bytes(data, dest / item.relpath)
            done.add(item.name)
            report.extracted += 1
            bar.update()
    left = [item for item in todo if item.name not in done]
    for item in left:
        if item.relpath not in report.bad:
            report.note(item, f"not in {label} {archive.name}")
    return left, True


def _mirror_archive(mirror: Path) -> Path | None:
    for cand in (mirror / TWITTER_ARCHIVE_NAME, mirror / "twitter" / TWITTER_ARCHIVE_NAME):
        if cand.is_file():
            return cand
    return None


def _from_original(
    todo: list[Item],
    dest: Path,
    urls: Sequence[str],
    report: FetchReport,
    bar,
    progress: bool,
    timeout: float,
) -> list[Item]:
    """Download (resuming) the original page's archive into DEST and extract what it holds."""
    from pixsent.fetch import fetch_any

    archive = dest / TWITTER_ARCHIVE_NAME
    try:
        fetch_any(list(urls), archive, progress=progress, timeout=timeout)
    except DataError as exc:
        report.sources.append(f"original page: {exc}")
        for item in todo:
            report.note(item, "original archive not downloaded")
        return todo
    left, readable = _from_archive(archive, todo, dest, report, bar, "original archive")
    if not readable:
        archive.unlink(missing_ok=True)  # e.g. an HTML error page saved as twitter.zip: download it anew
        for item in todo:
            report.note(item, "original archive unreadable")
    return left


def github_url(item: Item, base: str = GITHUB_BASE) -> str:
    """The GitHub copy's raw URL of ITEM."""
    return f"{base.rstrip('/')}/{item.folder}/{quote(item.name)}"


def _from_github(
    todo: list[Item], dest: Path, base: str, report: FetchReport, bar, jobs: int, timeout: float
) -> list[Item]:
    """Download every item from the GitHub copy, JOBS at a time; each resumes its ``.part`` file and is
    renamed only once verified (pixsent.fetch.download). After UNREACHABLE_IN_A_ROW downloads in a row
    that could not reach the host (no network), the rest are not tried."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from pixsent.fetch import download

    def get(item: Item) -> None:
        url = github_url(item, base)
        download(url, dest / item.relpath, sha256=item.sha256, progress=False, timeout=timeout)

    failed: list[Item] = []
    queue = iter(todo)
    pending: dict = {}
    streak, gave_up = 0, False
    pool = ThreadPoolExecutor(max(1, jobs))

    def submit_next() -> None:
        item = next(queue, None)
        if item is not None:
            pending[pool.submit(get, item)] = item

    try:
        for _ in range(max(1, jobs)):
            submit_next()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                try:
                    future.result()
                except UnreachableError as exc:
                    report.note(item, f"GitHub copy: {exc}")
                    failed.append(item)
                    streak += 1
                    if streak >= UNREACHABLE_IN_A_ROW and not gave_up:
                        gave_up = True
                        report.sources.append(
                            f"GitHub copy: {streak} downloads in a row failed ({exc}); gave up"
                        )
                except ChecksumError as exc:
                    report.note(item, f"GitHub copy: {exc}", bad=True)
                    failed.append(item)
                    streak = 0
                except DataError as exc:
                    report.note(item, f"GitHub copy: {exc}")
                    failed.append(item)
                    streak = 0
                else:
                    report.downloaded += 1
                    bar.update()
                    streak = 0
                if not gave_up:
                    submit_next()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for item in queue:  # left untried after giving up
        report.note(item, "GitHub copy not tried (host unreachable)")
        failed.append(item)
    order = {item.relpath: k for k, item in enumerate(todo)}
    return sorted(failed, key=lambda item: order[item.relpath])


def fetch_twitter(
    dest: str | Path,
    *,
    source: str = "auto",
    mirror: str | Path | None = None,
    offline: bool = False,
    archive_urls: Sequence[str] = TWITTER_ARCHIVE_URLS,
    github_base: str = GITHUB_BASE,
    items: Sequence[Item] | None = None,
    jobs: int = 8,
    timeout: float = 60,
    progress: bool = True,
) -> FetchReport:
    """Put every manifest file, verified, under DEST (see the module docstring for the order of sources).

    SOURCE picks the network homes: ``original`` (the archive), ``github`` (file by file) or ``auto`` (the
    archive, then GitHub for whatever it lacked); OFFLINE uses DEST and the mirror only. Never raises for
    a missing or wrong file: the report lists them.
    """
    from tqdm import tqdm

    if source not in SOURCES:
        raise DataError(f"--source {source}: choose from {', '.join(SOURCES)}")
    dest = Path(dest)
    items = dataset_items() if items is None else list(items)
    report = FetchReport(dest, total=len(items))
    todo = []
    for item in items:
        target = dest / item.relpath
        if target.is_file():
            got = sha256_of(target)
            if got == item.sha256:
                report.kept += 1
                continue
            report.note(item, f"{target}: sha256 {got} differs from the manifest", bad=True)
        todo.append(item)
    bar = tqdm(
        total=len(items), initial=report.kept, desc="twitter data", unit="file", disable=not progress,
        file=sys.stderr,
    )  # fmt: skip
    with bar:
        if todo and mirror is not None:
            mirror = Path(mirror)
            if not mirror.is_dir():
                raise DataError(f"--mirror {mirror}: folder not found")
            todo = _from_mirror(todo, mirror, dest, report, bar)
            archive = _mirror_archive(mirror)
            if todo and archive is not None:
                todo, _ = _from_archive(archive, todo, dest, report, bar, "mirror archive")
        if todo and not offline and source in ("original", "auto"):
            todo = _from_original(todo, dest, archive_urls, report, bar, progress, timeout)
        if todo and not offline and source in ("github", "auto"):
            todo = _from_github(todo, dest, github_base, report, bar, jobs, timeout)
    report.unresolved = [item.relpath for item in todo]
    return report
