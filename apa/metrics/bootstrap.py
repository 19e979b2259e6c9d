"""Bootstrap confidence intervals that resample whole utterances (a cluster bootstrap).

The words and phones of one recording are not independent (one speaker, one microphone, one
rater session), so a resample draws *utterances* with replacement and keeps all of their units.
At sentence level an utterance is one unit and this is the ordinary bootstrap.

A resample is a vector of multiplicities, one per utterance (multinomial counts of
``n_clusters`` draws), expanded to one integer weight per unit. The weighted metrics of
:mod:`apa.metrics.correlation` equal the plain metrics on the data repeated by those weights
(``np.repeat``), so no data are copied: all four metrics run vectorised over a block of
resamples at a time (:class:`~apa.metrics.correlation.WeightedMetrics`), at most
:data:`CHUNK_ELEMENTS` unit weights per block.

Intervals are percentile intervals at ``confidence``. A resample on which a correlation is
undefined (every drawn gold score equal, say) is left out and counted in
``Estimate.resamples_excluded``; when more than ``max_undefined`` of the resamples are left out
there is no interval, and ``Estimate.ci_undefined`` says why. Everything is deterministic given
``seed``.

>>> est = bootstrap_estimates([1, 2, 3, 4, 5, 6], [1, 3, 2, 5, 4, 6], [0, 0, 1, 1, 2, 2],
...                           n_resamples=200, seed=0)
>>> round(est["pcc"].value, 3), est["pcc"].ci_low <= est["pcc"].value <= est["pcc"].ci_high
(0.886, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from apa.metrics.correlation import (
    FloatArray,
    WeightedMetrics,
    as_pairs,
    kendall,
    pearson,
    rmse,
    spearman,
)
from apa.metrics.result import Estimate

METRICS: tuple[str, ...] = ("pcc", "scc", "kendall", "rmse")
"""The metrics computed, in report order."""

POINT: dict[str, Callable[[ArrayLike, ArrayLike], Estimate]] = {
    "pcc": pearson,
    "scc": spearman,
    "kendall": kendall,
    "rmse": rmse,
}

MAX_UNDEFINED = 0.05
"""Largest fraction of resamples that may be left out (metric undefined) before the interval
is withheld."""

CHUNK_ELEMENTS = 1 << 20
"""Unit weights in one block of resamples (resamples x units); a block's temporaries are a
small multiple of this (a few million numbers, tens of MB)."""


def cluster_index(clusters: ArrayLike) -> tuple[NDArray[np.intp], int]:
    """Cluster labels (utterance ids or indices) -> dense indices ``0..k-1`` and ``k``."""
    labels = np.asarray(clusters)
    if labels.ndim != 1:
        raise ValueError(f"expected 1-D cluster labels, got shape {labels.shape}")
    if len(labels) == 0:
        return np.zeros(0, dtype=np.intp), 0
    _, index = np.unique(labels, return_inverse=True)
    index = index.astype(np.intp)
    return index, int(index.max()) + 1


def resample_counts(n_clusters: int, n_resamples: int, seed: int) -> NDArray[np.int64]:
    """``(n_resamples, n_clusters)`` multiplicities: row ``r`` counts how often each cluster
    was drawn in ``n_clusters`` draws with replacement (``numpy.random.default_rng(seed)``)."""
    counts = np.zeros((n_resamples, n_clusters), dtype=np.int64)
    if n_clusters == 0 or n_resamples == 0:
        return counts
    draws = np.random.default_rng(seed).integers(0, n_clusters, size=(n_resamples, n_clusters))
    draws += np.arange(n_resamples)[:, None] * n_clusters
    counts.ravel()[:] = np.bincount(draws.ravel(), minlength=n_resamples * n_clusters)
    return counts


def replicate_metrics(
    gold: FloatArray,
    preds: Sequence[FloatArray],
    index: NDArray[np.intp],
    counts: NDArray[np.int64],
) -> list[dict[str, FloatArray]]:
    """Every metric on every resample (rows of ``counts``, expanded through the per-unit
    cluster ``index``) for each prediction vector: NaN where undefined. The same resamples
    serve all predictions, which makes differences paired."""
    n = len(gold)
    n_resamples = counts.shape[0]
    out = [{m: np.full(n_resamples, np.nan) for m in METRICS} for _ in preds]
    if n_resamples == 0 or n == 0:
        return out

    first = WeightedMetrics(gold, preds[0], index)
    metrics = [first] + [
        WeightedMetrics(gold, p, index, gold_ties=first.gold_ties) for p in preds[1:]
    ]
    size = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, size):
        rows = slice(start, min(start + size, n_resamples))
        for weighted, res in zip(metrics, out, strict=True):
            for name, values in weighted.all(counts[rows]).items():
                res[name][rows] = values
    return out


def percentile_interval(
    point: Estimate,
    replicates: FloatArray,
    *,
    confidence: float,
    n_clusters: int,
    max_undefined: float = MAX_UNDEFINED,
) -> Estimate:
    """``point`` with the percentile interval of the defined ``replicates`` (or the reason
    there is none)."""
    if point.value is None:
        return point
    if len(replicates) == 0:
        return point.model_copy(update={"ci_undefined": "no resamples (n_resamples is 0)"})
    if n_clusters < 2:
        return point.model_copy(update={"ci_undefined": "fewer than 2 utterances to resample"})
    defined = replicates[np.isfinite(replicates)]
    excluded = len(replicates) - len(defined)
    if excluded > max_undefined * len(replicates):
        return point.model_copy(
            update={
                "ci_undefined": (
                    f"undefined on {excluded} of {len(replicates)} resamples "
                    f"(more than {max_undefined:.0%})"
                ),
                "resamples_excluded": excluded,
            }
        )
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(defined, [tail, 1.0 - tail])
    return point.model_copy(
        update={"ci_low": float(low), "ci_high": float(high), "resamples_excluded": excluded}
    )


def _check(
    n: int, clusters: ArrayLike, n_resamples: int, confidence: float
) -> tuple[NDArray[np.intp], int]:
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    index, n_clusters = cluster_index(clusters)
    if len(index) != n:
        raise ValueError(f"{n} pairs but {len(index)} cluster labels")
    return index, n_clusters


def bootstrap_estimates(
    gold: ArrayLike,
    pred: ArrayLike,
    clusters: ArrayLike,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    max_undefined: float = MAX_UNDEFINED,
) -> dict[str, Estimate]:
    """Point estimate and cluster-bootstrap interval of each metric in :data:`METRICS`.

    ``clusters`` labels the utterance of each pair; ``n_resamples=0`` gives point estimates
    only.
    """
    x, y = as_pairs(gold, pred)
    index, n_clusters = _check(len(x), clusters, n_resamples, confidence)
    counts = resample_counts(n_clusters, n_resamples, seed)
    (reps,) = replicate_metrics(x, [y], index, counts)
    return {
        m: percentile_interval(
            POINT[m](x, y),
            reps[m],
            confidence=confidence,
            n_clusters=n_clusters,
            max_undefined=max_undefined,
        )
        for m in METRICS
    }


def _difference(a: Estimate, b: Estimate) -> Estimate:
    if a.value is not None and b.value is not None:
        return Estimate(value=a.value - b.value)
    if a.undefined == b.undefined:
        return Estimate(value=None, undefined=a.undefined)
    reasons = [f"{side}: {e.undefined}" for side, e in (("a", a), ("b", b)) if e.undefined]
    return Estimate(value=None, undefined="; ".join(reasons))


def bootstrap_difference(
    gold: ArrayLike,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    clusters: ArrayLike,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    max_undefined: float = MAX_UNDEFINED,
) -> dict[str, Estimate]:
    """``metric(a) - metric(b)`` on the same pairs, with a paired cluster-bootstrap interval:
    each resample applies the same utterance weights to both systems. (For RMSE a negative
    difference means ``a`` is closer to the human scores.)"""
    x, ya = as_pairs(gold, pred_a)
    _, yb = as_pairs(gold, pred_b)
    index, n_clusters = _check(len(x), clusters, n_resamples, confidence)
    counts = resample_counts(n_clusters, n_resamples, seed)
    reps_a, reps_b = replicate_metrics(x, [ya, yb], index, counts)
    return {
        m: percentile_interval(
            _difference(POINT[m](x, ya), POINT[m](x, yb)),
            reps_a[m] - reps_b[m],
            confidence=confidence,
            n_clusters=n_clusters,
            max_undefined=max_undefined,
        )
        for m in METRICS
    }
