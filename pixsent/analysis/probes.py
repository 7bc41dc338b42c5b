"""Layer-wise linear probes (the paper's Table 3): a linear SVM and a softmax classifier per layer and fold.

Features are standardised with the training fold's per-feature mean and standard deviation (constant
features, e.g. dead ReLU units, are left at 0), and C is chosen by a stratified cross-validation on the
training fold only. Wide layers (more features than training images, e.g. conv1's 290,400) are handled
exactly in the dual: an L2-regularised linear model's weights lie in the span of the training rows, so
projecting every row onto that span (through the eigenvectors of the training Gram matrix, computed in
feature chunks straight from the memory-mapped cache) leaves the optimisation problem and the predictions
unchanged while the classifier sees only n_train features. No classifier ever holds the full matrix twice.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixsent.analysis.layersets import TABLE3_LAYERS
from pixsent.analysis.phases import PhaseLog


@dataclass(frozen=True)
class ProbeConfig:
    """How the probes are trained: the C grid, the inner cross-validation and the chunking of wide layers."""

    c_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    # decades the search may add beyond an edge of c_grid while the edge value is strictly the best: wide
    # standardised layers (10^5 features and more) want C far below 1e-3, which a fixed grid would clip
    extend: int = 4
    inner_folds: int = 3
    seed: int = 0
    chunk: int = 16384
    max_iter: int = 5000


def _svm(c: float, cfg: ProbeConfig):
    from sklearn.svm import LinearSVC

    return LinearSVC(C=c, max_iter=cfg.max_iter, random_state=cfg.seed)


def _softmax(c: float, cfg: ProbeConfig):
    """Binary problems get sklearn's logistic model: a 2-class softmax whose two weight vectors are tied."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=cfg.max_iter, random_state=cfg.seed)


#: Probe name -> estimator factory (C, config) -> sklearn classifier.
CLASSIFIERS: dict[str, Callable[[float, ProbeConfig], object]] = {"svm": _svm, "softmax": _softmax}


# ------------------------------------------------------------------------------- standardise / project


class Rows:
    """Some rows of a (memory-mapped) 2-d array, read lazily in row or column blocks (no full copy)."""

    def __init__(self, array: np.ndarray, index: np.ndarray) -> None:
        self.array = array
        self.index = np.asarray(index, dtype=np.int64)
        self.shape = (len(self.index), int(np.prod(array.shape[1:])))

    def __getitem__(self, key):
        if isinstance(key, tuple):
            rows, cols = key
            return self.array[self.index[rows], cols]
        return self.array[self.index[key]]


def _standardise_in_place(
    block: np.ndarray, others: Sequence[np.ndarray] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Standardise a float64 column block in place with its own mean and std (two-pass), ``others`` too.

    Constant columns (e.g. dead ReLU units) get std = inf, so they become 0. Returns (mean, std).
    """
    mean = block.mean(0)
    block -= mean
    std = np.sqrt(np.einsum("ij,ij->j", block, block) / block.shape[0])
    std[std < 1e-8 * np.maximum(1.0, np.abs(mean))] = np.inf  # constant feature -> 0 after scaling
    block /= std
    for other in others:
        other -= mean
        other /= std
    return mean, std


def _read_columns(x: np.ndarray | Rows, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
    """Columns lo:hi of every row of x into the float64 buffer ``out`` (reused: no fresh pages per block)."""
    view = out[:, : hi - lo]
    view[...] = x[:, lo:hi]
    return view


def column_stats(x: np.ndarray | Rows, chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of a (n, d) array, read in column blocks (float64)."""
    n, d = x.shape
    buf = np.empty((n, min(d, chunk)), np.float64)
    parts = [
        _standardise_in_place(_read_columns(x, lo, min(d, lo + chunk), buf)) for lo in range(0, d, chunk)
    ]
    return np.concatenate([m for m, _ in parts]), np.concatenate([s for _, s in parts])


def standardised_blocks(
    train: np.ndarray | Rows, test: np.ndarray | Rows, chunk: int = 16384
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Column blocks of train and test standardised with the training rows' statistics.

    A feature's statistics depend on its own column only, so one pass over the columns suffices. The
    blocks live in two reused buffers: consume each before asking for the next.
    """
    d = train.shape[1]
    width = min(d, chunk)
    tr, te = np.empty((train.shape[0], width)), np.empty((test.shape[0], width))
    for lo in range(0, d, chunk):
        hi = min(d, lo + chunk)
        a, b = _read_columns(train, lo, hi, tr), _read_columns(test, lo, hi, te)
        _standardise_in_place(a, (b,))
        yield a, b


def standardised_views(
    train: np.ndarray | Rows, test: np.ndarray | Rows, chunk: int = 16384
) -> tuple[np.ndarray, np.ndarray, str]:
    """Standardised train/test matrices, or their exact projections on the training row span when d > n.

    One pass over column blocks (standardised_blocks), each folded into the training Gram matrix and the
    test-train cross products right away: memory stays at two (n, chunk) float64 buffers whatever the width.
    """
    n, d = train.shape
    if d <= n:
        xtr, xte = next(standardised_blocks(train, test, d))
        return xtr, xte, "primal"
    gram = np.zeros((n, n), np.float64)
    cross = np.zeros((test.shape[0], n), np.float64)
    for a, b in standardised_blocks(train, test, chunk):
        gram += a @ a.T
        cross += b @ a.T
    evals, evecs = np.linalg.eigh(gram)
    keep = evals > evals.max() * 1e-10
    evals, evecs = evals[keep], evecs[:, keep]
    root = np.sqrt(evals)
    # train rows: U * sqrt(L); test rows: K_test U / sqrt(L) (coordinates in the same orthonormal basis)
    return evecs * root, (cross @ evecs) / root, "dual"


# ------------------------------------------------------------------------------------------- probing


@dataclass
class ProbeResult:
    """Accuracy of one probe on one layer and fold, with the C the inner cross-validation chose."""

    layer: str
    fold: int
    classifier: str
    accuracy: float
    c: float  # nan where nothing was fitted (form "constant")
    form: str  # "primal", "dual" (projected on the training rows' span) or "constant" (no feature varies)


def _edges_to_extend(scores: dict[float, float]) -> list[float]:
    """One more decade beyond each edge of the searched Cs whose score is the best and strictly above its
    neighbour's (the optimum may lie further out); nothing when the best is inside or the edge only ties."""
    cs = sorted(scores)
    best = max(scores.values())
    if len(cs) < 2:
        return []
    new = []
    if scores[cs[0]] == best and scores[cs[0]] > scores[cs[1]]:
        new.append(cs[0] / 10)
    if scores[cs[-1]] == best and scores[cs[-1]] > scores[cs[-2]]:
        new.append(cs[-1] * 10)
    return new


def choose_c(
    name: str, xtr: np.ndarray, ytr: np.ndarray, cfg: ProbeConfig
) -> tuple[float, dict[float, float]]:
    """(C, mean inner-CV accuracy per C tried): the grid, extended a decade at a time (up to ``cfg.extend``)
    beyond an edge that is strictly the best; ties go to the smallest C, as scikit-learn's GridSearchCV does
    on an ascending grid. Training rows only: the test fold is never seen."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    factory = CLASSIFIERS[name]
    folds = max(2, min(cfg.inner_folds, int(np.bincount(ytr).min())))
    cv = StratifiedKFold(folds, shuffle=True, random_state=cfg.seed)

    def score(cs: Iterable[float]) -> dict[float, float]:
        return {
            c: float(cross_val_score(factory(c, cfg), xtr, ytr, cv=cv, scoring="accuracy").mean()) for c in cs
        }

    scores = score(cfg.c_grid)
    for _ in range(cfg.extend):
        new = _edges_to_extend(scores)
        if not new:
            break
        scores.update(score(new))
    best = max(scores.values())
    return min(c for c, s in scores.items() if s == best), scores


def fit_probe(
    name: str, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, cfg: ProbeConfig
) -> tuple[float, float]:
    """Choose C on the training data only (choose_c), refit on all of it, return (test accuracy, chosen C).

    BLAS runs single-threaded here: the problems are at most n_train wide, so threads only add overhead,
    and OpenBLAS threads that spin for a busy CPU made the fits up to 5x slower on a shared machine.
    """
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        c, _ = choose_c(name, xtr, ytr, cfg)
        model = CLASSIFIERS[name](c, cfg).fit(xtr, ytr)
        acc = float((model.predict(xte) == yte).mean())
    return acc, c


def probe_layer(
    layer: str,
    fold: int,
    train: np.ndarray | Rows,
    ytr: np.ndarray,
    test: np.ndarray | Rows,
    yte: np.ndarray,
    cfg: ProbeConfig,
    classifiers: Iterable[str] = ("svm", "softmax"),
    log: PhaseLog | None = None,
) -> list[ProbeResult]:
    """Every probe on one layer's flattened (n, d) features of one fold (phases timed into ``log``)."""

    def phase(name: str, **tags: object):
        return log.phase(name, layer=layer, fold=fold, **tags) if log is not None else nullcontext()

    if isinstance(train, np.ndarray):
        train = train.reshape(train.shape[0], -1)
        test = test.reshape(test.shape[0], -1)
    with phase("standardise", features=int(train.shape[1])):
        xtr, xte, form = standardised_views(train, test, cfg.chunk)
    ytr, yte = np.asarray(ytr), np.asarray(yte)
    if xtr.shape[1] == 0 or not np.any(xtr):
        # every feature constant on the training fold (e.g. a ReLU that is dead on every image): a linear
        # model can only answer the training fold's majority class, which is what it is scored with
        majority = np.bincount(ytr).argmax()
        acc = float((yte == majority).mean())
        return [ProbeResult(layer, fold, name, acc, math.nan, "constant") for name in classifiers]
    out = []
    for name in classifiers:
        with phase("fit", classifier=name):
            acc, c = fit_probe(name, xtr, ytr, xte, yte, cfg)
        out.append(ProbeResult(layer, fold, name, acc, c, form))
    return out


@dataclass
class Table3:
    """Per-layer accuracies over folds; prints mean ± std beside the paper's numbers where known."""

    results: list[ProbeResult] = field(default_factory=list)

    def summary(self, layer: str, classifier: str) -> tuple[float, float, int]:
        accs = [r.accuracy for r in self.results if r.layer == layer and r.classifier == classifier]
        if not accs:
            return math.nan, math.nan, 0
        return float(np.mean(accs)), float(np.std(accs)), len(accs)

    def layers(self) -> list[str]:
        seen: list[str] = []
        for r in self.results:
            if r.layer not in seen:
                seen.append(r.layer)
        return seen

    def to_markdown(self, paper: dict[str, tuple[tuple[float, float], ...]] | None = None) -> str:
        """Markdown rows per layer; ``paper`` ({layer: ((svm mean, std), (softmax mean, std))}) adds the
        published columns where a layer has the same name (the paper's Table 3 is CaffeNet's)."""
        paper = paper or {}
        shown = any(layer in paper for layer in self.layers())
        head = "| layer | SVM (ours) | Softmax (ours) | folds |"
        rule = "| --- | --- | --- | --- |"
        if shown:
            head += " SVM (paper) | Softmax (paper) |"
            rule += " --- | --- |"
        lines = [head, rule]
        for layer in self.layers():
            svm = self.summary(layer, "svm")
            soft = self.summary(layer, "softmax")
            n = max(svm[2], soft[2])
            row = f"| {layer} | {svm[0]:.3f} ± {svm[1]:.3f} | {soft[0]:.3f} ± {soft[1]:.3f} | {n} |"
            if shown:
                ps = paper.get(layer)
                cells = [f"{m:.3f} ± {s:.3f}" for m, s in ps] if ps else ["–", "–"]
                row += f" {cells[0]} | {cells[1]} |"
            lines.append(row)
        return "\n".join(lines)

    def summaries(self) -> list[dict]:
        """Per layer and classifier: mean, population std and number of folds (what the tables print)."""
        out = []
        for layer in self.layers():
            for name in sorted({r.classifier for r in self.results if r.layer == layer}):
                mean, std, n = self.summary(layer, name)
                out.append({"layer": layer, "classifier": name, "mean": mean, "std": std, "folds": n})
        return out

    def to_json(self) -> list[dict]:
        """Every per-fold result; C is null where no classifier was fitted (a constant layer)."""
        return [{**r.__dict__, "c": None if math.isnan(r.c) else r.c} for r in self.results]


@dataclass(frozen=True)
class FoldSplit:
    """One fold: the rows of the feature cache used for training and for testing, and their labels."""

    fold: int
    train: np.ndarray
    test: np.ndarray
    ytrain: np.ndarray
    ytest: np.ndarray


def probe_folds(
    caches: Callable[[int], object],
    folds: Sequence[FoldSplit],
    layers: Sequence[str],
    cfg: ProbeConfig,
    classifiers: Iterable[str] = ("svm", "softmax"),
    progress: bool = True,
    log: PhaseLog | None = None,
    release: Callable[[int], None] | None = None,
) -> Table3:
    """Every layer of every fold: ``caches(fold)`` gives that fold's FeatureCache (shared or per fold);
    ``release(fold)``, when given, runs once a fold is probed (to drop a cache no later fold reads)."""
    from tqdm import tqdm

    table = Table3()
    with tqdm(total=len(folds) * len(layers), desc="probes", unit="layer", disable=not progress) as bar:
        for split in folds:
            cache = caches(split.fold)
            for layer in layers:
                feats = cache[layer]
                table.results += probe_layer(
                    layer,
                    split.fold,
                    Rows(feats, split.train),
                    split.ytrain,
                    Rows(feats, split.test),
                    split.ytest,
                    cfg,
                    classifiers,
                    log,
                )
                del feats
                bar.update(1)
            if release is not None:
                release(split.fold)
    return table


@dataclass
class LayerAnalysis:
    """What `pixsent layers` runs: a split set, an image folder, one (deploy, weights) per fold, layers."""

    splits: Path
    images: Path
    models: dict[int, tuple[Path, Path]]
    layers: Sequence[str] = TABLE3_LAYERS
    cache: Path = Path("cache/features")
    mean: np.ndarray | None = None
    resize: int = 256
    batch: int = 16
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    classifiers: Sequence[str] = ("svm", "softmax")
    progress: bool = True
    log: PhaseLog | None = None  # phase timings (extract, standardise, fit) when given
    # False: delete a model's feature cache once the last fold reading it is probed (a fine-tuned model per
    # fold makes one cache per fold: ~16 GB each for SqueezeNet's 15 layers over 880 images)
    keep_cache: bool = True


def read_split_list(path: Path) -> list[tuple[str, int]]:
    """``image label`` lines of a split file (DataError naming the file and line on a malformed one)."""
    from pixsent.errors import DataError

    items = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{path}:{n}: expected 'image label', got {line!r}")
        items.append((parts[0], int(parts[1])))
    return items


def layer_analysis(spec: LayerAnalysis, forward_factory: Callable | None = None) -> Table3:
    """Extract (cached) features of every split image per distinct model, then probe every layer and fold.

    Images are extracted once per distinct (deploy, weights) pair over the union of the split's images, and
    each fold indexes its train and test rows out of that cache.
    """
    from pixsent.analysis import features as feat
    from pixsent.data.splits import fold_dirs
    from pixsent.errors import DataError

    forward_factory = forward_factory or feat.net_forward
    folds = [f for f in fold_dirs(spec.splits) if f.k in spec.models]
    if not folds:
        raise DataError(f"{spec.splits}: no test<k>/ fold folders for the folds {sorted(spec.models)}")
    names: dict[str, int] = {}
    labels: dict[str, int] = {}
    lists = {}
    for f in folds:
        lists[f.k] = (read_split_list(f.train), read_split_list(f.test))
        for name, label in lists[f.k][0] + lists[f.k][1]:
            names.setdefault(name, len(names))
            labels[name] = label
    paths = [spec.images / n for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} split images missing under {spec.images}, e.g. {missing[0]}")
    caches: dict[tuple[Path, Path], feat.FeatureCache] = {}

    def cache_for(k: int) -> feat.FeatureCache:
        model, weights = spec.models[k]
        if (model, weights) not in caches:
            crop = feat.CropConfig(spec.resize, feat.net_input_size(model), spec.mean)
            key = feat.cache_key(model, weights, paths, crop)
            folder = spec.cache / key
            cached = feat.load_cache(folder, spec.layers, len(paths))
            if cached is None:
                with spec.log.phase("extract", images=len(paths)) if spec.log else nullcontext():
                    forward = forward_factory(model, weights, spec.layers)
                    cached = feat.extract(
                        forward, paths, spec.layers, folder, crop, spec.batch, spec.progress
                    )
            caches[(model, weights)] = cached
        return caches[(model, weights)]

    splits = []
    for f in folds:
        tr, te = lists[f.k]
        splits.append(
            FoldSplit(
                f.k,
                np.array([names[n] for n, _ in tr]),
                np.array([names[n] for n, _ in te]),
                np.array([lab for _, lab in tr]),
                np.array([lab for _, lab in te]),
            )
        )

    def release(k: int) -> None:
        model = spec.models[k]
        later = [f.k for f in folds if f.k > k and spec.models[f.k] == model]
        if not spec.keep_cache and not later and model in caches:
            import shutil

            shutil.rmtree(caches.pop(model).folder, ignore_errors=True)

    return probe_folds(
        cache_for, splits, spec.layers, spec.probe, spec.classifiers, spec.progress, spec.log, release
    )
