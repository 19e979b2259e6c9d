"""Word and phone timings for any backend: a scorer wrapper that force-aligns each scored
utterance with the GOP aligner and copies the spans into the assessment where it has none.

LMM answers carry no times (except an alignment-informed scorer's, which reuse the alignment
the model read: the utterance is not aligned twice); ``apa score --timings``
(``APA_TIMINGS=true``) wraps the scorer in :class:`WithTimings`. An utterance that cannot be
aligned keeps its scores without times (the alignment failure is logged, not turned into an
error: the scores are still valid).
"""

from __future__ import annotations

from collections.abc import Sequence

from apa.log import get_logger
from apa.schema import Assessment
from apa.scorer import PreparedUtterance, Scorer, ScoreResult, ScorerInfo

log = get_logger(__name__)


class WithTimings:
    def __init__(self, scorer: Scorer) -> None:
        from apa.gop.aligner import GopAligner

        self.scorer = scorer
        self.aligner = GopAligner()

    @property
    def info(self) -> ScorerInfo:
        return self.scorer.info

    def __getattr__(self, name: str):  # counters and the like of the wrapped scorer
        if name == "scorer":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.scorer, name)

    def score(self, batch: Sequence[PreparedUtterance]) -> list[ScoreResult]:
        results = self.scorer.score(batch)
        return [
            self._timed(item, r) if isinstance(r, Assessment) else r
            for item, r in zip(batch, results, strict=True)
        ]

    def _timed(self, item: PreparedUtterance, assessment: Assessment) -> Assessment:
        if not assessment.words or assessment.words[0].start is not None:
            return assessment  # timed already (an aligned LMM scorer's own alignment)
        if assessment.scoring_path is not None:
            return assessment  # the scorer's own aligner failed on it: once is enough
        from apa.gop.analysis import with_timings
        from apa.gop.errors import AlignmentError

        utt = item.utterance
        try:
            alignment = self.aligner.align(item.audio, utt.words, utt.phones)
        except AlignmentError as e:
            log.warning("timings_unavailable", utterance_id=utt.id, reason=e.reason)
            return assessment
        return with_timings(assessment, alignment.words)
