"""``builtin:passthrough``: a scorer that scores nothing, for benchmarks of the pipeline
around the model (reading, decoding, writing, the driver's memory) at corpus scale.

Each prepared utterance gets an assessment with every sentence score ``None`` and no
words, at no cost; its :class:`~apa.scorer.ScorerInfo` says ``backend="passthrough"`` and
``model_is_random=True``, so its output can never pass for scores. Not for real use.
"""

from __future__ import annotations

from collections.abc import Sequence

from apa.schema import Assessment, SentenceScores
from apa.scorer import PreparedUtterance, ScoreResult, ScorerInfo

NAME = "builtin:passthrough"

_NO_SCORES = SentenceScores(
    accuracy=None, fluency=None, prosody=None, completeness=None, total=None
)


class PassThroughScorer:
    """Scores nothing (see the module docstring): benchmarks only."""

    @property
    def info(self) -> ScorerInfo:
        return ScorerInfo(name=NAME, backend="passthrough", model_is_random=True)

    def score(self, batch: Sequence[PreparedUtterance]) -> list[ScoreResult]:
        return [
            Assessment(utterance_id=p.utterance.id, text=p.utterance.text, sentence=_NO_SCORES)
            for p in batch
        ]
