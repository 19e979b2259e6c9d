"""Join predictions to human scores unit by unit, counting everything that does not join.

Keys: the utterance id (sentence level), plus the word's index in the reference text (word
level), plus the phone's index in the word (phone level). A key found on both sides joins
when the units agree on what they are: the same reference words (sentence), the same
normalised word text (word, :func:`apa.text.normalize_word`), the same word and canonical phone
ignoring stress digits (phone, :func:`apa.text.strip_stress`). Otherwise it is ``mismatched``
and left out of the metrics. Per level the counts add up:

* ``predicted == matched + mismatched + pred_only``
* ``gold == matched + mismatched + gold_only``

Duplicate utterance ids among the predictions keep their first occurrence; the units of the
others are counted in ``duplicate_predictions`` and not in ``predicted``. Duplicate ids among
the human scores are an error.

Of the matched units, those with a ``None`` score for an aspect (not estimated, or no human
score) are counted per aspect in ``pred_missing`` / ``gold_missing``; the rest are the pairs
the metrics are computed on. Each pair carries its key and its utterance's index among the
human-scored utterances (the cluster the bootstrap resamples).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from apa.metrics.result import JoinCounts
from apa.schema import ASPECTS, Assessment, Level
from apa.text import normalize_word, strip_stress, words_of

Key = tuple[str | int, ...]
"""``(utterance_id,)``, ``(utterance_id, word)`` or ``(utterance_id, word, phone)``."""

_Unit = tuple[Key, object, dict[str, float | None]]
"""A unit's key, what it is (compared across sides) and its scores per aspect."""


@dataclass(frozen=True)
class Pairs:
    """Paired scores of one aspect at one level, in the order of the human scores."""

    gold: NDArray[np.float64]
    pred: NDArray[np.float64]
    clusters: NDArray[np.intp]
    """index of each pair's utterance among the human-scored utterances"""
    keys: tuple[Key, ...]

    @property
    def n(self) -> int:
        return len(self.gold)

    @property
    def n_utterances(self) -> int:
        return len(np.unique(self.clusters))

    def restrict(self, keys: Collection[Key]) -> Pairs:
        """The pairs whose key is in ``keys``, in the same order."""
        keep = np.fromiter((k in keys for k in self.keys), dtype=bool, count=len(self.keys))
        return Pairs(
            gold=self.gold[keep],
            pred=self.pred[keep],
            clusters=self.clusters[keep],
            keys=tuple(k for k, kept in zip(self.keys, keep, strict=True) if kept),
        )


@dataclass(frozen=True)
class JoinedLevel:
    """One level's join: its counts and, for every aspect of the level, the pairs."""

    level: Level
    counts: JoinCounts
    pairs: dict[str, Pairs]


def _units(assessment: Assessment, level: Level) -> Iterator[_Unit]:
    uid = assessment.utterance_id
    if level == "sentence":
        s = assessment.sentence
        yield (uid,), tuple(words_of(assessment.text)), {a: getattr(s, a) for a in ASPECTS[level]}
        return
    for wi, word in enumerate(assessment.words):
        text = normalize_word(word.text)
        if level == "word":
            yield (uid, wi), text, {a: getattr(word, a) for a in ASPECTS[level]}
            continue
        for pi, phone in enumerate(word.phones):
            yield (uid, wi, pi), (text, strip_stress(phone.phone)), {"accuracy": phone.accuracy}


def _count_units(assessment: Assessment, level: Level) -> int:
    if level == "sentence":
        return 1
    if level == "word":
        return len(assessment.words)
    return sum(len(w.phones) for w in assessment.words)


def join_level(pred: Sequence[Assessment], gold: Sequence[Assessment], level: Level) -> JoinedLevel:
    """Join predictions to human scores at ``level`` (see the module docstring)."""
    if level not in ASPECTS:
        raise ValueError(f"unknown level {level!r}; expected one of {sorted(ASPECTS)}")
    aspects = ASPECTS[level]

    gold_by_id: dict[str, Assessment] = {}
    for g in gold:
        if g.utterance_id in gold_by_id:
            raise ValueError(f"utterance {g.utterance_id!r} has human scores twice")
        gold_by_id[g.utterance_id] = g

    pred_by_id: dict[str, Assessment] = {}
    duplicates = 0
    for p in pred:
        if p.utterance_id in pred_by_id:
            duplicates += _count_units(p, level)
        else:
            pred_by_id[p.utterance_id] = p

    predicted = gold_total = matched = mismatched = pred_only = gold_only = 0
    pred_missing = dict.fromkeys(aspects, 0)
    gold_missing = dict.fromkeys(aspects, 0)
    values: dict[str, tuple[list[float], list[float], list[int], list[Key]]] = {
        a: ([], [], [], []) for a in aspects
    }

    for cluster, (uid, g) in enumerate(gold_by_id.items()):
        gold_units = list(_units(g, level))
        gold_total += len(gold_units)
        p = pred_by_id.get(uid)
        if p is None:
            gold_only += len(gold_units)
            continue
        pred_units = {key: (what, scores) for key, what, scores in _units(p, level)}
        predicted += len(pred_units)
        for key, what, gold_scores in gold_units:
            if key not in pred_units:
                gold_only += 1
                continue
            pred_what, pred_scores = pred_units[key]
            if pred_what != what:
                mismatched += 1
                continue
            matched += 1
            for a in aspects:
                gv, pv = gold_scores[a], pred_scores[a]
                gold_missing[a] += gv is None
                pred_missing[a] += pv is None
                if gv is not None and pv is not None:
                    gs, ps, cs, ks = values[a]
                    gs.append(gv)
                    ps.append(pv)
                    cs.append(cluster)
                    ks.append(key)
        pred_only += len(pred_units) - sum(1 for key, _, _ in gold_units if key in pred_units)

    for uid, p in pred_by_id.items():
        if uid not in gold_by_id:
            n_units = _count_units(p, level)
            predicted += n_units
            pred_only += n_units

    counts = JoinCounts(
        level=level,
        predicted=predicted,
        gold=gold_total,
        matched=matched,
        pred_only=pred_only,
        gold_only=gold_only,
        mismatched=mismatched,
        duplicate_predictions=duplicates,
        pred_missing=pred_missing,
        gold_missing=gold_missing,
    )
    pairs = {
        a: Pairs(
            gold=np.asarray(gs, dtype=np.float64),
            pred=np.asarray(ps, dtype=np.float64),
            clusters=np.asarray(cs, dtype=np.intp),
            keys=tuple(ks),
        )
        for a, (gs, ps, cs, ks) in values.items()
    }
    return JoinedLevel(level=level, counts=counts, pairs=pairs)


def join(pred: Sequence[Assessment], gold: Sequence[Assessment]) -> dict[str, JoinedLevel]:
    """:func:`join_level` at every level, keyed by level."""
    return {level: join_level(pred, gold, level) for level in ASPECTS}


def paired_scores(
    pred: Sequence[Assessment], gold: Sequence[Assessment]
) -> dict[tuple[str, str], tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """``(level, aspect) -> (human scores, predicted scores)`` of the pairs the metrics see, for
    every level and aspect (for scatter plots and calibration curves)."""
    out = {}
    for level, joined in join(pred, gold).items():
        for aspect, pairs in joined.pairs.items():
            out[(level, aspect)] = (pairs.gold, pairs.pred)
    return out
