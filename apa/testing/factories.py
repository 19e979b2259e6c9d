"""Deterministic factories of score data for tests and benchmarks (numpy only)."""

from __future__ import annotations

import numpy as np

from apa.schema import ASPECTS, Assessment, PhoneAssessment, SentenceScores, WordAssessment


def synthetic_scores(
    n: int = 40, *, noise: float = 1.5, seed: int = 0, words: int = 3, model: str | None = "m"
) -> tuple[list[Assessment], list[Assessment]]:
    """Human scores and predictions (human + noise) for ``n`` utterances of ``words`` words
    with 2-3 phones each."""
    rng = np.random.default_rng(seed)
    gold, pred = [], []

    def build(uid, text, sentence, word_scores, phone_scores, *, jitter: float):
        def j(v, hi):
            return float(np.clip(v + rng.normal(0, jitter * hi / 10), 0, hi)) if jitter else v

        return Assessment(
            utterance_id=uid,
            text=text,
            sentence=SentenceScores(
                **{a: j(v, 10) for a, v in zip(ASPECTS["sentence"], sentence, strict=True)}
            ),
            words=[
                WordAssessment(
                    text=f"W{k}",
                    **{a: j(v, 10) for a, v in zip(ASPECTS["word"], ws, strict=True)},
                    phones=[PhoneAssessment(phone="AA1", accuracy=j(p, 2)) for p in ps],
                )
                for k, (ws, ps) in enumerate(zip(word_scores, phone_scores, strict=True))
            ],
            model=model if jitter else None,
        )

    for u in range(n):
        text = " ".join(f"W{k}" for k in range(words))
        sentence = rng.integers(0, 11, 5).astype(float)
        word_scores = rng.integers(0, 11, (words, 3)).astype(float)
        phone_scores = [rng.integers(0, 11, rng.integers(2, 4)) / 5 for _ in range(words)]
        uid = f"utt{u:04d}"
        gold.append(build(uid, text, sentence, word_scores, phone_scores, jitter=0.0))
        pred.append(build(uid, text, sentence, word_scores, phone_scores, jitter=noise))
    return gold, pred
