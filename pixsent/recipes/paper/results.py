"""The paper's published numbers (Campos et al. 2017, as recorded in SPEC section 2), keyed like our run
folders.

Each entry maps (table, subset, variant, init) to (mean, std) for centre-crop and oversampled evaluation.
Values the SPEC does not record are ``None`` and print as "n/a"; we never invent a published number.
"""

from __future__ import annotations

from dataclasses import dataclass

Score = tuple[float, float | None]


@dataclass(frozen=True)
class Published:
    """One row of a paper table: what was trained, and the accuracies the paper reports."""

    table: str
    label: str
    subset: str
    variant: str
    init: str
    center: Score | None
    oversample: Score | None


# PCNN (You et al. 2015) and the majority-class baseline have no run folder: they are reference rows.
PCNN: dict[str, float] = {"five": 0.783, "four": 0.714, "three": 0.687}
MAJORITY: dict[str, tuple[int, int]] = {"five": (579, 880)}

PUBLISHED: list[Published] = [
    Published("2", "fine-tuned CaffeNet", "five", "fc8_twitter", "caffenet", (0.817, 0.038), (0.830, 0.034)),
    Published("2", "fine-tuned CaffeNet", "four", "fc8_twitter", "caffenet", (0.782, 0.033), (0.787, 0.039)),
    Published("2", "fine-tuned CaffeNet", "three", "fc8_twitter", "caffenet", (0.739, 0.033), (0.749, 0.037)),
    Published("4", "fc8_twitter", "five", "fc8_twitter", "caffenet", (0.817, 0.038), (0.830, 0.034)),
    Published("4", "fc7-2", "five", "fc7-2", "caffenet", (0.784, 0.024), (0.797, 0.021)),
    Published("4", "fc6-2", "five", "fc6-2", "caffenet", (0.651, 0.044), (0.676, 0.029)),
    Published("5", "CaffeNet", "five", "fc8_twitter", "caffenet", (0.817, 0.038), (0.830, 0.034)),
    Published("5", "PlacesCNN", "five", "fc8_twitter", "places", None, None),
    Published("5", "DeepSentiBank", "five", "fc8_twitter", "deepsentibank", None, None),
    Published("5", "MVSO-EN", "five", "fc8_twitter", "mvso-en", (0.839, 0.029), (0.844, 0.026)),
    Published("5", "MVSO-ES", "five", "fc8_twitter", "mvso-es", None, None),
    Published("5", "MVSO-FR", "five", "fc8_twitter", "mvso-fr", None, None),
    Published("5", "MVSO-IT", "five", "fc8_twitter", "mvso-it", None, None),
    Published("5", "MVSO-DE", "five", "fc8_twitter", "mvso-de", None, None),
    Published("5", "MVSO-ZH", "five", "fc8_twitter", "mvso-zh", None, None),
    Published(
        "6", "fc9_twitter, CaffeNet init", "five", "fc9_twitter", "caffenet", (0.795, 0.023), (0.803, 0.034)
    ),
    Published("6", "fc9_twitter, MVSO-EN init", "five", "fc9_twitter", "mvso-en", None, None),
]

# Table 3: linear probes on each layer of the fine-tuned CaffeNet (five-agree, 5-fold mean ± std), as
# {layer: ((SVM mean, std), (softmax mean, std))}, in network order.
TABLE3: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "conv1": ((0.667, 0.049), (0.67, 0.032)),
    "pool1": ((0.674, 0.045), (0.68, 0.035)),
    "norm1": ((0.706, 0.032), (0.712, 0.031)),
    "conv2": ((0.735, 0.019), (0.738, 0.030)),
    "pool2": ((0.732, 0.019), (0.729, 0.022)),
    "norm2": ((0.735, 0.025), (0.737, 0.021)),
    "conv3": ((0.752, 0.033), (0.748, 0.029)),
    "conv4": ((0.794, 0.026), (0.781, 0.020)),
    "conv5": ((0.776, 0.025), (0.779, 0.034)),
    "pool5": ((0.784, 0.020), (0.786, 0.022)),
    "fc6": ((0.804, 0.031), (0.81, 0.038)),
    "fc7": ((0.814, 0.040), (0.814, 0.044)),
    "fc8": ((0.82, 0.055), (0.821, 0.046)),
}

TABLE_TITLES: dict[str, str] = {
    "2": "Table 2: fine-tuned CaffeNet on the Twitter dataset (5-fold accuracy)",
    "3": "Table 3: layer-wise linear probes (SVM / softmax, five-agree, 5-fold mean ± std)",
    "4": "Table 4: removing fully connected layers (five-agree)",
    "5": "Table 5: initialisation from different pre-trained models (five-agree, fc8_twitter)",
    "6": "Table 6: adding a layer on top (fc9_twitter, five-agree)",
}


def rows(table: str) -> list[Published]:
    """The paper's rows of one table, in the paper's order."""
    return [p for p in PUBLISHED if p.table == table]


def configurations() -> list[tuple[str, str, str]]:
    """Every distinct (subset, variant, init) the paper trained: what `make paper` runs."""
    seen: dict[tuple[str, str, str], None] = {}
    for p in PUBLISHED:
        seen.setdefault((p.subset, p.variant, p.init), None)
    return list(seen)


def majority_accuracy(subset: str) -> float | None:
    if subset not in MAJORITY:
        return None
    pos, total = MAJORITY[subset]
    return pos / total
