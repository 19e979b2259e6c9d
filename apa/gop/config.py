"""Settings of the GOP aligner: decoder beams, frame geometry, and the thresholds of the
substitution/deletion rule. Environment: ``APA_GOP_<FIELD>`` (``APA_GOP_SUBSTITUTION_GOP=-2``).

Scores are in nats per frame throughout (pocketsphinx's integer scores are converted with
:data:`NATS_PER_SCORE_UNIT`).
"""

from __future__ import annotations

import math

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOG_BASE = 1.0001
"""pocketsphinx's log base (its ``logbase`` setting, left at the default)."""
SENSCR_SHIFT = 10
"""pocketsphinx keeps acoustic scores as log-base-1.0001 values shifted right by 10 bits."""
NATS_PER_SCORE_UNIT = math.log(LOG_BASE) * (1 << SENSCR_SHIFT)
"""One unit of an alignment or segment score in nats (about 0.1024)."""


class GopConfig(BaseSettings):
    """How the aligner decodes and how the features are judged."""

    model_config = SettingsConfigDict(env_prefix="APA_GOP_", frozen=True, extra="forbid")

    sample_rate: int = 16000
    """The rate the acoustic model was trained at (pocketsphinx's en-us model: 16 kHz).
    Audio at another rate is resampled with soxr first."""

    frame_rate: int = 100
    """Frames per second (pocketsphinx ``frate``); a frame is 10 ms."""

    beam: float = 1e-80
    """HMM pruning beam, relative to the best path of the frame. Far wider than
    pocketsphinx's default (1e-48): with the default, forced alignment lost the path on some
    Speechocean762 utterances; with these three beams all 200 of the sample aligned."""

    wbeam: float = 1e-60
    """Word-exit beam (default 7e-29)."""

    pbeam: float = 1e-80
    """Phone-transition beam (default 1e-48)."""

    loop_context_dependent: bool = False
    """Build the phone loop from every triphone HMM of the model (pocketsphinx
    ``allphone_ci=False``) instead of the ~40 context-independent phones. Off: the CI loop is
    the usual GOP reference, is fast, and separated substitutions well here (see
    ``tests/gop``)."""

    phone_insertion_penalty: float = 1.0
    """Phone-loop insertion probability (pocketsphinx ``pip``); 1.0 leaves the loop free."""

    min_phone_frames: int = 3
    """Each phone's HMM has three emitting states and no skips, so a phone takes at least
    three frames; an utterance with fewer than this times its phone count cannot be aligned
    and is refused before decoding (``alignment.too_short_for_phones``)."""

    min_pause_s: float = 0.25
    """A silence between two words counts as a pause from this length on. 250 ms is the
    threshold de Jong & Bosker (2013) found to relate L2 fluency measures best to proficiency;
    shorter gaps are mostly stop closures and breath-free word junctions. Every gap stays
    visible in the word spans for other thresholds."""

    substitution_gop: float = -3.0
    """A phone whose ``gop`` (aligned minus phone-loop score, nats/frame) is below this and
    whose phone-loop phone differs from the canonical one is judged a substitution by the
    loop phone. Set from espeak-ng speech with known substitutions (``tests/gop``): see
    :func:`apa.gop.analysis.judge_phone` for the measured distributions."""

    deletion_gop: float = -6.0
    """A phone aligned to the minimum duration (``min_phone_frames``) with a ``gop`` below
    this is judged deleted: the alignment had to squeeze it in where the audio has no trace
    of it."""

    @model_validator(mode="after")
    def _consistent(self) -> GopConfig:
        problems = []
        if self.sample_rate <= 0 or self.frame_rate <= 0:
            problems.append("sample_rate and frame_rate must be positive")
        elif self.sample_rate % self.frame_rate:
            problems.append(
                f"frame_rate ({self.frame_rate}) must divide sample_rate ({self.sample_rate})"
            )
        for name in ("beam", "wbeam", "pbeam", "phone_insertion_penalty"):
            value = getattr(self, name)
            if not (0.0 < value <= 1.0):
                problems.append(f"{name} is a probability in (0, 1], got {value}")
        if self.min_phone_frames < 1:
            problems.append(f"min_phone_frames must be at least 1, got {self.min_phone_frames}")
        if not (math.isfinite(self.min_pause_s) and self.min_pause_s >= 0):
            problems.append(f"min_pause_s must be a non-negative number, got {self.min_pause_s}")
        for name in ("substitution_gop", "deletion_gop"):
            if not math.isfinite(getattr(self, name)):
                problems.append(f"{name} must be finite")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def frame_s(self) -> float:
        """Seconds per frame."""
        return 1.0 / self.frame_rate

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.frame_rate
