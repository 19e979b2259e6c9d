"""``builtin:gop``: the classic baseline behind the common Scorer interface.

Forced alignment + goodness of pronunciation on pocketsphinx's pretrained US-English model,
mapped to Speechocean762 scales by :mod:`apa.gop.calibration`. Real scores on a CPU, with
word and phone timings; aspects it cannot estimate (stress, prosody, totals) are ``None``.
The aligner's decoders are built once per scorer (per process or Ray actor).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from apa import storage
from apa.gop.aligner import GopAligner
from apa.gop.analysis import phone_judgements
from apa.gop.calibration import Calibration, Features, calibrate
from apa.gop.config import GopConfig
from apa.gop.errors import AlignmentError
from apa.schema import Assessment, PhoneAssessment, SentenceScores, WordAssessment
from apa.scorer import PreparedUtterance, ScoreResult, ScorerInfo

NAME = "builtin:gop"


def load_calibration(uri: str | Path | None) -> Calibration:
    """A calibration JSON written by ``apa calibrate``, or the documented defaults."""
    if uri is None:
        return Calibration()
    return Calibration.model_validate_json(storage.read_bytes(str(uri)))


class GopScorer:
    def __init__(
        self, config: GopConfig | None = None, calibration: Calibration | None = None
    ) -> None:
        self.config = config or GopConfig()
        self.calibration = calibration or Calibration()
        self.aligner = GopAligner(self.config)

    @property
    def info(self) -> ScorerInfo:
        return ScorerInfo(name=NAME, backend="gop", model_is_random=False)

    def score(self, batch: Sequence[PreparedUtterance]) -> list[ScoreResult]:
        return [self._score_one(item) for item in batch]

    def _score_one(self, item: PreparedUtterance) -> ScoreResult:
        utt = item.utterance
        assert utt.phones is not None
        try:
            analysis = self.aligner.analyse(item.audio, utt.words, utt.phones)
        except AlignmentError as e:
            return e.record(utt.id)
        judgements = phone_judgements(analysis, self.config)
        scores = calibrate(Features.of(analysis, judgements), self.calibration)
        words = []
        for w, canonical_phones, seg, judged, phone_scores, word_score in zip(
            utt.words,
            utt.phones,
            analysis.words,
            judgements,
            scores.phones,
            scores.words,
            strict=True,
        ):
            phones = [
                PhoneAssessment(
                    phone=canonical,
                    accuracy=s,
                    pronounced=j.pronounced if j.error == "substitution" else None,
                    error=j.error,
                    start=round(p.start_s, 3),
                    end=round(p.end_s, 3),
                )
                for canonical, p, j, s in zip(
                    canonical_phones, seg.phones, judged, phone_scores, strict=True
                )
            ]
            words.append(
                WordAssessment(
                    text=w,
                    accuracy=word_score,
                    stress=None,
                    total=None,
                    phones=phones,
                    start=round(seg.start_s, 3),
                    end=round(seg.end_s, 3),
                )
            )
        return Assessment(
            utterance_id=utt.id,
            text=utt.text,
            sentence=SentenceScores(
                accuracy=scores.sentence_accuracy,
                fluency=scores.fluency,
                prosody=None,
                completeness=scores.completeness,
                total=None,
            ),
            words=words,
            model=NAME,
        )
