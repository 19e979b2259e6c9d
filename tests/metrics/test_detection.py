"""phone_error_auc against the AUC's definition counted pair by pair."""

from __future__ import annotations

import itertools
import random

import pytest

from apa.metrics.detection import phone_error_auc
from apa.schema import Assessment, PhoneAssessment, SentenceScores, WordAssessment


def _assessment(uid: str, phones: list[tuple[str, float, str | None]]) -> Assessment:
    return Assessment(
        utterance_id=uid,
        text="WORD",
        sentence=SentenceScores(**dict.fromkeys(SentenceScores.model_fields)),
        words=[
            WordAssessment(
                text="WORD",
                accuracy=None,
                stress=None,
                total=None,
                phones=[
                    PhoneAssessment(
                        phone=p,
                        accuracy=a,
                        error=e,
                        pronounced="ZH" if e == "substitution" else None,
                    )
                    for p, a, e in phones
                ],
            )
        ],
    )


def _brute_force(good: list[float], bad: list[float]) -> float:
    wins = sum(1.0 if g > b else 0.5 if g == b else 0.0 for g, b in itertools.product(good, bad))
    return wins / (len(good) * len(bad))


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_the_pairwise_definition(seed) -> None:
    rng = random.Random(seed)
    gold, pred, good, bad = [], [], [], []
    for u in range(20):
        labels = [rng.choice(["intact", "intact", "sub", "accent"]) for _ in range(5)]
        scores = [round(rng.uniform(0, 2), 1) for _ in labels]  # ties happen
        gold.append(
            _assessment(
                f"u{u}",
                [
                    (
                        "K",
                        {"intact": 2.0, "sub": 0.0, "accent": 1.0}[label],
                        "substitution" if label == "sub" else None,
                    )
                    for label in labels
                ],
            )  # fmt: skip
        )
        pred.append(_assessment(f"u{u}", [("K", s, None) for s in scores]))
        for label, s in zip(labels, scores, strict=True):
            (good if label == "intact" else bad if label == "sub" else []).append(s)
    result = phone_error_auc(pred, gold)
    assert (result.mispronounced, result.intact, result.unpaired) == (len(bad), len(good), 0)
    assert result.auc == pytest.approx(_brute_force(good, bad), abs=1e-12)


def test_unpaired_and_one_sided() -> None:
    gold = [_assessment("a", [("K", 2.0, None), ("AE1", 0.0, "substitution")])]
    pred = [_assessment("a", [("K", 1.5, None), ("T", 0.5, None)])]  # second phone differs
    result = phone_error_auc(pred, gold)
    assert (result.auc, result.mispronounced, result.intact, result.unpaired) == (None, 0, 1, 1)
    assert phone_error_auc(pred[:0], gold).unpaired == 2


def test_a_test_picks_the_mispronounced_phones() -> None:
    """A missed phone carries no error, only its accuracy: a test can pick it, ``kinds``
    cannot."""
    gold = [
        _assessment(
            "a",
            [("K", 2.0, None), ("T", 0.0, None), ("AE1", 0.0, "substitution"), ("S", 2.0, None)],
        )
    ]
    pred = [
        _assessment("a", [("K", 1.8, None), ("T", 0.2, None), ("AE1", 1.9, None), ("S", 1.0, None)])
    ]
    by_kind = phone_error_auc(pred, gold)
    assert (by_kind.auc, by_kind.mispronounced, by_kind.intact) == (0.0, 1, 2)
    missed = phone_error_auc(
        pred, gold, mispronounced=lambda ph: ph.accuracy == 0 and ph.error is None
    )
    assert (missed.auc, missed.mispronounced, missed.intact) == (1.0, 1, 2)
