"""How well a system's phone scores tell mispronounced phones from intact ones: the area
under the ROC curve (AUC) of the predicted phone accuracy as a detector.

Phones are paired with the human scores by utterance id, word index and phone index (the
canonical phone must agree, stress ignored). A human phone is *mispronounced* when its
``error`` is one of ``kinds`` (``substitution`` by default), or, where a ``mispronounced``
test is given instead, when that test says so (a missed phone, for one, is marked by its
accuracy alone); *intact* when it has no error and the top accuracy (2); phones in between
(an accent, scored 1) are left out. The AUC is
the probability that a random intact phone gets a higher predicted accuracy than a random
mispronounced one, ties counting one half: the Mann-Whitney U statistic over the product of
the two counts (:func:`scipy.stats.mannwhitneyu`). 0.5 is chance, 1 a perfect detector.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from scipy.stats import mannwhitneyu

from apa.schema import Assessment, PhoneAssessment
from apa.text import strip_stress


@dataclass(frozen=True)
class Detection:
    auc: float | None
    """``None`` when either class is empty."""
    mispronounced: int
    intact: int
    unpaired: int
    """Human phones of either class with no predicted accuracy to pair with."""


def phone_error_auc(
    predictions: Sequence[Assessment],
    gold: Sequence[Assessment],
    *,
    kinds: Collection[str] = ("substitution",),
    mispronounced: Callable[[PhoneAssessment], bool] | None = None,
) -> Detection:
    """The AUC of ``predictions``' phone accuracy for telling the human-labelled phones of
    error ``kinds`` (or those ``mispronounced`` picks) from intact ones (module
    docstring)."""
    is_error = mispronounced or (lambda phone: phone.error in kinds)
    predicted: dict[tuple[str, int, int], tuple[str, float | None]] = {}
    for a in predictions:
        for wi, word in enumerate(a.words):
            for pi, phone in enumerate(word.phones):
                predicted[(a.utterance_id, wi, pi)] = (strip_stress(phone.phone), phone.accuracy)
    bad: list[float] = []
    good: list[float] = []
    unpaired = 0
    for g in gold:
        for wi, word in enumerate(g.words):
            for pi, phone in enumerate(word.phones):
                if is_error(phone):
                    side = bad
                elif phone.error is None and phone.accuracy == 2:
                    side = good
                else:
                    continue
                found = predicted.get((g.utterance_id, wi, pi))
                if found is None or found[1] is None or found[0] != strip_stress(phone.phone):
                    unpaired += 1
                    continue
                side.append(found[1])
    if not bad or not good:
        return Detection(None, len(bad), len(good), unpaired)
    u = mannwhitneyu(good, bad, alternative="two-sided").statistic
    return Detection(float(u) / (len(good) * len(bad)), len(bad), len(good), unpaired)
