"""Whole evaluations: every level and aspect reported, systems compared on shared units."""

from __future__ import annotations

import json

import pytest

from apa.metrics.correlation import kendall, pearson, rmse, spearman
from apa.metrics.evaluate import compare_systems, evaluate, evaluate_system
from apa.metrics.join import join_level
from apa.metrics.result import Evaluation
from apa.schema import ASPECTS
from apa.testing.factories import synthetic_scores as corpus

pytestmark = pytest.mark.filterwarnings("error")

LEVEL_ASPECTS = [(level, a) for level, aspects in ASPECTS.items() for a in aspects]


def test_every_level_and_aspect_is_reported_with_intervals() -> None:
    gold, pred = corpus()
    result = evaluate_system(pred, gold, name="sys", n_resamples=100)
    assert result.name == "sys"
    assert [(a.level, a.aspect) for a in result.aspects] == LEVEL_ASPECTS
    assert [j.level for j in result.join] == list(ASPECTS)
    n_phones = sum(len(w.phones) for g in gold for w in g.words)
    for a in result.aspects:
        assert a.n_utterances == 40
        assert a.n == {"sentence": 40, "word": 120, "phone": n_phones}[a.level]
        for metric in (a.pcc, a.scc, a.kendall, a.rmse):
            assert metric.value is not None
            assert metric.ci_low <= metric.value <= metric.ci_high
        assert a.pcc.value > 0.5


def test_metrics_are_those_of_the_joined_pairs() -> None:
    gold, pred = corpus(seed=1)
    result = evaluate_system(pred, gold, name="sys", n_resamples=0)
    by_key = {(a.level, a.aspect): a for a in result.aspects}
    for level, aspect in LEVEL_ASPECTS:
        pairs = join_level(pred, gold, level).pairs[aspect]
        got = by_key[(level, aspect)]
        assert got.n == pairs.n
        assert got.pcc.value == pearson(pairs.gold, pairs.pred).value
        assert got.scc.value == spearman(pairs.gold, pairs.pred).value
        assert got.kendall.value == kendall(pairs.gold, pairs.pred).value
        assert got.rmse.value == rmse(pairs.gold, pairs.pred).value
        assert got.pcc.ci_low is None


def test_aspects_without_pairs_are_reported_undefined() -> None:
    gold, pred = corpus(n=10)
    # A scorer without prosody and without word/phone output.
    pred = [
        p.model_copy(
            update={"sentence": p.sentence.model_copy(update={"prosody": None}), "words": []}
        )
        for p in pred
    ]
    result = evaluate_system(pred, gold, name="sentence-only", n_resamples=20)
    by_key = {(a.level, a.aspect): a for a in result.aspects}
    assert len(by_key) == len(LEVEL_ASPECTS)
    for key in [("sentence", "prosody"), ("word", "stress"), ("phone", "accuracy")]:
        a = by_key[key]
        assert (a.n, a.n_utterances) == (0, 0)
        assert a.pcc.value is None and a.pcc.undefined == "fewer than 2 pairs"
        assert a.rmse.value is None and a.rmse.undefined == "no pairs"
    assert by_key[("sentence", "fluency")].n == 10
    join = {j.level: j for j in result.join}
    assert join["sentence"].pred_missing["prosody"] == 10
    assert join["word"].gold_only == 30


def test_json_has_no_nan_even_when_metrics_are_undefined() -> None:
    gold, pred = corpus(n=6)
    # Constant predictions: correlations undefined everywhere.
    pred = [p.model_copy(update={"sentence": gold[0].sentence, "words": []}) for p in pred]
    text = evaluate({"const": pred}, gold, n_resamples=20).model_dump_json()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text)  # strict JSON
    assert Evaluation.model_validate_json(text).systems[0].aspects[0].pcc.undefined


def test_model_name_and_randomness_come_from_the_predictions() -> None:
    gold, pred = corpus(n=5)
    result = evaluate_system(pred, gold, name="x", n_resamples=0)
    assert (result.model, result.model_is_random) == ("m", False)
    mixed = [pred[0].model_copy(update={"model": "other", "model_is_random": True}), *pred[1:]]
    result = evaluate_system(mixed, gold, name="x", n_resamples=0)
    assert (result.model, result.model_is_random) == (None, True)


def test_compare_uses_only_units_both_systems_scored() -> None:
    gold, a = corpus(n=30, noise=1.0, seed=2)
    _, b = corpus(n=30, noise=3.0, seed=3)
    b = b[:20]  # system b failed on 10 utterances
    b[0] = b[0].model_copy(update={"sentence": b[0].sentence.model_copy(update={"total": None})})
    diffs = compare_systems(a, b, gold, name_a="a", name_b="b", n_resamples=50)
    assert [(d.level, d.aspect) for d in diffs] == LEVEL_ASPECTS
    by_key = {(d.level, d.aspect): d for d in diffs}
    assert by_key[("sentence", "accuracy")].n == 20
    assert by_key[("sentence", "total")].n == 19
    assert by_key[("word", "accuracy")].n == 60
    d = by_key[("sentence", "accuracy")]
    assert (d.a, d.b) == ("a", "b")
    # The point difference is taken on the shared utterances, not on all of a's.
    shared = join_level(a[:20], gold[:20], "sentence").pairs["accuracy"]
    other = join_level(b, gold[:20], "sentence").pairs["accuracy"]
    expected = pearson(shared.gold, shared.pred).value - pearson(other.gold, other.pred).value
    assert d.pcc.value == pytest.approx(expected, abs=1e-12)


def test_a_system_compared_with_itself_differs_by_exactly_zero() -> None:
    gold, pred = corpus(n=20)
    for d in compare_systems(pred, pred, gold, name_a="a", name_b="a", n_resamples=50):
        for metric in (d.pcc, d.scc, d.kendall, d.rmse):
            assert (metric.value, metric.ci_low, metric.ci_high) == (0.0, 0.0, 0.0)


def test_evaluate_compares_the_first_system_with_each_other_one() -> None:
    gold, good = corpus(n=60, noise=0.5, seed=4)
    _, poor = corpus(n=60, noise=4.0, seed=5)
    _, mid = corpus(n=60, noise=2.0, seed=6)
    result = evaluate({"good": good, "poor": poor, "mid": mid}, gold, n_resamples=100, seed=3)
    assert [s.name for s in result.systems] == ["good", "poor", "mid"]
    assert [(d.a, d.b) for d in result.differences] == [("good", "poor")] * 9 + [
        ("good", "mid")
    ] * 9
    assert (result.n_resamples, result.confidence, result.seed) == (100, 0.95, 3)
    assert result.resampling_unit == "utterance"
    phone = next(d for d in result.differences if d.b == "poor" and d.level == "phone")
    assert phone.pcc.ci_low > 0 and phone.rmse.ci_high < 0


def test_evaluation_is_deterministic_given_the_seed() -> None:
    gold, pred = corpus(n=25)
    first = evaluate({"s": pred}, gold, n_resamples=50, seed=11)
    assert first == evaluate({"s": pred}, gold, n_resamples=50, seed=11)
    assert first != evaluate({"s": pred}, gold, n_resamples=50, seed=12)


def test_evaluate_needs_a_system() -> None:
    with pytest.raises(ValueError, match="no systems"):
        evaluate({}, [])
