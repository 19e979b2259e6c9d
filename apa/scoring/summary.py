"""The account of a scoring run: inputs = scored + errors, errors by reason, speed; written
as ``summary.json`` beside the score tables by :func:`write_summary` (``apa score`` and the
batch job alike)."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from apa import storage
from apa.schema import Assessment, ErrorRecord
from apa.scorer import ScorerInfo

SUMMARY_FILE = "summary.json"
"""The summary's name in a run's output directory."""


class RunSummary(BaseModel):
    """Written as ``summary.json`` beside the score tables and logged at the end of a run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scorer: ScorerInfo
    inputs: int
    scored: int
    errors: int
    errors_by_reason: dict[str, int]
    audio_seconds: float
    """audio scored (decoded duration of the scored utterances)"""
    wall_seconds: float
    utterances_per_second: float
    realtime_factor: float | None
    """wall time / audio time: below 1 is faster than real time"""
    lm_forward_passes_per_utterance: float | None = None
    """LM forward passes per utterance scored by an LMM (1 in one-pass mode, one per answer
    slot in generate mode), to 3 decimals; ``None`` for scorers without a language model
    (GOP)"""

    @field_validator("lm_forward_passes_per_utterance")
    @classmethod
    def _three_decimals(cls, value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    @model_validator(mode="after")
    def _counts_add_up(self) -> RunSummary:
        if self.inputs != self.scored + self.errors:
            raise ValueError(f"inputs {self.inputs} != scored {self.scored} + errors {self.errors}")
        if sum(self.errors_by_reason.values()) != self.errors:
            raise ValueError("errors_by_reason does not add up to errors")
        return self


def summarise(
    scorer: ScorerInfo,
    assessments: list[Assessment],
    errors: list[ErrorRecord],
    *,
    audio_seconds: float,
    wall_seconds: float,
    lm_forward_passes_per_utterance: float | None = None,
) -> RunSummary:
    n = len(assessments) + len(errors)
    return RunSummary(
        scorer=scorer,
        inputs=n,
        scored=len(assessments),
        errors=len(errors),
        errors_by_reason=dict(Counter(e.reason for e in errors).most_common()),
        audio_seconds=round(audio_seconds, 3),
        wall_seconds=round(wall_seconds, 3),
        utterances_per_second=round(n / wall_seconds, 3) if wall_seconds > 0 else 0.0,
        realtime_factor=round(wall_seconds / audio_seconds, 4) if audio_seconds > 0 else None,
        lm_forward_passes_per_utterance=lm_forward_passes_per_utterance,
    )


def write_summary(output_uri: str, summary: RunSummary) -> str:
    """Write ``summary`` as indented JSON to :data:`SUMMARY_FILE` in ``output_uri`` (local
    or s3://, all or nothing); returns where it went."""
    uri = storage.resolve(output_uri, SUMMARY_FILE)
    storage.write_bytes(uri, (summary.model_dump_json(indent=2) + "\n").encode())
    return uri
