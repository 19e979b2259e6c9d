"""The score schema: what goes into a scorer and what comes out of it.

In: an :class:`Utterance` (id, audio reference, reference text, optional canonical
phones and optional human scores).

Out: an :class:`Assessment` in the Speechocean762 rubric at three levels, or an
:class:`ErrorRecord` saying why there is none.

=========  =====================================================  =======
level      aspects                                                range
=========  =====================================================  =======
sentence   accuracy, fluency, prosody, completeness, total        0-10
word       accuracy, stress, total                                0-10
phone      accuracy (+ the pronounced phone where it differs)     0-2
=========  =====================================================  =======

Scores are floats: human scores are averages of five raters, and our scorers report
expected values, not only integers. Every score field must be present; ``None`` is an
explicit "this system does not estimate this aspect" (a GOP scorer has no prosody), never
a silent default. Out-of-range, NaN and missing values are rejected by pydantic with the
field's location in the message (``sentence.fluency``, ``words.2.phones.0.accuracy``).

Upstream names differ in one place: Speechocean762 says ``prosodic`` where we say
``prosody``; the corpus reader maps it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, model_validator

from apa.text import normalize_word, strip_stress, words_of

Level = Literal["sentence", "word", "phone"]
SENTENCE_ASPECTS: tuple[str, ...] = ("accuracy", "fluency", "prosody", "completeness", "total")
WORD_ASPECTS: tuple[str, ...] = ("accuracy", "stress", "total")
PHONE_ASPECTS: tuple[str, ...] = ("accuracy",)
ASPECTS: dict[str, tuple[str, ...]] = {
    "sentence": SENTENCE_ASPECTS,
    "word": WORD_ASPECTS,
    "phone": PHONE_ASPECTS,
}

Score10 = Annotated[float, Field(ge=0.0, le=10.0, allow_inf_nan=False)]
"""A sentence- or word-level score, 0-10."""
Score2 = Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)]
"""A phone-level score, 0-2 (2 correct, 1 heavy accent, 0 wrong or missed)."""
Seconds = Annotated[NonNegativeFloat, Field(allow_inf_nan=False)]
PhoneSymbol = Annotated[str, Field(min_length=1, pattern=r"^\S+$")]
"""An ARPAbet phone (stress digit allowed: ``AO0``) or a rater's mark (``R*``, ``<unk>``)."""

Stage = Literal["input", "audio", "lexicon", "model", "answer", "alignment", "output"]
"""Where in the pipeline an utterance failed."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_span(start: float | None, end: float | None) -> None:
    if (start is None) != (end is None):
        raise ValueError("start and end go together: give both or neither")
    if start is not None and end is not None and end < start:
        raise ValueError(f"end ({end}) is before start ({start})")


class PhoneAssessment(_Record):
    """One canonical phone of a word and how it was pronounced.

    ``error`` is ``None`` when the phone was said as the canonical one (well or with an
    accent: see ``accuracy``), ``"substitution"`` when another phone was said (named in
    ``pronounced``), ``"deletion"`` when it was left out.
    """

    phone: PhoneSymbol
    accuracy: Score2 | None
    pronounced: PhoneSymbol | None = None
    error: Literal["substitution", "deletion"] | None = None
    start: Seconds | None = None
    end: Seconds | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PhoneAssessment:
        if self.error == "substitution":
            if self.pronounced is None:
                raise ValueError("a substitution names the pronounced phone")
            if strip_stress(self.pronounced) == strip_stress(self.phone):
                raise ValueError(
                    f"pronounced phone {self.pronounced!r} is the canonical one, not a substitution"
                )
        elif self.pronounced is not None:
            raise ValueError(
                "pronounced is given only for a substitution "
                f"(error is {self.error!r}, pronounced {self.pronounced!r})"
            )
        _check_span(self.start, self.end)
        return self


class InsertedPhone(_Record):
    """A phone said that the word does not have, before canonical phone ``position``
    (``position == len(phones)``: after the last one)."""

    position: Annotated[int, Field(ge=0)]
    phone: PhoneSymbol


class WordAssessment(_Record):
    """One word of the reference text. ``phones`` is empty when phones were not assessed."""

    text: Annotated[str, Field(min_length=1)]
    accuracy: Score10 | None
    stress: Score10 | None
    total: Score10 | None
    phones: list[PhoneAssessment] = Field(default_factory=list)
    insertions: list[InsertedPhone] = Field(default_factory=list)
    start: Seconds | None = None
    end: Seconds | None = None

    @model_validator(mode="after")
    def _consistent(self) -> WordAssessment:
        for inserted in self.insertions:
            if inserted.position > len(self.phones):
                raise ValueError(
                    f"insertion at position {inserted.position} but the word has "
                    f"{len(self.phones)} phones"
                )
        _check_span(self.start, self.end)
        return self


class SentenceScores(_Record):
    """Sentence-level scores, 0-10 each."""

    accuracy: Score10 | None
    fluency: Score10 | None
    prosody: Score10 | None
    completeness: Score10 | None
    total: Score10 | None


class Assessment(_Record):
    """A scorer's (or the human raters') assessment of one utterance.

    ``words`` follows the reference text word by word; it is empty only when the scorer
    assessed the sentence level alone. ``model`` names what produced it and
    ``model_is_random`` marks scores from random weights, which mean nothing.
    """

    utterance_id: Annotated[str, Field(min_length=1)]
    text: Annotated[str, Field(min_length=1)]
    sentence: SentenceScores
    words: list[WordAssessment] = Field(default_factory=list)
    model: str | None = None
    model_is_random: bool = False
    scoring_path: Literal["aligned", "plain"] | None = None
    """Which path of an alignment-informed LMM scorer scored it: ``aligned`` (the forced
    alignment reached the model), ``plain`` (the aligner could not align the utterance, so
    the model scored it without); ``None`` for scorers that do not use the alignment."""

    @model_validator(mode="after")
    def _words_follow_text(self) -> Assessment:
        if self.words:
            expected = words_of(self.text)
            got = [normalize_word(w.text) for w in self.words]
            if got != expected:
                raise ValueError(f"words {got} do not follow the reference text {expected}")
        return self


class Utterance(_Record):
    """An utterance to score: a recording of a learner reading ``text``.

    ``audio`` is a local path or a URI (``s3://bucket/key``); ``None`` when the audio
    travels with the request instead. ``phones`` holds the canonical phones of each word
    of ``text`` (ARPAbet); ``human`` the human raters' scores, when known.
    """

    id: Annotated[str, Field(min_length=1, pattern=r"^\S+$")]
    text: Annotated[str, Field(min_length=1)]
    audio: Annotated[str, Field(min_length=1)] | None = None
    phones: list[list[PhoneSymbol]] | None = None
    speaker: str | None = None
    age: Annotated[int, Field(ge=0, le=150)] | None = None
    gender: str | None = None
    human: Assessment | None = None

    @property
    def words(self) -> list[str]:
        return words_of(self.text)

    @model_validator(mode="after")
    def _consistent(self) -> Utterance:
        words = self.words
        if not words:
            raise ValueError(f"text {self.text!r} has no words")
        if self.phones is not None:
            if len(self.phones) != len(words):
                raise ValueError(
                    f"phones give {len(self.phones)} words but the text has {len(words)}"
                )
            for word, phones in zip(words, self.phones, strict=True):
                if not phones:
                    raise ValueError(f"word {word!r} has no canonical phones")
        if self.human is not None and self.human.utterance_id != self.id:
            raise ValueError(f"human scores are for {self.human.utterance_id!r}, not {self.id!r}")
        return self


class ErrorRecord(_Record):
    """Why an utterance has no assessment.

    ``reason`` is a short stable code to count by (``audio.too_long``, ``lexicon.unknown_word``);
    ``message`` says it for a person; ``raw`` keeps evidence such as a malformed model answer.
    """

    utterance_id: Annotated[str, Field(min_length=1)]
    stage: Stage
    reason: Annotated[str, Field(min_length=1, pattern=r"^[a-z_]+\.[a-z_]+$")]
    message: str
    raw: str | None = None

    @model_validator(mode="after")
    def _reason_names_stage(self) -> ErrorRecord:
        if not self.reason.startswith(self.stage + "."):
            raise ValueError(f"reason {self.reason!r} does not start with stage {self.stage!r}")
        return self
