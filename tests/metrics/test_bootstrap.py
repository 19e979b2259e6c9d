"""Cluster-bootstrap intervals: coverage of the point, width, determinism, clusters, pairing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from apa.metrics.bootstrap import (
    METRICS,
    bootstrap_difference,
    bootstrap_estimates,
    cluster_index,
    replicate_metrics,
    resample_counts,
)

pytestmark = pytest.mark.filterwarnings("error")

CORRELATIONS = ("pcc", "scc", "kendall")


def _sample(n: int, *, seed: int = 0, noise: float = 2.0, per_cluster: int = 1):
    """Gold 0-10 integers, predictions = gold + noise; ``per_cluster`` units per utterance."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 11, n).astype(float)
    pred = np.clip(gold + rng.normal(0, noise, n), 0, 10)
    clusters = np.arange(n) // per_cluster
    return gold, pred, clusters


def _width(e) -> float:
    return e.ci_high - e.ci_low


def test_interval_contains_the_point_estimate() -> None:
    gold, pred, clusters = _sample(300, per_cluster=3)
    est = bootstrap_estimates(gold, pred, clusters, n_resamples=300, seed=1)
    assert set(est) == set(METRICS)
    for name, e in est.items():
        assert e.value is not None and e.undefined is None
        assert e.ci_low < e.value < e.ci_high, name
        assert e.ci_undefined is None and e.resamples_excluded == 0
    assert 0.5 < est["pcc"].value < 1.0


def test_interval_shrinks_with_more_data() -> None:
    small = bootstrap_estimates(*_sample(60), n_resamples=300)
    large = bootstrap_estimates(*_sample(2000), n_resamples=300)
    for name in METRICS:
        assert _width(large[name]) < 0.5 * _width(small[name]), name


def test_higher_confidence_gives_a_wider_interval() -> None:
    data = _sample(200)
    narrow = bootstrap_estimates(*data, n_resamples=400, confidence=0.5)
    wide = bootstrap_estimates(*data, n_resamples=400, confidence=0.99)
    for name in METRICS:
        assert _width(wide[name]) > _width(narrow[name]), name


def test_same_seed_same_intervals_other_seed_other_intervals() -> None:
    data = _sample(200, per_cluster=4)
    first = bootstrap_estimates(*data, n_resamples=200, seed=7)
    again = bootstrap_estimates(*data, n_resamples=200, seed=7)
    other = bootstrap_estimates(*data, n_resamples=200, seed=8)
    assert first == again
    assert first["pcc"].ci_low != other["pcc"].ci_low
    assert first["pcc"].value == other["pcc"].value


def test_cluster_bootstrap_is_wider_when_units_of_an_utterance_move_together() -> None:
    # 40 utterances of 10 identical units each: there are really 40 observations, not 400.
    gold, pred, _ = _sample(40, seed=3)
    gold, pred = np.repeat(gold, 10), np.repeat(pred, 10)
    utterances = np.repeat(np.arange(40), 10)
    by_utterance = bootstrap_estimates(gold, pred, utterances, n_resamples=400)
    by_unit = bootstrap_estimates(gold, pred, np.arange(400), n_resamples=400)
    for name in METRICS:
        assert by_utterance[name].value == pytest.approx(by_unit[name].value, abs=1e-12)
        assert _width(by_utterance[name]) > 2 * _width(by_unit[name]), name


def test_cluster_bootstrap_of_replicated_units_equals_bootstrap_of_the_utterances() -> None:
    # PCC, SCC and RMSE do not change when every unit is repeated the same number of times,
    # so resampling 40 clusters of 10 copies = resampling the 40 distinct pairs (same seed).
    gold, pred, _ = _sample(40, seed=3)
    clustered = bootstrap_estimates(
        np.repeat(gold, 10), np.repeat(pred, 10), np.repeat(np.arange(40), 10), n_resamples=200
    )
    plain = bootstrap_estimates(gold, pred, np.arange(40), n_resamples=200)
    for name in ("pcc", "scc", "rmse"):
        assert clustered[name].ci_low == pytest.approx(plain[name].ci_low, abs=1e-9)
        assert clustered[name].ci_high == pytest.approx(plain[name].ci_high, abs=1e-9)


def test_resample_values_equal_scipy_on_the_resampled_utterances() -> None:
    gold, pred, _ = _sample(90, seed=4)
    clusters = np.array([f"utt{i // 3:03d}" for i in range(90)])  # labels, not indices
    index, k = cluster_index(clusters)
    assert k == 30
    counts = resample_counts(k, 5, seed=0)
    (reps,) = replicate_metrics(gold, [pred], index, counts)
    for b in range(5):
        # Draw the resample the slow way: each drawn utterance contributes all its units.
        drawn = np.concatenate(
            [np.flatnonzero(index == c) for c in np.repeat(np.arange(k), counts[b])]
        )
        g, p = gold[drawn], pred[drawn]
        assert reps["pcc"][b] == pytest.approx(stats.pearsonr(g, p)[0], abs=1e-9)
        assert reps["scc"][b] == pytest.approx(stats.spearmanr(g, p)[0], abs=1e-9)
        assert reps["kendall"][b] == pytest.approx(stats.kendalltau(g, p)[0], abs=1e-9)
        assert reps["rmse"][b] == pytest.approx(np.sqrt(np.mean((g - p) ** 2)), abs=1e-9)


def test_resample_counts_draw_every_row_with_replacement() -> None:
    counts = resample_counts(25, 400, seed=0)
    assert counts.shape == (400, 25)
    assert (counts.sum(axis=1) == 25).all()
    assert (counts >= 0).all() and counts.max() > 1  # with replacement
    # Each cluster is drawn once per resample on average.
    assert counts.mean(axis=0) == pytest.approx(np.ones(25), abs=0.2)
    assert np.array_equal(counts, resample_counts(25, 400, seed=0))


def test_paired_difference_of_a_system_with_itself_is_exactly_zero() -> None:
    gold, pred, clusters = _sample(200, per_cluster=5)
    diff = bootstrap_difference(gold, pred, pred, clusters, n_resamples=200)
    for name, e in diff.items():
        assert (e.value, e.ci_low, e.ci_high) == (0.0, 0.0, 0.0), name


def test_clearly_better_system_has_a_difference_interval_excluding_zero() -> None:
    gold, good, clusters = _sample(300, noise=1.0, per_cluster=3)
    rng = np.random.default_rng(9)
    poor = np.clip(gold + rng.normal(0, 3.0, len(gold)), 0, 10)
    diff = bootstrap_difference(gold, good, poor, clusters, n_resamples=300)
    for name in CORRELATIONS:
        assert diff[name].value > 0 and diff[name].ci_low > 0, name
    assert diff["rmse"].value < 0 and diff["rmse"].ci_high < 0
    # The difference is a - b of the single-system point estimates.
    a = bootstrap_estimates(gold, good, clusters, n_resamples=0)
    b = bootstrap_estimates(gold, poor, clusters, n_resamples=0)
    for name in METRICS:
        assert diff[name].value == pytest.approx(a[name].value - b[name].value, abs=1e-12)


def test_paired_interval_is_narrower_than_the_two_intervals_suggest() -> None:
    # Two systems sharing most of their error: pairing cancels the shared part.
    rng = np.random.default_rng(5)
    gold = rng.integers(0, 11, 400).astype(float)
    shared = rng.normal(0, 2, 400)
    a, b = gold + shared, gold + shared + rng.normal(0, 0.3, 400)
    clusters = np.arange(400) // 4
    diff = bootstrap_difference(gold, a, b, clusters, n_resamples=300)
    single = bootstrap_estimates(gold, a, clusters, n_resamples=300)
    assert _width(diff["pcc"]) < 0.5 * _width(single["pcc"])


def test_no_resamples_gives_point_estimates_only() -> None:
    est = bootstrap_estimates(*_sample(50), n_resamples=0)
    for e in est.values():
        assert e.value is not None
        assert e.ci_low is None and e.ci_high is None
        assert "n_resamples is 0" in e.ci_undefined


def test_a_single_utterance_gives_no_interval() -> None:
    est = bootstrap_estimates([1, 2, 3, 4], [1, 3, 2, 4], [0, 0, 0, 0], n_resamples=50)
    assert est["pcc"].value == pytest.approx(0.8)
    assert est["pcc"].ci_low is None
    assert est["pcc"].ci_undefined == "fewer than 2 utterances to resample"


def test_constant_resamples_are_excluded_and_too_many_withhold_the_interval() -> None:
    # Gold differs in one of 4 utterances only: (3/4)^4 = 32% of resamples miss it.
    gold, pred, clusters = [0, 0, 0, 1], [0.0, 1.0, 2.0, 3.0], [0, 1, 2, 3]
    strict = bootstrap_estimates(gold, pred, clusters, n_resamples=400)
    assert strict["pcc"].value is not None
    assert strict["pcc"].ci_low is None and strict["pcc"].ci_high is None
    assert "resamples" in strict["pcc"].ci_undefined
    assert 60 < strict["pcc"].resamples_excluded < 200
    # RMSE is defined on every resample.
    assert strict["rmse"].ci_low is not None and strict["rmse"].resamples_excluded == 0

    lenient = bootstrap_estimates(gold, pred, clusters, n_resamples=400, max_undefined=0.5)
    assert lenient["pcc"].ci_low is not None and lenient["pcc"].ci_undefined is None
    assert lenient["pcc"].resamples_excluded == strict["pcc"].resamples_excluded


def test_undefined_point_estimate_stays_undefined_without_interval() -> None:
    est = bootstrap_estimates([5, 5, 5, 5], [1, 2, 3, 4], [0, 1, 2, 3], n_resamples=50)
    for name in CORRELATIONS:
        assert est[name].value is None
        assert est[name].undefined == "gold scores are constant"
        assert est[name].ci_low is None
    assert est["rmse"].value is not None and est["rmse"].ci_low is not None


def test_difference_is_undefined_when_either_side_is() -> None:
    gold, clusters = [1, 2, 3, 4], [0, 1, 2, 3]
    diff = bootstrap_difference(gold, [1, 2, 3, 5], [2, 2, 2, 2], clusters, n_resamples=20)
    assert diff["pcc"].value is None
    assert diff["pcc"].undefined == "b: predictions are constant"
    same = bootstrap_difference([3, 3, 3, 3], [1, 2, 3, 4], [4, 3, 2, 1], clusters, n_resamples=20)
    assert same["scc"].undefined == "gold scores are constant"


def test_empty_input_is_undefined_everywhere() -> None:
    est = bootstrap_estimates([], [], [], n_resamples=20)
    for e in est.values():
        assert e.value is None and e.undefined


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clusters": [0, 1]}, "3 pairs but 2 cluster labels"),
        ({"confidence": 1.0}, "confidence"),
        ({"n_resamples": -1}, "n_resamples"),
        ({"pred": [1, 2]}, "3 gold vs 2 predicted"),
    ],
)
def test_bad_arguments_raise(kwargs, message) -> None:
    args = {"gold": [1, 2, 3], "pred": [1, 3, 2], "clusters": [0, 1, 2]} | kwargs
    gold, pred, clusters = args.pop("gold"), args.pop("pred"), args.pop("clusters")
    with pytest.raises(ValueError, match=message):
        bootstrap_estimates(gold, pred, clusters, **args)
