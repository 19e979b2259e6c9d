"""Joining predictions to human scores: keys, counts, and nothing dropped without a count."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apa.metrics.join import join, join_level, paired_scores
from apa.schema import ASPECTS, Assessment, PhoneAssessment, SentenceScores, WordAssessment
from apa.text import normalize_word

# Canonical phones of the words used below.
PHONES = {
    "WE": ["W", "IY1"],
    "CALL": ["K", "AO1", "L"],
    "FALL": ["F", "AO1", "L"],
    "IT": ["IH1", "T"],
}


def assessment(
    uid: str,
    text: str = "we call it",
    *,
    score: float = 8.0,
    sentence: dict[str, float | None] | None = None,
    word: dict[str, float | None] | None = None,
    phone_accuracy: float | None = 2.0,
    phones: dict[int, list[str]] | None = None,
    with_words: bool = True,
    model: str | None = None,
    model_is_random: bool = False,
) -> Assessment:
    """An assessment of ``text`` with every score ``score`` (phones: ``phone_accuracy``);
    ``sentence``/``word`` override aspects, ``phones`` a word's canonical phones by index."""
    sentence_scores = dict.fromkeys(ASPECTS["sentence"], score) | (sentence or {})
    words = []
    for i, w in enumerate(text.split()):
        canonical = (phones or {}).get(i, PHONES[normalize_word(w)])
        words.append(
            WordAssessment(
                text=w,
                **(dict.fromkeys(ASPECTS["word"], score) | (word or {})),
                phones=[PhoneAssessment(phone=p, accuracy=phone_accuracy) for p in canonical],
            )
        )
    return Assessment(
        utterance_id=uid,
        text=text,
        sentence=SentenceScores(**sentence_scores),
        words=words if with_words else [],
        model=model,
        model_is_random=model_is_random,
    )


def counts(joined) -> dict:
    c = joined.counts
    return {
        k: getattr(c, k)
        for k in ("predicted", "gold", "matched", "mismatched", "pred_only", "gold_only")
    }


def test_everything_matches_when_both_sides_agree() -> None:
    gold = [assessment("u1"), assessment("u2", "we call")]
    pred = [assessment("u2", "we call", score=5.0), assessment("u1", score=6.0)]
    for level, n in (("sentence", 2), ("word", 5), ("phone", 12)):
        joined = join_level(pred, gold, level)
        assert counts(joined) == dict(
            predicted=n, gold=n, matched=n, mismatched=0, pred_only=0, gold_only=0
        )
        assert joined.counts.duplicate_predictions == 0
        for aspect in ASPECTS[level]:
            assert joined.pairs[aspect].n == n
    # Pairs follow the human scores' order; the cluster is the utterance's position there.
    words = join_level(pred, gold, "word").pairs["accuracy"]
    assert words.keys == (("u1", 0), ("u1", 1), ("u1", 2), ("u2", 0), ("u2", 1))
    assert list(words.clusters) == [0, 0, 0, 1, 1]
    assert list(words.pred) == [6.0, 6.0, 6.0, 5.0, 5.0]
    assert list(words.gold) == [8.0] * 5
    assert words.n_utterances == 2


def test_missing_utterance_counts_as_gold_only_at_every_level() -> None:
    gold = [assessment("u1"), assessment("u2")]
    pred = [assessment("u1")]
    assert counts(join_level(pred, gold, "sentence")) == dict(
        predicted=1, gold=2, matched=1, mismatched=0, pred_only=0, gold_only=1
    )
    assert join_level(pred, gold, "word").counts.gold_only == 3
    assert join_level(pred, gold, "phone").counts.gold_only == 7


def test_prediction_for_an_unscored_utterance_counts_as_pred_only() -> None:
    gold = [assessment("u1")]
    pred = [assessment("u1"), assessment("extra", "we call")]
    assert join_level(pred, gold, "sentence").counts.pred_only == 1
    word = join_level(pred, gold, "word").counts
    assert (word.predicted, word.pred_only, word.matched) == (5, 2, 3)
    assert join_level(pred, gold, "phone").counts.pred_only == 5


def test_extra_and_missing_phones_are_counted_on_their_side() -> None:
    gold = [assessment("u1")]
    extra = [assessment("u1", phones={1: ["K", "AO1", "L", "Z"]})]  # one phone too many
    fewer = [assessment("u1", phones={1: ["K", "AO1"]})]  # one too few
    assert counts(join_level(extra, gold, "phone")) == dict(
        predicted=8, gold=7, matched=7, mismatched=0, pred_only=1, gold_only=0
    )
    assert counts(join_level(fewer, gold, "phone")) == dict(
        predicted=6, gold=7, matched=6, mismatched=0, pred_only=0, gold_only=1
    )
    # Words are unaffected by their phones.
    assert join_level(extra, gold, "word").counts.matched == 3


def test_mismatched_word_text_is_excluded_with_its_phones_and_sentence() -> None:
    gold = [assessment("u1", "we call it")]
    pred = [assessment("u1", "we fall it", score=3.0)]
    word = join_level(pred, gold, "word")
    assert counts(word) == dict(
        predicted=3, gold=3, matched=2, mismatched=1, pred_only=0, gold_only=0
    )
    assert ("u1", 1) not in word.pairs["accuracy"].keys
    # FALL's phones F AO1 L meet CALL's K AO1 L: all three belong to another word.
    phone = join_level(pred, gold, "phone")
    assert (phone.counts.matched, phone.counts.mismatched) == (4, 3)
    # The sentence was read from another text: its scores are not comparable either.
    sentence = join_level(pred, gold, "sentence")
    assert (sentence.counts.matched, sentence.counts.mismatched) == (0, 1)
    assert sentence.pairs["fluency"].n == 0


def test_word_text_is_compared_normalised() -> None:
    gold = [assessment("u1", "We call it.")]
    pred = [assessment("u1", "WE CALL IT")]
    assert join_level(pred, gold, "word").counts.matched == 3
    assert join_level(pred, gold, "sentence").counts.matched == 1


def test_phones_are_compared_without_stress_digits() -> None:
    gold = [assessment("u1", "call")]
    stress = [assessment("u1", "call", phones={0: ["K", "AO0", "L"]})]
    other = [assessment("u1", "call", phones={0: ["K", "AA1", "L"]})]
    assert join_level(stress, gold, "phone").counts.mismatched == 0
    joined = join_level(other, gold, "phone")
    assert (joined.counts.matched, joined.counts.mismatched) == (2, 1)
    assert ("u1", 0, 1) not in joined.pairs["accuracy"].keys


def test_duplicate_predictions_keep_the_first_and_count_the_rest() -> None:
    gold = [assessment("u1"), assessment("u2")]
    pred = [assessment("u1", score=4.0), assessment("u2"), assessment("u1", score=9.0)]
    for level, units in (("sentence", 1), ("word", 3), ("phone", 7)):
        joined = join_level(pred, gold, level)
        assert joined.counts.duplicate_predictions == units
        assert joined.counts.predicted == joined.counts.gold  # duplicates not counted again
    accuracy = join_level(pred, gold, "sentence").pairs["accuracy"]
    assert list(accuracy.pred) == [4.0, 8.0]


def test_none_scores_are_counted_per_aspect_and_left_out_of_the_pairs() -> None:
    gold = [assessment("u1"), assessment("u2", phone_accuracy=None)]
    pred = [
        assessment("u1", sentence={"prosody": None}, word={"stress": None}),
        assessment("u2", sentence={"prosody": None, "fluency": None}),
    ]
    sentence = join_level(pred, gold, "sentence")
    assert sentence.counts.pred_missing == {
        "accuracy": 0,
        "fluency": 1,
        "prosody": 2,
        "completeness": 0,
        "total": 0,
    }
    assert sentence.counts.gold_missing == dict.fromkeys(ASPECTS["sentence"], 0)
    assert sentence.counts.matched == 2  # a unit with a missing score still matched
    assert sentence.pairs["prosody"].n == 0
    assert sentence.pairs["fluency"].n == 1
    assert sentence.pairs["accuracy"].n == 2
    word = join_level(pred, gold, "word")
    assert word.counts.pred_missing == {"accuracy": 0, "stress": 3, "total": 0}
    assert word.pairs["stress"].keys == (("u2", 0), ("u2", 1), ("u2", 2))
    phone = join_level(pred, gold, "phone")
    assert phone.counts.gold_missing == {"accuracy": 7}
    assert phone.pairs["accuracy"].n == 7


def test_sentence_only_predictions_leave_all_words_and_phones_gold_only() -> None:
    gold = [assessment("u1")]
    pred = [assessment("u1", with_words=False)]
    assert join_level(pred, gold, "sentence").counts.matched == 1
    assert counts(join_level(pred, gold, "word")) == dict(
        predicted=0, gold=3, matched=0, mismatched=0, pred_only=0, gold_only=3
    )


def test_duplicate_human_scores_and_unknown_levels_are_errors() -> None:
    with pytest.raises(ValueError, match="u1"):
        join_level([], [assessment("u1"), assessment("u1")], "word")
    with pytest.raises(ValueError, match="unknown level"):
        join_level([], [], "syllable")


def test_restrict_keeps_order_and_alignment() -> None:
    gold = [assessment("u1"), assessment("u2")]
    pred = [assessment("u1", score=1.0), assessment("u2", score=2.0)]
    pairs = join_level(pred, gold, "word").pairs["total"]
    kept = pairs.restrict({("u2", 1), ("u1", 2)})
    assert kept.keys == (("u1", 2), ("u2", 1))
    assert list(kept.pred) == [1.0, 2.0]
    assert list(kept.clusters) == [0, 1]


def test_paired_scores_gives_every_level_and_aspect() -> None:
    gold = [assessment("u1", score=7.0), assessment("u2", score=9.0)]
    pred = [assessment("u1", score=6.0, phone_accuracy=1.0), assessment("u2", score=8.0)]
    pairs = paired_scores(pred, gold)
    assert set(pairs) == {(level, a) for level, aspects in ASPECTS.items() for a in aspects}
    human, predicted = pairs[("sentence", "total")]
    assert list(human) == [7.0, 9.0] and list(predicted) == [6.0, 8.0]
    assert len(pairs[("phone", "accuracy")][0]) == 14
    assert pairs[("phone", "accuracy")][1].dtype == np.float64


# --- the counts add up, whatever the inputs ---------------------------------------------------

VOCABULARY = sorted(PHONES)


@st.composite
def random_assessment(draw, uid: str) -> Assessment:
    words = draw(st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=4))
    maybe = st.one_of(st.none(), st.sampled_from([0.0, 5.0, 10.0]))
    word_list = []
    for w in words:
        phones = draw(
            st.lists(st.sampled_from(["W", "IY1", "IY0", "K", "AO1", "L", "T"]), max_size=4)
        )
        word_list.append(
            WordAssessment(
                text=w,
                accuracy=draw(maybe),
                stress=draw(maybe),
                total=draw(maybe),
                phones=[
                    PhoneAssessment(phone=p, accuracy=draw(st.one_of(st.none(), st.just(1.0))))
                    for p in phones
                ],
            )
        )
    return Assessment(
        utterance_id=uid,
        text=" ".join(words),
        sentence=SentenceScores(**{a: draw(maybe) for a in ASPECTS["sentence"]}),
        words=word_list if draw(st.booleans()) else [],  # sometimes sentence level only
    )


@st.composite
def sides(draw):
    ids = ["a", "b", "c", "d"]
    gold_ids = draw(st.lists(st.sampled_from(ids), unique=True, max_size=4))
    pred_ids = draw(st.lists(st.sampled_from(ids), max_size=6))  # duplicates allowed
    gold = [draw(random_assessment(u)) for u in gold_ids]
    pred = [draw(random_assessment(u)) for u in pred_ids]
    return pred, gold


def _units(a: Assessment, level: str) -> int:
    if level == "sentence":
        return 1
    if level == "word":
        return len(a.words)
    return sum(len(w.phones) for w in a.words)


@settings(max_examples=300, deadline=None)
@given(sides())
def test_counts_add_up(data) -> None:
    pred, gold = data
    first: dict[str, Assessment] = {}
    for p in pred:
        first.setdefault(p.utterance_id, p)
    for level, joined in join(pred, gold).items():
        c = joined.counts
        assert c.predicted == c.matched + c.mismatched + c.pred_only
        assert c.gold == c.matched + c.mismatched + c.gold_only
        assert c.predicted == sum(_units(p, level) for p in first.values())
        assert c.gold == sum(_units(g, level) for g in gold)
        assert c.predicted + c.duplicate_predictions == sum(_units(p, level) for p in pred)
        for aspect in ASPECTS[level]:
            n = joined.pairs[aspect].n
            missing_p, missing_g = c.pred_missing[aspect], c.gold_missing[aspect]
            assert max(missing_p, missing_g) <= c.matched
            assert c.matched - missing_p - missing_g <= n <= c.matched - max(missing_p, missing_g)
            assert len(joined.pairs[aspect].keys) == len(set(joined.pairs[aspect].keys)) == n
