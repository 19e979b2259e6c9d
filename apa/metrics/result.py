"""What an evaluation reports: the records behind ``metrics.json``, the printed table and the
report. Plain data; the computation lives in :mod:`apa.metrics.evaluate`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from apa.schema import Level


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Estimate(_Result):
    """A metric's point value and its bootstrap confidence interval.

    ``value`` is ``None`` when the metric is undefined on these data, with the reason in
    ``undefined`` (a correlation of a constant vector, fewer than two pairs). ``ci_low`` and
    ``ci_high`` are ``None`` when no interval could be formed.
    """

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    undefined: str | None = None
    ci_undefined: str | None = None
    """why there is no interval although ``value`` is defined (no resamples asked for, fewer
    than two utterances to resample, too many resamples on which the metric is undefined)"""
    resamples_excluded: int = 0
    """resamples left out of the interval because the metric was undefined on them"""


class AspectMetrics(_Result):
    """Agreement on one aspect at one level (``phone``/``accuracy``, ``sentence``/``fluency``)."""

    level: Level
    aspect: str
    n: int
    """pairs (units with both a predicted and a human score)"""
    n_utterances: int
    pcc: Estimate
    scc: Estimate
    kendall: Estimate
    rmse: Estimate


class JoinCounts(_Result):
    """How predictions met human scores at one level; nothing is dropped without a count.

    Keys: utterance id (sentence), + word index (word), + phone index (phone).
    """

    level: Level
    predicted: int
    """units in the predictions (after dropping duplicate utterances)"""
    gold: int
    """units in the human scores"""
    matched: int
    """keys found on both sides with the same word text / canonical phone"""
    pred_only: int
    """predicted units without human scores"""
    gold_only: int
    """human-scored units without a prediction (e.g. the utterance became an error row)"""
    mismatched: int
    """keys on both sides whose word text or canonical phone differ; excluded from metrics"""
    duplicate_predictions: int
    """units of repeated utterance ids in the predictions; the first occurrence is kept"""
    pred_missing: dict[str, int]
    """per aspect: matched units whose predicted score is ``None`` (not estimated)"""
    gold_missing: dict[str, int]
    """per aspect: matched units whose human score is ``None``"""


class SystemMetrics(_Result):
    name: str
    model: str | None
    model_is_random: bool
    join: list[JoinCounts]
    aspects: list[AspectMetrics]


class Difference(_Result):
    """System ``a`` minus system ``b`` on the units both scored, with a paired bootstrap CI."""

    a: str
    b: str
    level: Level
    aspect: str
    n: int
    pcc: Estimate
    scc: Estimate
    kendall: Estimate
    rmse: Estimate


class Evaluation(_Result):
    """Everything ``apa evaluate`` computes; serialised as ``metrics.json``."""

    systems: list[SystemMetrics]
    differences: list[Difference]
    n_resamples: int
    confidence: float
    seed: int
    resampling_unit: str
    """what the bootstrap resamples: whole utterances, so that words and phones of one
    recording stay together (they are not independent)"""
