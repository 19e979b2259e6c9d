"""The batch job's summary: ``summary.json`` beside the tables, and the last log line.

Totals (inputs, scored, errors by reason, audio) are over every commit in the output
directory, so a resumed run reports the whole job; ``processed``, ``wall_seconds`` and the
throughput are this run's own.
"""

from __future__ import annotations

from collections import Counter

from apa.batch.commits import CommitTotals, Repairs
from apa.scorer import ScorerInfo
from apa.scoring.summary import RunSummary


class BatchSummary(RunSummary):
    scorer: ScorerInfo | None = None
    """``None`` only when no input reached a scorer (all were errors before it)"""
    audio_hours: float
    processed: int
    """inputs this run scored or recorded as errors"""
    skipped: int
    """inputs found done in the output directory (an earlier run's commits)"""
    output: str
    passes: int = 1
    """pipeline passes this run made (more than one: inputs lost to a concurrent run)"""
    removed_uncommitted: int = 0
    """files of part sets that never committed (a crashed run's) this run removed"""
    duplicates_trimmed: int = 0
    """commits this run trimmed because an id was committed twice (two runs into the same
    output at once); each id still ends up exactly once"""


def summarise_commits(
    totals: CommitTotals,
    *,
    processed: int,
    wall_seconds: float,
    output: str,
    audio_seconds_this_run: float,
    repairs: Repairs | None = None,
    passes: int = 1,
    lm_forward_passes_per_utterance: float | None = None,
) -> BatchSummary:
    """The job's summary from what all commits in the output add up to
    (:func:`apa.batch.commits.settle`); rates are over this run's work (``processed``
    inputs and ``audio_seconds_this_run`` in ``wall_seconds``)."""
    reasons = Counter(totals.reasons)
    return BatchSummary(
        scorer=totals.scorer,
        inputs=totals.inputs,
        scored=totals.scored,
        errors=totals.errors,
        errors_by_reason=dict(reasons.most_common()),
        audio_seconds=round(totals.audio_seconds, 3),
        audio_hours=round(totals.audio_seconds / 3600, 4),
        wall_seconds=round(wall_seconds, 3),
        utterances_per_second=round(processed / wall_seconds, 3) if wall_seconds > 0 else 0.0,
        realtime_factor=(
            round(wall_seconds / audio_seconds_this_run, 4) if audio_seconds_this_run > 0 else None
        ),
        processed=processed,
        skipped=totals.inputs - processed,
        output=output,
        passes=passes,
        removed_uncommitted=repairs.removed if repairs else 0,
        duplicates_trimmed=repairs.trimmed if repairs else 0,
        lm_forward_passes_per_utterance=lm_forward_passes_per_utterance,
    )
