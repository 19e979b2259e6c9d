"""Agreement metrics between human (gold) and predicted scores: PCC, SCC, Kendall's tau-b, RMSE.

Each metric comes in two forms:

* ``pearson(gold, pred)`` and friends return an :class:`~apa.metrics.result.Estimate`: a value,
  or ``None`` with the reason it is undefined (constant scores, fewer than two pairs). No NaN
  and no scipy warning ever comes out of them.
* ``weighted_pearson(gold, pred, weights)`` and friends take non-negative integer weights
  (repeat counts), one row per resample (``(n,)`` or ``(b, n)``), and equal the plain metric on
  the data with each unit repeated ``weight`` times (``np.repeat``). They return a float array
  with NaN marking a row on which the metric is undefined. :class:`WeightedMetrics` computes
  all four at once, with weights given per cluster; the bootstrap runs on it.

>>> round(pearson([1, 2, 3, 4], [1, 3, 2, 4]).value, 12)
0.8
>>> spearman([1, 1, 1], [1, 2, 3]).undefined
'gold scores are constant'
>>> weighted_kendall([1, 2, 3, 4], [1, 3, 2, 4], [[1, 1, 1, 1], [0, 0, 1, 1]])
array([0.66666667, 1.        ])
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from apa.metrics.result import Estimate

FloatArray = NDArray[np.float64]

FEWER_THAN_TWO = "fewer than 2 pairs"
NO_PAIRS = "no pairs"
GOLD_CONSTANT = "gold scores are constant"
PRED_CONSTANT = "predictions are constant"
BOTH_CONSTANT = "gold scores and predictions are constant"


def as_pairs(gold: ArrayLike, pred: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Two equally long 1-D float64 arrays of finite scores, or ``ValueError``."""
    x = np.asarray(gold, dtype=np.float64)
    y = np.asarray(pred, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"expected 1-D score vectors, got shapes {x.shape} and {y.shape}")
    if len(x) != len(y):
        raise ValueError(
            f"gold and predictions differ in length: {len(x)} gold vs {len(y)} predicted"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("scores must be finite (no NaN or infinity)")
    return x, y


def correlation_undefined(gold: FloatArray, pred: FloatArray) -> str | None:
    """Why a correlation of these (checked) vectors is undefined, or ``None``."""
    if len(gold) < 2:
        return FEWER_THAN_TWO
    gold_constant = bool(gold.min() == gold.max())
    pred_constant = bool(pred.min() == pred.max())
    if gold_constant and pred_constant:
        return BOTH_CONSTANT
    if gold_constant:
        return GOLD_CONSTANT
    if pred_constant:
        return PRED_CONSTANT
    return None


# --- point estimates --------------------------------------------------------------------------


def _correlation(gold: ArrayLike, pred: ArrayLike, weighted) -> Estimate:
    x, y = as_pairs(gold, pred)
    reason = correlation_undefined(x, y)
    if reason is not None:
        return Estimate(value=None, undefined=reason)
    value = float(weighted(x, y, np.ones(len(x))))
    if not math.isfinite(value):  # pragma: no cover - guarded above; never let NaN out
        return Estimate(value=None, undefined="not computable (scores too close to constant)")
    return Estimate(value=value)


def pearson(gold: ArrayLike, pred: ArrayLike) -> Estimate:
    """Pearson's r (PCC)."""
    return _correlation(gold, pred, weighted_pearson)


def spearman(gold: ArrayLike, pred: ArrayLike) -> Estimate:
    """Spearman's rho (SCC): Pearson's r of the ranks, tied values sharing their average rank."""
    return _correlation(gold, pred, weighted_spearman)


def kendall(gold: ArrayLike, pred: ArrayLike) -> Estimate:
    """Kendall's tau-b (ties corrected), as :func:`scipy.stats.kendalltau` computes it."""
    x, y = as_pairs(gold, pred)
    reason = correlation_undefined(x, y)
    if reason is not None:
        return Estimate(value=None, undefined=reason)
    return Estimate(value=float(stats.kendalltau(x, y).statistic))


def rmse(gold: ArrayLike, pred: ArrayLike) -> Estimate:
    """Root mean squared error, in the units of the scores; undefined only without pairs."""
    x, y = as_pairs(gold, pred)
    if len(x) == 0:
        return Estimate(value=None, undefined=NO_PAIRS)
    return Estimate(value=float(weighted_rmse(x, y, np.ones(len(x)))))


# --- weighted forms ---------------------------------------------------------------------------

IntArray = NDArray[np.int64]


class Ties:
    """The tie groups of a score vector, from one stable sort, reusable for any weights.

    ``group[i]`` is the dense rank (from 0) of unit ``i``'s value.
    """

    def __init__(self, values: FloatArray) -> None:
        n = len(values)
        self.order = np.argsort(values, kind="stable")
        ordered = values[self.order]
        first = np.ones(n, dtype=bool)
        first[1:] = ordered[1:] != ordered[:-1]
        self.starts = np.flatnonzero(first)
        self.group = np.empty(n, dtype=np.intp)
        self.group[self.order] = np.cumsum(first) - 1
        self.n_groups = len(self.starts)

    def group_weights(self, counts: IntArray, index: NDArray[np.intp]) -> IntArray:
        """Total weight of each value, one row per resample; unit ``i`` weighs
        ``counts[:, index[i]]``."""
        ordered = counts[:, index[self.order]]
        if self.n_groups == len(self.order):  # no ties (or no units)
            return ordered
        return np.add.reduceat(ordered, self.starts, axis=1)

    @staticmethod
    def constant(group_weights: IntArray) -> NDArray[np.bool_]:
        """Rows whose positive-weight units all share one value (or that have no weight)."""
        return np.count_nonzero(group_weights, axis=1) < 2

    @staticmethod
    def centred_ranks(group_weights: IntArray) -> FloatArray:
        """Average rank of each value minus the mean rank, per row.

        A value preceded by total weight ``S`` whose tie group weighs ``G`` takes rank
        ``S + (G + 1) / 2``: the average rank of its copies in the repeated data. With total
        weight ``T`` the mean rank is ``(T + 1) / 2``, so the centred rank is
        ``S + G / 2 - T / 2``.
        """
        through = np.cumsum(group_weights, axis=1)  # integer: exact and fast
        total = through[:, -1:] if through.shape[1] else np.zeros((len(through), 1))
        return through - group_weights / 2 - total / 2


def _finish(
    num: FloatArray, sxx: FloatArray, syy: FloatArray, undefined: NDArray[np.bool_]
) -> FloatArray:
    undefined = undefined | (sxx <= 0) | (syy <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / np.sqrt(sxx * syy)
    return np.where(undefined, np.nan, np.clip(r, -1.0, 1.0))


def _centred(values: FloatArray) -> FloatArray:
    if not len(values):
        return values
    centred = values - values.mean()
    scale = np.abs(centred).max()
    return centred / scale if scale > 0 else centred


class WeightedMetrics:
    """PCC, SCC, Kendall's tau-b and RMSE of ``(gold, pred)`` under many weightings at once.

    A weighting gives unit ``i`` the integer weight ``counts[b, index[i]]`` in row ``b``
    (``index`` maps units to clusters, e.g. utterances; by default every unit is its own
    cluster). Each metric equals the plain one on the data with every unit repeated by its
    weight, and is NaN on a row where it is undefined (constant scores, no weight; also a row
    whose spread is so small next to the whole data's that its square underflows, ~1e-150).

    * Pearson and RMSE come from weighted moments: per-cluster sums of the centred scores,
      their squares and products, times the counts.
    * Spearman uses weighted average ranks from the tie-group weights (one sort, reused).
    * Kendall's tau-b needs the tie totals and the weighted count of discordant pairs. Sort
      the units by ``u`` then ``v`` (``u`` the variable with fewer distinct values): the ``u``
      tie groups are then runs sorted by ``v``, and a bottom-up merge of the runs by ``v``
      meets every discordant pair exactly once, as a left-run unit with a larger ``v`` than a
      right-run unit. The merge plan depends only on the data, so it is built once; a
      weighting then costs a few gathers and integer cumulative sums per merge level
      (``ceil(log2(runs))``: 4 for 11 distinct gold scores). Counts are exact integers.
    """

    def __init__(
        self,
        gold: FloatArray,
        pred: FloatArray,
        index: NDArray[np.intp] | None = None,
        *,
        gold_ties: Ties | None = None,
    ) -> None:
        n = len(gold)
        self.gold, self.pred = gold, pred
        self.index = np.arange(n) if index is None else np.asarray(index, dtype=np.intp)
        self.n_clusters = int(self.index.max()) + 1 if n else 0
        self.gold_ties = gold_ties if gold_ties is not None else Ties(gold)
        self.pred_ties = Ties(pred)
        # Moments about the unweighted means keep the one-pass variance free of cancellation;
        # scaling to at most 1 keeps squares of tiny spreads from underflowing.
        xc, yc = _centred(gold), _centred(pred)
        columns = (np.ones(n), xc, yc, xc * xc, yc * yc, xc * yc, (gold - pred) ** 2)
        self.cluster_moments = np.column_stack(
            [np.bincount(self.index, weights=c, minlength=self.n_clusters) for c in columns]
        )
        self._merge_plan: list[tuple[NDArray[np.intp], ...]] | None = None

    # One row per weighting; ``counts`` is ``(b, n_clusters)`` non-negative integers.

    def all(self, counts: IntArray) -> dict[str, FloatArray]:
        """``{"pcc", "scc", "kendall", "rmse"}`` per row."""
        gx = self.gold_ties.group_weights(counts, self.index)
        gy = self.pred_ties.group_weights(counts, self.index)
        moments = self._moments(counts)
        return {
            "pcc": self.pearson(counts, gx, gy, moments),
            "scc": self.spearman(counts, gx, gy),
            "kendall": self.kendall(counts, gx, gy),
            "rmse": self.rmse(counts, moments),
        }

    def _groups(
        self, counts: IntArray, gx: IntArray | None, gy: IntArray | None
    ) -> tuple[IntArray, IntArray]:
        if gx is None:
            gx = self.gold_ties.group_weights(counts, self.index)
        if gy is None:
            gy = self.pred_ties.group_weights(counts, self.index)
        return gx, gy

    def _moments(self, counts: IntArray, moments: FloatArray | None = None) -> FloatArray:
        return counts @ self.cluster_moments if moments is None else moments

    def pearson(
        self,
        counts: IntArray,
        gx: IntArray | None = None,
        gy: IntArray | None = None,
        moments: FloatArray | None = None,
    ) -> FloatArray:
        gx, gy = self._groups(counts, gx, gy)
        total, sx, sy, sxx, syy, sxy, _ = self._moments(counts, moments).T
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_x = np.where(total > 0, sx / total, 0.0)
            mean_y = np.where(total > 0, sy / total, 0.0)
        undefined = Ties.constant(gx) | Ties.constant(gy)
        return _finish(sxy - sx * mean_y, sxx - sx * mean_x, syy - sy * mean_y, undefined)

    def rmse(self, counts: IntArray, moments: FloatArray | None = None) -> FloatArray:
        total, *_, squared = self._moments(counts, moments).T
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total > 0, np.sqrt(squared / total), np.nan)

    def spearman(
        self, counts: IntArray, gx: IntArray | None = None, gy: IntArray | None = None
    ) -> FloatArray:
        gx, gy = self._groups(counts, gx, gy)
        rx = Ties.centred_ranks(gx)
        ry = Ties.centred_ranks(gy)
        sxx = np.einsum("bg,bg->b", gx * rx, rx)
        syy = np.einsum("bg,bg->b", gy * ry, ry)
        w = counts[:, self.index]
        sxy = np.einsum("bn,bn->b", w * rx[:, self.gold_ties.group], ry[:, self.pred_ties.group])
        return _finish(sxy, sxx, syy, Ties.constant(gx) | Ties.constant(gy))

    def _plan(self) -> list[tuple[NDArray[np.intp], ...]]:
        if self._merge_plan is not None:
            return self._merge_plan
        tx, ty = self.gold_ties, self.pred_ties
        tu, tv = (tx, ty) if tx.n_groups <= ty.n_groups else (ty, tx)
        n = len(self.index)
        base = np.lexsort((tv.group, tu.group))  # by u, then v
        u, v = tu.group[base], tv.group[base]
        joint_first = np.ones(n, dtype=bool)
        joint_first[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
        plan = [(self.index[base], np.flatnonzero(joint_first))]

        # ``arrangement`` lists positions in ``base``; each of its runs is sorted by v.
        arrangement = np.arange(n)
        starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if n else np.zeros(0, np.intp)
        while len(starts) > 1:
            lengths = np.diff(np.r_[starts, n])
            run = np.repeat(np.arange(len(starts)), lengths)
            pair = run // 2
            merged = np.lexsort((v[arrangement], pair))  # stable: left before right on equal v
            # Left-run units met so far within the pair, in merged order: for a right-run
            # unit, the left-run units with v <= its v.
            is_left = (run[merged] % 2) == 0
            left_before_pair = np.r_[0, np.cumsum(lengths[0::2])][pair[merged]]
            left_le = (np.cumsum(is_left) - left_before_pair)[~is_left]
            right_pos = merged[~is_left]  # arrangement positions of right-run units
            right_run = run[right_pos]
            plan.append(
                (
                    self.index[base[arrangement]],  # cluster of the unit at each position
                    self.index[base[arrangement[right_pos]]],  # cluster of each right unit
                    starts[right_run - 1] + left_le,  # cumsum index: left units, v <= v_j
                    starts[right_run],  # cumsum index: end of the left run
                )
            )
            arrangement = arrangement[merged]
            starts = starts[0::2]
        self._merge_plan = plan
        return plan

    def kendall(
        self, counts: IntArray, gx: IntArray | None = None, gy: IntArray | None = None
    ) -> FloatArray:
        gx, gy = self._groups(counts, gx, gy)
        (joint_units, joint_starts), *levels = self._plan()
        total = gx.sum(axis=1)
        pairs = total * (total - 1) // 2
        x_ties = (gx * (gx - 1)).sum(axis=1) // 2
        y_ties = (gy * (gy - 1)).sum(axis=1) // 2
        if len(joint_starts):
            gj = np.add.reduceat(counts[:, joint_units], joint_starts, axis=1)
            joint_ties = (gj * (gj - 1)).sum(axis=1) // 2
        else:
            joint_ties = np.zeros(len(counts), dtype=np.int64)
        discordant = np.zeros(len(counts), dtype=np.int64)
        cum = np.zeros((len(counts), len(self.index) + 1), dtype=np.int64)
        for units, right_units, le, end in levels:
            np.cumsum(counts[:, units], axis=1, out=cum[:, 1:])
            above = cum[:, end] - cum[:, le]  # left-run weight with v above v_j
            discordant += (counts[:, right_units] * above).sum(axis=1)
        numerator = pairs - x_ties - y_ties + joint_ties - 2 * discordant
        undefined = Ties.constant(gx) | Ties.constant(gy)
        with np.errstate(divide="ignore", invalid="ignore"):
            tau = numerator / np.sqrt(pairs - x_ties) / np.sqrt(pairs - y_ties)
        return np.where(undefined, np.nan, np.clip(tau, -1.0, 1.0))


def _weighted(
    gold: ArrayLike, pred: ArrayLike, weights: ArrayLike
) -> tuple[WeightedMetrics, IntArray, bool]:
    x, y = as_pairs(gold, pred)
    w = np.asarray(weights)
    single = w.ndim == 1
    w = np.atleast_2d(w)
    if w.ndim != 2 or w.shape[1] != len(x):
        raise ValueError(f"weights of shape {np.shape(weights)} do not fit {len(x)} pairs")
    counts = w.astype(np.int64)
    if not np.array_equal(counts, w) or (counts < 0).any():
        raise ValueError("weights must be non-negative integers (repeat counts)")
    return WeightedMetrics(x, y), counts, single


def _out(values: FloatArray, single: bool) -> FloatArray | float:
    return float(values[0]) if single else values


def weighted_pearson(gold: ArrayLike, pred: ArrayLike, weights: ArrayLike) -> FloatArray | float:
    """Pearson's r with integer unit weights: ``pearsonr`` of the repeated data."""
    metrics, counts, single = _weighted(gold, pred, weights)
    return _out(metrics.pearson(counts), single)


def weighted_spearman(gold: ArrayLike, pred: ArrayLike, weights: ArrayLike) -> FloatArray | float:
    """Spearman's rho with integer unit weights: ``spearmanr`` of the repeated data."""
    metrics, counts, single = _weighted(gold, pred, weights)
    return _out(metrics.spearman(counts), single)


def weighted_kendall(gold: ArrayLike, pred: ArrayLike, weights: ArrayLike) -> FloatArray | float:
    """Kendall's tau-b with integer unit weights: ``kendalltau`` of the repeated data."""
    metrics, counts, single = _weighted(gold, pred, weights)
    return _out(metrics.kendall(counts), single)


def weighted_rmse(gold: ArrayLike, pred: ArrayLike, weights: ArrayLike) -> FloatArray | float:
    """RMSE with integer unit weights; NaN where the total weight is 0."""
    metrics, counts, single = _weighted(gold, pred, weights)
    return _out(metrics.rmse(counts), single)
