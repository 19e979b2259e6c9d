"""What the GOP aligner finds in one utterance: time-aligned words and phones with their
goodness-of-pronunciation features, the free phone loop's phones, silences and pauses, and
:func:`judge_phone`, the rule that names a substituted or deleted phone.

All scores are natural-log likelihoods per frame (nats/frame, 10 ms frames). Two come from
the acoustic model for every canonical phone:

``aligned_score``
    the forced alignment's score of the canonical (context-dependent) phone over its span.
    pocketsphinx scores every one of the model's ~5000 senones in every frame and subtracts
    the best of them (``compallsen``), so this is already the *best-state normalised* score:
    0 would mean the aligned HMM state was the best-matching state of the whole model in
    every frame; HMM transition costs are included.
``loop_score``
    the score of a free phone loop (any phone may follow any phone) over the same frames,
    pro-rated from the loop's phone segments; the loop explains the audio as well as the
    model can with no knowledge of the text.

``gop = aligned_score - loop_score`` is the classic GOP (Witt & Young): about 0 or above when
the canonical phone explains the audio as well as the best free phone sequence, clearly
negative when another phone (or none) explains it better.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from apa.gop.config import GopConfig
from apa.schema import Assessment
from apa.text import strip_stress

NON_SPEECH: frozenset[str] = frozenset({"SIL", "+NSN+", "+SPN+"})
"""Phone-loop units that are not phones: silence, noise, and garbage speech."""


@dataclass(frozen=True)
class PhoneSegment:
    """One canonical phone, aligned.

    ``phone`` is the canonical phone as given (stress digit kept); ``start_s``/``end_s`` its
    span (``end_s`` exclusive) and ``frames`` its length in frames; scores are nats/frame
    (module docstring). ``loop_phone`` is the phone-loop unit (ARPAbet without stress, or
    one of :data:`NON_SPEECH`) covering most of the span, ``loop_share`` the fraction of the
    span it covers.
    """

    phone: str
    start_s: float
    end_s: float
    frames: int
    aligned_score: float
    loop_score: float
    loop_phone: str
    loop_share: float

    @property
    def gop(self) -> float:
        """Aligned minus phone-loop score, nats/frame."""
        return self.aligned_score - self.loop_score

    @property
    def loop_differs(self) -> bool:
        """The phone loop heard something other than the canonical phone (stress ignored)."""
        return self.loop_phone != strip_stress(self.phone)

    def is_substituted(self, config: GopConfig | None = None) -> bool:
        """:func:`judge_phone` says another phone was said."""
        return judge_phone(self, config).error == "substitution"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gop": self.gop}


@dataclass(frozen=True)
class WordSegment:
    """One word of the reference text (as given) and its canonical phones, aligned."""

    text: str
    start_s: float
    end_s: float
    phones: tuple[PhoneSegment, ...]

    @property
    def frames(self) -> int:
        return sum(p.frames for p in self.phones)

    @property
    def gop(self) -> float:
        """Frame-weighted mean of the phones' ``gop``, nats/frame."""
        return sum(p.gop * p.frames for p in self.phones) / self.frames

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "gop": self.gop,
            "phones": [p.to_dict() for p in self.phones],
        }


@dataclass(frozen=True)
class LoopPhone:
    """One unit the free phone loop recognised: an ARPAbet phone (no stress) or one of
    :data:`NON_SPEECH`; ``score`` in nats/frame."""

    phone: str
    start_s: float
    end_s: float
    score: float


@dataclass(frozen=True)
class Pause:
    """A silence of at least ``GopConfig.min_pause_s`` between word ``after_word`` and the
    next one (indices into :attr:`UtteranceAnalysis.words`)."""

    after_word: int
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class UtteranceAnalysis:
    """Everything the aligner found in one utterance.

    ``duration_s`` is the audio's length; ``leading_silence_s``/``trailing_silence_s`` the
    time before the first and after the last word; ``pauses`` the between-word silences of at
    least ``min_pause_s``; ``loop_phones`` the free phone loop's units over the whole audio.
    """

    words: tuple[WordSegment, ...]
    loop_phones: tuple[LoopPhone, ...]
    pauses: tuple[Pause, ...]
    duration_s: float
    leading_silence_s: float
    trailing_silence_s: float

    @property
    def phones(self) -> tuple[PhoneSegment, ...]:
        """Every canonical phone, in order."""
        return tuple(p for w in self.words for p in w.phones)

    @property
    def speech_duration_s(self) -> float:
        """Time inside words: the span from the first word's start to the last word's end,
        less every between-word silence (pause or not)."""
        return sum(w.end_s - w.start_s for w in self.words)

    @property
    def pause_duration_s(self) -> float:
        return sum(p.duration_s for p in self.pauses)

    @property
    def articulation_rate(self) -> float:
        """Canonical phones per second of speech (:attr:`speech_duration_s`)."""
        return len(self.phones) / self.speech_duration_s

    @property
    def gop(self) -> float:
        """Frame-weighted mean ``gop`` over all canonical phones, nats/frame."""
        frames = sum(w.frames for w in self.words)
        return sum(w.gop * w.frames for w in self.words) / frames

    def to_dict(self) -> dict[str, Any]:
        return {
            "words": [w.to_dict() for w in self.words],
            "loop_phones": [asdict(p) for p in self.loop_phones],
            "pauses": [{**asdict(p), "duration_s": p.duration_s} for p in self.pauses],
            "duration_s": self.duration_s,
            "leading_silence_s": self.leading_silence_s,
            "trailing_silence_s": self.trailing_silence_s,
            "speech_duration_s": self.speech_duration_s,
            "articulation_rate": self.articulation_rate,
            "gop": self.gop,
        }


@dataclass(frozen=True)
class PhoneSpan:
    """One canonical phone (as given, stress kept) and its aligned span in seconds
    (``end_s`` exclusive)."""

    phone: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class WordSpan:
    """One word of the reference (as given), its span and its phones' spans."""

    text: str
    start_s: float
    end_s: float
    phones: tuple[PhoneSpan, ...]


@dataclass(frozen=True)
class Alignment:
    """Where each word and canonical phone of an utterance is in its audio: the forced
    alignment alone (:meth:`apa.gop.aligner.GopAligner.align`), without the GOP features of
    :class:`UtteranceAnalysis`, whose words and phones carry the same spans."""

    words: tuple[WordSpan, ...]
    duration_s: float

    @property
    def phones(self) -> tuple[PhoneSpan, ...]:
        """Every canonical phone, in order."""
        return tuple(p for w in self.words for p in w.phones)


def with_timings(
    assessment: Assessment, words: Sequence[WordSpan] | Sequence[WordSegment]
) -> Assessment:
    """``assessment`` with the aligned spans of ``words`` (an :class:`Alignment`'s or an
    :class:`UtteranceAnalysis`'s, one per assessed word) as its words' and phones'
    ``start``/``end`` (rounded to the millisecond); a word whose assessed phones do not pair
    up with the aligned ones gets its own span only. ``ValueError`` when the words do not
    pair up."""
    if len(words) != len(assessment.words):
        raise ValueError(f"{len(words)} aligned words for {len(assessment.words)} assessed")
    timed = []
    for word, seg in zip(assessment.words, words, strict=True):
        phones = word.phones
        if len(phones) == len(seg.phones):
            phones = [
                p.model_copy(update={"start": round(s.start_s, 3), "end": round(s.end_s, 3)})
                for p, s in zip(phones, seg.phones, strict=True)
            ]
        timed.append(
            word.model_copy(
                update={
                    "phones": phones,
                    "start": round(seg.start_s, 3),
                    "end": round(seg.end_s, 3),
                }
            )
        )
    return assessment.model_copy(update={"words": timed})


@dataclass(frozen=True)
class PhoneJudgement:
    """What :func:`judge_phone` concludes; the fields line up with
    :class:`apa.schema.PhoneAssessment` (``error``, ``pronounced``)."""

    error: Literal["substitution", "deletion"] | None
    pronounced: str | None = None


def judge_phone(segment: PhoneSegment, config: GopConfig | None = None) -> PhoneJudgement:
    """Was the canonical phone said, replaced by another one, or left out?

    - **deletion**: the alignment gave the phone only the minimum duration
      (``min_phone_frames``, 30 ms) and its ``gop`` is below ``deletion_gop``: it had to be
      squeezed in where the audio holds nothing like it. Also when the loop heard silence
      (``SIL``) over the span and ``gop`` is below ``substitution_gop``.
    - **substitution**: ``gop`` below ``substitution_gop`` and the loop phone over the span
      differs from the canonical phone (stress ignored); the loop phone is the pronounced
      one (``<unk>`` when the loop heard noise or garbage speech).
    - otherwise ``None``: said as the canonical phone, well or with an accent; grading that
      is the calibrator's job.

    The thresholds are in :class:`~apa.gop.config.GopConfig`, where the measurements behind
    them are noted.
    """
    config = config if config is not None else GopConfig()
    gop = segment.gop
    if segment.frames <= config.min_phone_frames and gop < config.deletion_gop:
        return PhoneJudgement("deletion")
    if gop < config.substitution_gop and segment.loop_differs:
        if segment.loop_phone == "SIL":
            return PhoneJudgement("deletion")
        if segment.loop_phone in NON_SPEECH:
            return PhoneJudgement("substitution", "<unk>")
        return PhoneJudgement("substitution", segment.loop_phone)
    return PhoneJudgement(None)


def phone_judgements(
    analysis: UtteranceAnalysis, config: GopConfig | None = None
) -> list[list[PhoneJudgement]]:
    """:func:`judge_phone` for every phone, word by word."""
    return [[judge_phone(p, config) for p in w.phones] for w in analysis.words]


def majority(labels: Sequence[str]) -> tuple[str, float]:
    """The most frequent label (the first one on a tie) and its share.

    >>> majority(["AA", "B", "B", "AA", "B"])
    ('B', 0.6)
    """
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    best = max(counts, key=counts.__getitem__)
    return best, counts[best] / len(labels)
