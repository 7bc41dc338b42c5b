"""Text teachers: a registry of factories that turn a spec into a callable ``text -> (p_neg, p_pos)``.

Specs: ``vader`` (default; the vaderSentiment lexicon shipped in its package), ``module:function`` (any
Python callable returning (p_neg, p_pos)), ``hf:<model id or local folder>`` (a Hugging Face
text-classification model, used only when ``transformers`` is installed and the model is available
locally; no download is attempted). Every teacher sees text already normalised by ``distill.text``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from pixsent.errors import DataError

Probs = tuple[float, float]
Teacher = Callable[[str], Probs]
TEACHERS: dict[str, Callable[[str], Teacher]] = {}


def register_teacher(prefix: str) -> Callable[[Callable[[str], Teacher]], Callable[[str], Teacher]]:
    """Decorator registering a factory under ``prefix`` (the spec's part before the first ``:``)."""

    def decorate(factory: Callable[[str], Teacher]) -> Callable[[str], Teacher]:
        TEACHERS[prefix] = factory
        return factory

    return decorate


@dataclass(frozen=True)
class VaderMapping:
    """compound c in [-1, 1] -> p_pos = (c + 1) / 2, p_neg = 1 - p_pos.

    Linear, so VADER's own thresholds (|c| >= 0.05 is polar) become p_pos >= 0.525 or <= 0.475, and a
    confidence threshold T on max(p_neg, p_pos) keeps posts with |c| >= 2T - 1 (T = 0.75 keeps |c| >= 0.5).
    """

    def __call__(self, compound: float) -> Probs:
        p_pos = min(1.0, max(0.0, (float(compound) + 1.0) / 2.0))
        return 1.0 - p_pos, p_pos


@register_teacher("vader")
def vader_teacher(arg: str = "") -> Teacher:
    """VADER's compound score mapped to probabilities by ``VaderMapping``."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise DataError("teacher vader: the vaderSentiment package is not installed") from None
    analyser = SentimentIntensityAnalyzer()
    mapping = VaderMapping()

    def score(text: str) -> Probs:
        return mapping(analyser.polarity_scores(text)["compound"])

    return score


def _check_probs(spec: str, fn: Callable[[str], object]) -> Teacher:
    """Wrap a user callable so that a wrong return value is a DataError naming the teacher."""

    def score(text: str) -> Probs:
        out = fn(text)
        try:
            p_neg, p_pos = (float(v) for v in out)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise DataError(f"teacher {spec}: must return (p_neg, p_pos), returned {out!r}") from None
        if not (0.0 <= p_neg <= 1.0 and 0.0 <= p_pos <= 1.0):
            raise DataError(f"teacher {spec}: probabilities outside [0, 1]: {out!r}")
        return p_neg, p_pos

    return score


@register_teacher("python")
def python_teacher(target: str) -> Teacher:
    """``module:function`` (also reachable as ``python:module:function``), imported from sys.path."""
    module, _, name = target.partition(":")
    if not module or not name:
        raise DataError(f"teacher {target!r}: expected module:function")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"teacher {target!r}: cannot import ({exc})") from None
    if not callable(fn):
        raise DataError(f"teacher {target!r}: not callable")
    return _check_probs(target, fn)


NEG_NAMES = ("negative", "neg", "label_0")
POS_NAMES = ("positive", "pos", "label_2")


@register_teacher("hf")
def hf_teacher(model: str) -> Teacher:
    """A local Hugging Face text-classification model; 3-class models are renormalised over neg/pos."""
    try:
        from transformers import pipeline
    except ImportError:
        raise DataError(
            f"teacher hf:{model}: the transformers package is not installed (pip install transformers)"
        ) from None
    try:
        clf = pipeline(
            "text-classification", model=model, top_k=None, model_kwargs={"local_files_only": True}
        )
    except Exception as exc:  # any loading failure is the user's model/config
        raise DataError(
            f"teacher hf:{model}: model not available locally ({type(exc).__name__}: {exc})"
        ) from None

    def score(text: str) -> Probs:
        scores = {d["label"].lower(): float(d["score"]) for d in clf(text, truncation=True)[0]}
        neg = next((scores[k] for k in NEG_NAMES if k in scores), None)
        pos = next((scores[k] for k in POS_NAMES if k in scores), None)
        if neg is None or pos is None:
            raise DataError(f"teacher hf:{model}: labels {sorted(scores)} name no negative/positive class")
        total = neg + pos
        return (neg / total, pos / total) if total > 0 else (0.5, 0.5)

    return score


def get_teacher(spec: str = "vader") -> Teacher:
    """Resolve a spec: a registered prefix (``vader``, ``hf:ID``), else ``module:function``."""
    prefix, _, arg = spec.partition(":")
    if prefix in TEACHERS and prefix != "python":
        return TEACHERS[prefix](arg)
    if prefix == "python":
        return python_teacher(arg)
    if ":" in spec:
        return python_teacher(spec)
    raise DataError(f"unknown teacher {spec!r} (known: {', '.join(sorted(TEACHERS))}, or module:function)")
