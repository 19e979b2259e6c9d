"""Evaluate scoring systems against human scores: every level and aspect, PCC, SCC, Kendall's
tau-b and RMSE with cluster-bootstrap intervals, and paired differences between systems.

Every (level, aspect) of :data:`apa.schema.ASPECTS` is reported, also when no pair joined
(``n == 0``, metrics undefined with the reason). Every (level, aspect) uses the same ``seed``,
so aspects resampled over the same utterances share their resamples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from apa.metrics.bootstrap import MAX_UNDEFINED, bootstrap_difference, bootstrap_estimates
from apa.metrics.join import JoinedLevel, Pairs, join
from apa.metrics.result import AspectMetrics, Difference, Evaluation, SystemMetrics
from apa.schema import ASPECTS, Assessment

RESAMPLING_UNIT = "utterance"


def _model(pred: Sequence[Assessment]) -> tuple[str | None, bool]:
    names = {p.model for p in pred}
    model = names.pop() if len(names) == 1 else None
    return model, any(p.model_is_random for p in pred)


def _system_metrics(
    name: str, pred: Sequence[Assessment], joined: Mapping[str, JoinedLevel], **options
) -> SystemMetrics:
    model, model_is_random = _model(pred)
    aspects = []
    for level, names in ASPECTS.items():
        for aspect in names:
            pairs = joined[level].pairs[aspect]
            est = bootstrap_estimates(pairs.gold, pairs.pred, pairs.clusters, **options)
            aspects.append(
                AspectMetrics(
                    level=level,
                    aspect=aspect,
                    n=pairs.n,
                    n_utterances=pairs.n_utterances,
                    **est,
                )
            )
    return SystemMetrics(
        name=name,
        model=model,
        model_is_random=model_is_random,
        join=[joined[level].counts for level in ASPECTS],
        aspects=aspects,
    )


def _common(a: Pairs, b: Pairs) -> tuple[Pairs, Pairs]:
    """The pairs of the keys both systems scored, lined up key for key (both follow the
    human scores' order)."""
    common = set(a.keys).intersection(b.keys)
    a, b = a.restrict(common), b.restrict(common)
    if a.keys != b.keys:  # pragma: no cover - join_level orders pairs by the human scores
        raise RuntimeError("paired keys do not line up")
    return a, b


def _differences(
    name_a: str,
    name_b: str,
    joined_a: Mapping[str, JoinedLevel],
    joined_b: Mapping[str, JoinedLevel],
    **options,
) -> list[Difference]:
    out = []
    for level, names in ASPECTS.items():
        for aspect in names:
            a, b = _common(joined_a[level].pairs[aspect], joined_b[level].pairs[aspect])
            est = bootstrap_difference(a.gold, a.pred, b.pred, a.clusters, **options)
            out.append(Difference(a=name_a, b=name_b, level=level, aspect=aspect, n=a.n, **est))
    return out


def evaluate_system(
    pred: Sequence[Assessment],
    gold: Sequence[Assessment],
    *,
    name: str,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    max_undefined: float = MAX_UNDEFINED,
) -> SystemMetrics:
    """One system's join counts and metrics at every level and aspect.

    ``model`` is the predictions' model name when they all share one (else ``None``);
    ``model_is_random`` is true when any prediction came from random weights.
    """
    return _system_metrics(
        name,
        pred,
        join(pred, gold),
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        max_undefined=max_undefined,
    )


def compare_systems(
    pred_a: Sequence[Assessment],
    pred_b: Sequence[Assessment],
    gold: Sequence[Assessment],
    *,
    name_a: str,
    name_b: str,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    max_undefined: float = MAX_UNDEFINED,
) -> list[Difference]:
    """``a - b`` for every level, aspect and metric, on the units both systems scored (keys
    that joined with a score for both), with a paired cluster-bootstrap interval."""
    return _differences(
        name_a,
        name_b,
        join(pred_a, gold),
        join(pred_b, gold),
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        max_undefined=max_undefined,
    )


def evaluate(
    systems: Mapping[str, Sequence[Assessment]],
    gold: Sequence[Assessment],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    max_undefined: float = MAX_UNDEFINED,
) -> Evaluation:
    """Every system's metrics, and the first system minus each other one."""
    if not systems:
        raise ValueError("no systems to evaluate")
    options = dict(
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        max_undefined=max_undefined,
    )
    joined = {name: join(pred, gold) for name, pred in systems.items()}
    names = list(systems)
    return Evaluation(
        systems=[_system_metrics(n, systems[n], joined[n], **options) for n in names],
        differences=[
            d
            for other in names[1:]
            for d in _differences(names[0], other, joined[names[0]], joined[other], **options)
        ],
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        resampling_unit=RESAMPLING_UNIT,
    )
