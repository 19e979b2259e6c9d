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
    """Frames per second (pocketsphinx ``frate``); a frame is 10 ms. The bundled model was
    trained at 100; change it only with a model trained at another rate."""

    beam: float = 1e-200
    """HMM pruning beam, relative to the best path of the frame. Far wider than
    pocketsphinx's default (1e-48): with the default, forced alignment loses the path on
    some Speechocean762 utterances, and with 1e-80 it still failed on some espeak-ng
    utterances with substituted phones (the canonical path is then unlikely for a while).
    Every senone is scored anyway (``compallsen``), so a wide beam costs next to nothing
    here: the 200-utterance sample took the same time with 1e-80 and 1e-200."""

    wbeam: float = 1e-200
    """Word-exit beam (pocketsphinx's default 7e-29); wide for the same reason."""

    pbeam: float = 1e-200
    """Phone-transition beam (pocketsphinx's default 1e-48); wide for the same reason."""

    loop_context_dependent: bool = False
    """Build the phone loop from every triphone HMM of the model (pocketsphinx
    ``allphone_ci=False``) instead of the ~40 context-independent phones. Off: the CI loop is
    the usual GOP reference and fast; the triphone loop took 5.7 s instead of 0.23 s per
    espeak-ng utterance and did not separate substitutions better (AUC 0.71 vs 0.74 on
    close confusions such as IY/IH, D/T)."""

    phone_insertion_penalty: float = 1.0
    """Phone-loop insertion probability (pocketsphinx ``pip``); 1.0 leaves the loop free."""

    dither: float = 1.0
    """Standard deviation, in 16-bit LSBs, of the Gaussian noise added before decoding
    (deterministically: the same audio always gets the same noise). Digital silence (exact
    zeros between espeak-ng's words, or from a noise gate) otherwise gives log-energy floors
    that derail the phone loop: on espeak-ng speech the loop heard ``SIL`` inside words.
    0 turns it off."""

    min_phone_frames: int = 3
    """Each phone's HMM has three emitting states and no skips, so a phone takes at least
    three frames; an utterance with fewer than this times its phone count cannot be aligned
    and is refused before decoding (``alignment.too_short_for_phones``)."""

    min_pause_s: float = 0.25
    """A silence between two words counts as a pause from this length on. 250 ms is the
    threshold de Jong & Bosker (2013) found to relate L2 fluency measures best to proficiency;
    shorter gaps are mostly stop closures and breath-free word junctions. Every gap stays
    visible in the word spans for other thresholds."""

    substitution_gop: float = -5.0
    """A phone whose ``gop`` (aligned minus phone-loop score, nats/frame) is below this and
    whose phone-loop phone differs from the canonical one is judged a substitution by the
    loop phone (:func:`apa.gop.analysis.judge_phone`).

    Measured on espeak-ng speech of 40 Speechocean762 sentences said from their CMUdict
    phones, aligned against those phones: intact phones (n=1973) had a median ``gop`` of
    -1.5 and a 10th percentile of -5.7; phones swapped for a clearly different phone (n=160,
    the table in ``tests/gop``) a median of -7.7 and a 90th percentile of -0.9 (AUC 0.82; the
    same phone fell by 6.7 on average against the intact recording). With random swaps of
    the same kind (consonant for consonant, vowel for vowel), -5 flags 68 % of swapped
    phones (as a substitution or a deletion) and 12 % of intact ones; -3 flags 79 % and
    22 %. On the real Speechocean762 sample, 11 % of phones have a ``gop`` below -5 with a
    differing loop phone (25 % below -3). The loop names the phone actually said for only
    about 20-35 % of swapped phones: the ``pronounced`` phone is a hint, the ``gop`` is the
    signal."""

    deletion_gop: float = -6.0
    """A phone aligned to the minimum duration (``min_phone_frames``) with a ``gop`` below
    this is judged deleted: the alignment had to squeeze it in where the audio has no trace
    of it. Measured on espeak-ng speech with one consonant left out in each of two words (169
    deletions, 30 sentences): 82 % of deleted phones got exactly the minimum 3 frames; the
    rule with -6 catches 56 % of deletions and fires on 3.7 % of intact phones (-4: 64 % and
    4.6 %; -10: 37 % and 1.4 %); it fires on 3.7 % of the phones of the real sample."""

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
        if not (math.isfinite(self.dither) and self.dither >= 0):
            problems.append(f"dither must be a non-negative number of LSBs, got {self.dither}")
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
