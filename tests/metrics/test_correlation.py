"""PCC, SCC, Kendall's tau-b and RMSE against scipy, plain and weighted."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from apa.metrics.correlation import (
    BOTH_CONSTANT,
    FEWER_THAN_TWO,
    GOLD_CONSTANT,
    NO_PAIRS,
    PRED_CONSTANT,
    WeightedMetrics,
    kendall,
    pearson,
    rmse,
    spearman,
    weighted_kendall,
    weighted_pearson,
    weighted_rmse,
    weighted_spearman,
)

# No scipy warning (ConstantInputWarning, ...) and no numpy RuntimeWarning may escape.
pytestmark = pytest.mark.filterwarnings("error")

TOL = 1e-9

_rng = np.random.default_rng(762)
_g = _rng.integers(0, 11, 300).astype(float)
KNOWN = {
    "speechocean-like": (
        [8, 7, 9, 6, 10, 5, 8, 7, 3, 9, 6, 8],
        [7.6, 6.9, 8.8, 6.5, 9.1, 5.2, 7.7, 6.0, 4.1, 8.1, 6.6, 8.3],
    ),
    "negative": ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [9.5, 7.0, 7.5, 3.0, 2.5, 0.5]),
    "ties on both sides": ([0, 0, 1, 1, 1, 2, 2, 2, 2], [0, 1, 1, 1, 2, 1, 2, 2, 2]),
    "phone-like 0-2 in steps of 0.2": (
        [2.0, 2.0, 1.8, 2.0, 0.4, 1.6, 2.0, 0.0, 1.0, 2.0, 1.8, 0.2],
        [1.9, 1.7, 1.9, 2.0, 0.9, 1.2, 1.6, 0.1, 1.3, 1.8, 1.9, 0.8],
    ),
    "large with ties": (_g, np.round(_g + _rng.normal(0, 2, 300))),
    "uncorrelated continuous": (_rng.normal(size=200), _rng.normal(size=200)),
}


@pytest.mark.parametrize("name", KNOWN)
def test_known_data_match_scipy(name: str) -> None:
    gold, pred = KNOWN[name]
    assert pearson(gold, pred).value == pytest.approx(stats.pearsonr(gold, pred)[0], abs=TOL)
    assert spearman(gold, pred).value == pytest.approx(stats.spearmanr(gold, pred)[0], abs=TOL)
    assert kendall(gold, pred).value == pytest.approx(stats.kendalltau(gold, pred)[0], abs=TOL)
    expected_rmse = math.sqrt(np.mean((np.asarray(gold, float) - np.asarray(pred, float)) ** 2))
    assert rmse(gold, pred).value == pytest.approx(expected_rmse, abs=TOL)


def test_hand_computed_values() -> None:
    # r = cov/(sd*sd) = 4/5 for these; rho equals r (the data are ranks); tau = (5-1)/6.
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]).value == pytest.approx(0.8, abs=1e-12)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]).value == pytest.approx(0.8, abs=1e-12)
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4]).value == pytest.approx(4 / 6, abs=1e-12)
    assert rmse([0, 0, 0, 0], [1, -1, 1, -1]).value == pytest.approx(1.0, abs=1e-12)
    assert pearson([1, 2, 3], [3, 2, 1]).value == pytest.approx(-1.0, abs=1e-12)


def test_spearman_uses_average_ranks_for_ties() -> None:
    # Ranks of [1, 1, 2] are [1.5, 1.5, 3]; with ordinal ranks [1, 2, 3] rho would be 0.5.
    gold, pred = [1, 1, 2], [1, 2, 3]
    assert spearman(gold, pred).value == pytest.approx(math.sqrt(3) / 2, abs=1e-12)


@pytest.mark.parametrize(
    ("gold", "pred", "reason"),
    [
        ([3, 3, 3, 3], [1, 2, 3, 4], GOLD_CONSTANT),
        ([1, 2, 3, 4], [5, 5, 5, 5], PRED_CONSTANT),
        ([2, 2], [7, 7], BOTH_CONSTANT),
        ([1], [2], FEWER_THAN_TWO),
        ([], [], FEWER_THAN_TWO),
    ],
)
def test_undefined_correlations_give_reasons_not_nan(gold, pred, reason) -> None:
    for metric in (pearson, spearman, kendall):
        result = metric(gold, pred)
        assert result.value is None
        assert result.undefined == reason


def test_rmse_is_defined_on_constant_vectors_and_undefined_only_without_pairs() -> None:
    assert rmse([3, 3, 3], [3, 3, 3]).value == 0.0
    assert rmse([5], [3]).value == 2.0
    empty = rmse([], [])
    assert empty.value is None and empty.undefined == NO_PAIRS


@pytest.mark.parametrize("metric", [pearson, spearman, kendall, rmse])
def test_mismatched_lengths_raise_naming_both(metric) -> None:
    with pytest.raises(ValueError, match=r"3 gold vs 2 predicted"):
        metric([1, 2, 3], [1, 2])


@pytest.mark.parametrize("metric", [pearson, spearman, kendall, rmse])
def test_non_finite_scores_raise(metric) -> None:
    with pytest.raises(ValueError, match="finite"):
        metric([1, 2, float("nan")], [1, 2, 3])


def test_two_dimensional_input_is_refused() -> None:
    with pytest.raises(ValueError, match="1-D"):
        pearson([[1, 2], [3, 4]], [[1, 2], [3, 4]])


scores = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.2, 1.0, 1.8, 2.0, 5.0, 7.5, 10.0]),
        # Rounded to 1e-9: a spread of a few subnormals (5e-324) squares to 0 and counts as
        # constant (documented in apa.metrics.correlation); scores never look like that.
        st.one_of(
            st.floats(0, 10, allow_nan=False).map(lambda x: round(x, 9)),
            st.sampled_from([0.0, 1.0, 2.0]),
        ),
    ),
    min_size=0,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(scores)
def test_random_data_match_scipy_or_are_undefined(pairs) -> None:
    gold = np.array([g for g, _ in pairs])
    pred = np.array([p for _, p in pairs])
    constant = len(gold) < 2 or np.ptp(gold) == 0 or np.ptp(pred) == 0
    for metric, reference in (
        (pearson, stats.pearsonr),
        (spearman, stats.spearmanr),
        (kendall, stats.kendalltau),
    ):
        result = metric(gold, pred)
        if constant:
            assert result.value is None and result.undefined
        else:
            assert result.undefined is None
            assert result.value == pytest.approx(reference(gold, pred)[0], abs=TOL)


# --- weighted == repeated -------------------------------------------------------------------

WEIGHTED = [
    (weighted_pearson, stats.pearsonr),
    (weighted_spearman, stats.spearmanr),
    (weighted_kendall, stats.kendalltau),
]


@st.composite
def weighted_data(draw):
    n = draw(st.integers(1, 30))
    discrete = st.sampled_from([0.0, 0.4, 1.0, 1.6, 2.0])
    # Scores have a resolution (0.001 here). A resample whose spread is ~1e-9 of the whole
    # data's is lost to the one-pass moments' rounding and counts as constant, which scipy
    # does not do; no real score table looks like that.
    continuous = st.floats(-5, 5, allow_nan=False).map(lambda v: round(v, 3))
    gold = draw(st.lists(st.one_of(discrete, continuous), min_size=n, max_size=n))
    pred = draw(st.lists(st.one_of(discrete, continuous), min_size=n, max_size=n))
    weights = draw(
        st.lists(st.lists(st.integers(0, 4), min_size=n, max_size=n), min_size=1, max_size=4)
    )
    return np.array(gold), np.array(pred), np.array(weights)


@settings(max_examples=200, deadline=None)
@given(weighted_data())
def test_weighted_metrics_equal_scipy_on_repeated_data(data) -> None:
    gold, pred, weights = data
    for weighted, reference in WEIGHTED:
        values = weighted(gold, pred, weights)
        assert values.shape == (len(weights),)
        for row, value in zip(weights, values, strict=True):
            g, p = np.repeat(gold, row), np.repeat(pred, row)
            if len(g) < 2 or np.ptp(g) == 0 or np.ptp(p) == 0:
                assert np.isnan(value), weighted.__name__
            else:
                assert value == pytest.approx(reference(g, p)[0], abs=TOL), weighted.__name__
    for row, value in zip(weights, weighted_rmse(gold, pred, weights), strict=True):
        if row.sum() == 0:
            assert np.isnan(value)
        else:
            expected = math.sqrt(np.mean((np.repeat(gold, row) - np.repeat(pred, row)) ** 2))
            assert value == pytest.approx(expected, abs=TOL)


def test_weighted_metrics_on_large_continuous_data_match_scipy() -> None:
    # Both sides continuous: Kendall's merge plan has the most levels (log2 n).
    rng = np.random.default_rng(1)
    gold = rng.normal(size=3000)
    pred = -0.5 * gold + rng.normal(size=3000)
    weights = rng.integers(0, 3, (3, 3000))
    for weighted, reference in WEIGHTED:
        values = weighted(gold, pred, weights)
        for row, value in zip(weights, values, strict=True):
            expected = reference(np.repeat(gold, row), np.repeat(pred, row))[0]
            assert value == pytest.approx(expected, abs=TOL)


def test_unit_weights_reproduce_the_point_estimates() -> None:
    gold, pred = KNOWN["large with ties"]
    ones = np.ones(len(gold))
    assert weighted_pearson(gold, pred, ones) == pytest.approx(pearson(gold, pred).value, abs=1e-12)
    assert weighted_spearman(gold, pred, ones) == pytest.approx(
        spearman(gold, pred).value, abs=1e-12
    )
    assert weighted_kendall(gold, pred, ones) == pytest.approx(kendall(gold, pred).value, abs=1e-12)
    assert weighted_rmse(gold, pred, ones) == pytest.approx(rmse(gold, pred).value, abs=1e-12)


def test_cluster_counts_expand_to_unit_weights() -> None:
    rng = np.random.default_rng(2)
    gold = rng.integers(0, 11, 60).astype(float)
    pred = gold + rng.normal(0, 2, 60)
    index = np.repeat(np.arange(12), 5)  # 12 clusters of 5 units
    counts = rng.integers(0, 3, (4, 12))
    by_cluster = WeightedMetrics(gold, pred, index).all(counts)
    by_unit = WeightedMetrics(gold, pred).all(counts[:, index])
    for name in by_cluster:
        np.testing.assert_allclose(by_cluster[name], by_unit[name], rtol=0, atol=1e-12)


def test_weights_must_be_non_negative_integers_that_fit() -> None:
    with pytest.raises(ValueError, match="integers"):
        weighted_pearson([1, 2, 3], [1, 2, 4], [1, 0.5, 1])
    with pytest.raises(ValueError, match="integers"):
        weighted_kendall([1, 2, 3], [1, 2, 4], [1, -1, 1])
    with pytest.raises(ValueError, match="do not fit 3 pairs"):
        weighted_spearman([1, 2, 3], [1, 2, 4], [1, 1])


def test_zero_weight_rows_are_nan_not_errors() -> None:
    values = weighted_pearson([1, 2, 3], [1, 3, 2], [[0, 0, 0], [1, 1, 1], [5, 0, 0]])
    assert np.isnan(values[0]) and np.isnan(values[2])
    assert values[1] == pytest.approx(0.5)
    assert np.isnan(weighted_rmse([1, 2], [1, 2], [0, 0]))
