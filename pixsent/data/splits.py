"""Split folders for k-fold cross-validation: `<root>/test<k>/{train,test}.txt`, one `id label` a line.

This is the layout of the paper's ground_truth folders (one fold set per subset, e.g. five_agrees/).
`check_split_set` validates a fold set; `make_splits` writes stratified folds for a user's own data.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pixsent.data.imagelist import ListEntry, parse_line, read_image_list
from pixsent.errors import DataError

FOLD_DIR = re.compile(r"^test(\d+)$")
LABELS = (0, 1)


@dataclass(frozen=True)
class Problem:
    """One finding of `splits check`, printed as FILE:LINE: message."""

    file: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Fold:
    """One fold of a split set: its number and its two list files."""

    k: int
    train: Path
    test: Path


def fold_dirs(root: str | Path) -> list[Fold]:
    """The folds test1..testK under ROOT, sorted by K."""
    root = Path(root)
    folds = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        match = FOLD_DIR.match(child.name)
        if match and child.is_dir():
            folds.append(Fold(int(match.group(1)), child / "train.txt", child / "test.txt"))
    return sorted(folds, key=lambda f: f.k)


def find_split_sets(root: str | Path) -> list[Path]:
    """ROOT itself if it holds test<k>/ folders, else its sub-folders that do (e.g. five_agrees/)."""
    root = Path(root)
    if fold_dirs(root):
        return [root]
    return (
        [child for child in sorted(root.iterdir()) if child.is_dir() and fold_dirs(child)]
        if root.is_dir()
        else []
    )


def _read_checked(path: Path, problems: list[Problem]) -> list[ListEntry]:
    """Parse a list file line by line, recording malformed lines, bad labels and duplicates."""
    if not path.is_file():
        problems.append(Problem(path, 0, "file is missing"))
        return []
    entries: list[ListEntry] = []
    first_line: dict[str, int] = {}
    for number, text in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not text.strip():
            continue
        try:
            entry = parse_line(text, source=path, line=number)
        except DataError as exc:
            problems.append(Problem(path, number, str(exc).split(": ", 1)[-1]))
            continue
        if entry.label not in LABELS:
            problems.append(Problem(path, number, f"label {entry.label} of {entry.path} is not 0 or 1"))
        if entry.path in first_line:
            problems.append(
                Problem(path, number, f"duplicate id {entry.path} (first at line {first_line[entry.path]})")
            )
            continue
        first_line[entry.path] = number
        entries.append(entry)
    if not first_line and not any(p.file == path for p in problems):
        problems.append(Problem(path, 0, "file is empty (no `id label` lines)"))
    return entries


def _overlap(train: Path, entry: ListEntry, test: Path, test_entry: ListEntry) -> Problem:
    """A training id that is also in the same fold's test list."""
    return Problem(train, entry.line, f"{entry.path} is also in this fold's {test.name}:{test_entry.line}")


def check_fold(train: Path, test: Path) -> list[Problem]:
    """The checks of `splits check` that one fold's two files allow: each file's lines, labels and
    duplicates, an empty file, and ids in both (what the pipeline runs before it builds anything)."""
    problems: list[Problem] = []
    trains = _read_checked(Path(train), problems)
    tests = {e.path: e for e in _read_checked(Path(test), problems)}
    problems += [_overlap(Path(train), e, Path(test), tests[e.path]) for e in trains if e.path in tests]
    return problems


def check_split_set(root: str | Path) -> list[Problem]:
    """Every problem of one fold set: malformed lines, labels, duplicates, overlaps, partition, complement."""
    root = Path(root)
    folds = fold_dirs(root)
    problems: list[Problem] = []
    if not folds:
        return [Problem(root, 0, "no test<k>/ fold folders found")]
    expected = list(range(1, len(folds) + 1))
    if [f.k for f in folds] != expected:
        problems.append(
            Problem(root, 0, f"fold folders are {[f.k for f in folds]}, expected test1..test{len(folds)}")
        )
    trains = {f.k: _read_checked(f.train, problems) for f in folds}
    tests = {f.k: _read_checked(f.test, problems) for f in folds}
    # where each id sits in the test folds, and its label
    in_test: dict[str, tuple[int, ListEntry]] = {}
    for f in folds:
        for e in tests[f.k]:
            if e.path in in_test:
                k0, e0 = in_test[e.path]
                problems.append(
                    Problem(
                        f.test,
                        e.line,
                        f"{e.path} is also in test{k0}/test.txt:{e0.line} (test folds must be disjoint)",
                    )
                )
            else:
                in_test[e.path] = (f.k, e)
    for f in folds:
        test_ids = {e.path: e for e in tests[f.k]}
        train_ids = {e.path: e for e in trains[f.k]}
        for e in trains[f.k]:
            if e.path in test_ids:
                problems.append(_overlap(f.train, e, f.test, test_ids[e.path]))
            elif e.path not in in_test:
                problems.append(
                    Problem(f.train, e.line, f"{e.path} is in no test fold (test folds must cover the set)")
                )
            else:
                k0, e0 = in_test[e.path]
                if e0.label != e.label:
                    problems.append(
                        Problem(
                            f.train,
                            e.line,
                            f"{e.path} has label {e.label} here, {e0.label} in test{k0}/test.txt:{e0.line}",
                        )
                    )
        for ident, (k0, e0) in in_test.items():
            if k0 != f.k and ident not in train_ids:
                problems.append(
                    Problem(
                        root / f"test{k0}" / "test.txt",
                        e0.line,
                        f"{ident} is missing from test{f.k}/train.txt (train must be the complement of test)",
                    )
                )
    return problems


def check_splits(root: str | Path) -> list[Problem]:
    """Check ROOT (a fold set, or a folder of fold sets); no sets found is itself a problem."""
    sets = find_split_sets(root)
    if not sets:
        return [Problem(Path(root), 0, "no split folders (test<k>/train.txt, test.txt) found")]
    return [p for s in sets for p in check_split_set(s)]


def summarize(root: str | Path) -> dict[str, dict[str, int]]:
    """Per fold set: number of distinct ids and of each label across the test folds."""
    out = {}
    for s in find_split_sets(root):
        ids: dict[str, int] = {}
        for f in fold_dirs(s):
            if f.test.is_file():
                ids.update({e.path: e.label for e in read_image_list(f.test)})
        counts = defaultdict(int)
        for label in ids.values():
            counts[label] += 1
        out[s.name] = {"images": len(ids), **{f"label{k}": v for k, v in sorted(counts.items())}}
    return out


def make_splits(
    labels_file: str | Path, out: str | Path, *, folds: int = 5, seed: int = 0, overwrite: bool = False
) -> list[Fold]:
    """Stratified k-fold (sklearn StratifiedKFold, shuffled with SEED) in the test<k>/ layout."""
    from sklearn.model_selection import StratifiedKFold

    from pixsent.formats.atomic import atomic_path

    entries = read_image_list(labels_file)
    seen: dict[str, int] = {}
    for e in entries:
        if e.label not in LABELS:  # what `splits check` would reject in the folds written
            raise DataError(f"{labels_file}:{e.line}: label {e.label} of {e.path} is not 0 or 1")
        if e.path in seen:
            raise DataError(f"{labels_file}:{e.line}: duplicate id {e.path} (first at line {seen[e.path]})")
        seen[e.path] = e.line
    labels = [e.label for e in entries]
    if folds < 2:
        raise DataError(f"{labels_file}: --folds must be at least 2, got {folds}")
    smallest = min(labels.count(v) for v in set(labels)) if labels else 0
    if smallest < folds:
        raise DataError(f"{labels_file}: a class has only {smallest} images, fewer than {folds} folds")
    out = Path(out)
    if fold_dirs(out) and not overwrite:
        raise DataError(f"{out}: already holds split folders (pass --overwrite to replace them)")
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    result = []
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for k, (train_idx, test_idx) in enumerate(skf.split(labels, labels), start=1):
            fold = tmp / f"test{k}"
            fold.mkdir()
            for name, idx in (("train", sorted(train_idx)), ("test", sorted(test_idx))):
                (fold / f"{name}.txt").write_text(
                    "".join(f"{entries[i].path} {entries[i].label}\n" for i in idx)
                )
            result.append(Fold(k, out / f"test{k}" / "train.txt", out / f"test{k}" / "test.txt"))
    return result
