"""The interface every scoring backend implements (GOP baseline, Qwen2-Audio, Phi-4-multimodal).

A scorer takes a batch of :class:`PreparedUtterance` (reference text with canonical phones,
plus decoded 16 kHz audio) and returns exactly one :class:`~apa.schema.Assessment` or one
:class:`~apa.schema.ErrorRecord` per input, in input order. It never raises for a problem
with one utterance; it raises only when the scorer itself is broken (a model that cannot
run at all), which a caller treats as fatal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from apa.audio import Audio
from apa.schema import Assessment, ErrorRecord, Utterance


@dataclass(frozen=True, eq=False)
class PreparedUtterance:
    """An utterance ready to score: ``utterance.phones`` is filled and ``audio`` decoded."""

    utterance: Utterance
    audio: Audio

    def __post_init__(self) -> None:
        if self.utterance.phones is None:
            raise ValueError(f"{self.utterance.id}: canonical phones are needed to score")


class ScorerInfo(BaseModel):
    """What produced a set of scores; written beside them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """what the user asked for: ``builtin:gop``, a hub id, a path, an ``s3://`` URI"""
    backend: str
    """``gop``, ``qwen2-audio``, ``phi4mm``"""
    model_is_random: bool
    """scores from random weights carry no information"""
    adapter: str | None = None
    device: str = "cpu"


ScoreResult = Assessment | ErrorRecord


@runtime_checkable
class Scorer(Protocol):
    """A loaded scoring backend. Load once (per process, per Ray actor), score many batches."""

    @property
    def info(self) -> ScorerInfo: ...

    def score(self, batch: Sequence[PreparedUtterance]) -> list[ScoreResult]: ...


@runtime_checkable
class StagedScorer(Scorer, Protocol):
    """A scorer whose work splits into host stages around one device stage, as an LLM
    engine's preprocess, engine and postprocess: ``encode`` turns a batch into model-ready
    inputs (or an :class:`~apa.schema.ErrorRecord` in an input's place), ``run`` does the
    device work on the encoded inputs (one call at a time: concurrent calls wait), and
    ``decode`` reads its outputs into results. ``encode`` and ``decode`` may run in other
    threads while ``run`` works, which is how callers keep the device busy
    (:func:`apa.scoring.pipeline.score_batches`). ``score(batch)`` is the three in a row."""

    def cost(self, item: PreparedUtterance) -> float:
        """The item's size on the device (for the LMM engine: the tokens of its first
        pass); a batch is padded to its largest, so callers batch items of similar cost."""
        ...

    def encode(self, batch: Sequence[PreparedUtterance]) -> list[Any]: ...

    def run(self, encoded: Sequence[Any]) -> list[Any]: ...

    def decode(self, encoded: Sequence[Any], outputs: Sequence[Any]) -> list[ScoreResult]: ...
