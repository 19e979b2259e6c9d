"""The answer format: a fixed template from the reference, with one token at every score slot.

The answer's structure follows from the reference alone (its words and their canonical
phones); a model fills only the slots. One line per word (its phones, each followed by a
phone-score slot and a pronounced-phone slot, then the word's three scores), then the
sentence line, whose ``total`` is the very last slot:

>>> template = AnswerTemplate.from_reference(["WE", "IT"], [["W", "IY0"], ["IH0", "T"]])
>>> print(template.placeholder_text())
WE: W<|slot|><|slot|> IY0<|slot|><|slot|> | accuracy<|slot|> stress<|slot|> total<|slot|>
IT: IH0<|slot|><|slot|> T<|slot|><|slot|> | accuracy<|slot|> stress<|slot|> total<|slot|>
sentence: accuracy<|slot|> fluency<|slot|> prosody<|slot|> completeness<|slot|> total<|slot|>
>>> len(template.slots)  # 5 sentence + 3 per word + 2 per phone
19
>>> template.slots[0], template.slots[-1].location
(Slot(kind='score2', level='phone', aspect='accuracy', word=0, phone=0), 'sentence.total')

Bottom-up order: a phone before its word, a word before the sentence, the sentence ``total``
last. In one-pass mode (:meth:`AnswerTemplate.placeholder_text`, one forward pass reads every
slot) slots cannot see each other's values, so the summarising slot goes last.

Slot values are dedicated tokens (:mod:`apa.lmm.vocab`), one token each: a score slot takes
``<|s0|>``-``<|s10|>`` (a phone score ``<|s0|>``-``<|s2|>``) and, only in rendered text,
``<|na|>`` for a score that is ``None`` (not estimated; it has no target and a model is
never offered it); a pronounced slot takes ``<|ok|>`` (the canonical phone), ``<|del|>``
(deleted) or ``<|ph:X|>`` (phone ``X`` said instead; ``<|ph:unk|>`` an unclear one).
:meth:`AnswerTemplate.allowed_tokens` lists them per slot, for constrained decoding.

:func:`render` turns an assessment into (a) answer text holding the nearest integer of each
score (halves round up), for display and greedy targets, and (b) a soft target per slot: a
score ``x`` between integers ``lo`` and ``lo + 1`` is the two-point distribution
``p(lo) = 1 - (x - lo)``, ``p(lo + 1) = x - lo`` over the slot's values, whose expected value
is ``x``; a ``None`` score has target ``None`` (masked); a pronounced slot's target is
one-hot. :func:`parse_distributions` reads per-slot distributions back (expected values, or
argmax with ``greedy=True``); :func:`parse_text` reads answer text (integers):

>>> from apa.schema import Assessment, PhoneAssessment, SentenceScores, WordAssessment
>>> a = Assessment(utterance_id="u1", text="we call", sentence=SentenceScores(
...     accuracy=7.6, fluency=8.0, prosody=None, completeness=10.0, total=7.5), words=[
...     WordAssessment(text="WE", accuracy=9.0, stress=10.0, total=9.0, phones=[
...         PhoneAssessment(phone="W", accuracy=2.0),
...         PhoneAssessment(phone="IY0", accuracy=1.2, error="substitution", pronounced="IH")]),
...     WordAssessment(text="CALL", accuracy=6.0, stress=10.0, total=6.4, phones=[
...         PhoneAssessment(phone="K", accuracy=2.0),
...         PhoneAssessment(phone="AO0", accuracy=1.8),
...         PhoneAssessment(phone="L", accuracy=0.0, error="deletion")])])
>>> answer = render(a)
>>> print(answer.text)
WE: W<|s2|><|ok|> IY0<|s1|><|ph:IH|> | accuracy<|s9|> stress<|s10|> total<|s9|>
CALL: K<|s2|><|ok|> AO0<|s2|><|ok|> L<|s0|><|del|> | accuracy<|s6|> stress<|s10|> total<|s6|>
sentence: accuracy<|s8|> fluency<|s8|> prosody<|na|> completeness<|s10|> total<|s8|>
>>> [round(p, 12) for p in answer.targets[2]]  # phone accuracy 1.2 over <|s0|>-<|s2|>
[0.0, 0.8, 0.2]
>>> answer.targets[-3] is None  # sentence prosody: not estimated, masked
True
>>> meta = {"utterance_id": "u1", "reference_text": "we call"}
>>> back = parse_distributions(answer.template, answer.targets, **meta)
>>> phones = back.words[0].phones + back.words[1].phones
>>> round(back.sentence.accuracy, 12), phones[1].pronounced, phones[4].error
(7.6, 'IH', 'deletion')
>>> parse_text(answer.template, answer.text, **meta).sentence.accuracy
8.0

Scope of format v1: inserted phones (``WordAssessment.insertions``) and timings (``start``/
``end``) are not carried: the structure must stay fixed by the reference, and timings come
from the aligner. Pronounced phones lose their stress digit and rater marks (``R*``) become
``<unk>``. :func:`render` refuses such assessments unless ``strict=False``, which drops or maps
them. For any valid assessment in scope, ``parse_distributions(render(a).targets) == a`` (to
rounding, 1e-9) and ``parse_text(render(a).text)`` is ``a`` with scores rounded to integers.

Text that does not follow the template raises :class:`AnswerError` (stage ``answer``; codes
``truncated``, ``malformed``, ``invalid_value``) carrying the raw text; unusable
distributions (NaN, negative, all zero) raise it with code ``invalid_distribution``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from apa.errors import ApaError
from apa.lmm.vocab import (
    ANSWER_TOKENS,
    DELETED,
    NA,
    OK,
    PHONES,
    PRONOUNCED_TOKENS,
    SCORE_TOKENS,
    SLOT,
    phone_of,
    phone_token,
    score_of,
)
from apa.schema import (
    SENTENCE_ASPECTS,
    WORD_ASPECTS,
    Assessment,
    Level,
    PhoneAssessment,
    SentenceScores,
    Stage,
    WordAssessment,
)
from apa.scores import nearest_score
from apa.text import normalize_word, strip_stress

SlotKind = Literal["score10", "score2", "pronounced"]
Distribution = Sequence[float] | Mapping[str, float] | None
"""One slot's probabilities: a vector aligned with :meth:`AnswerTemplate.allowed_tokens`
(any sequence of floats: list, numpy array, 1-d tensor) or a mapping token -> probability
(tokens left out have 0); ``None`` for a score not estimated."""

_HIGH: dict[str, int] = {"score10": 10, "score2": 2}
_TOKEN = re.compile(r"<\|[^|<>\s]{1,12}\|>")


class AnswerError(ApaError):
    """A model answer that does not fit the template (``raw`` holds the text) or slot
    distributions that cannot be read. ``position``: the character offset in ``raw`` where
    the text stopped fitting, when known."""

    stage: Stage = "answer"

    def __init__(
        self, code: str, message: str, *, raw: str | None = None, position: int | None = None
    ) -> None:
        super().__init__(code, message, raw=raw)
        self.position = position


@dataclass(frozen=True)
class Slot:
    """One free value of the answer: a score (``score10``: 0-10, ``score2``: a phone's 0-2) or
    a phone's pronounced phone. ``word`` and ``phone`` index the reference (``None`` above
    their level); ``aspect`` is the schema field (``"pronounced"`` for a pronounced slot)."""

    kind: SlotKind
    level: Level
    aspect: str
    word: int | None = None
    phone: int | None = None

    @property
    def high(self) -> int | None:
        """The top score of a score slot; ``None`` for a pronounced slot."""
        return _HIGH.get(self.kind)

    @property
    def location(self) -> str:
        """Where the value goes, as pydantic names fields: ``words.1.phones.0.accuracy``."""
        parts = ["sentence"] if self.level == "sentence" else ["words", str(self.word)]
        if self.level == "phone":
            parts += ["phones", str(self.phone)]
        return ".".join([*parts, self.aspect])


def _check_symbol(kind: str, value: object) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"a {kind} is a non-empty string without whitespace, not {value!r}")
    if "<|" in value or "|>" in value:
        raise ValueError(f"{kind} {value!r} looks like an answer token")
    return value


@dataclass(frozen=True)
class AnswerTemplate:
    """The answer's fixed structure for one reference: text segments and slots, in order.

    Equal references give equal templates (``==``, ``hash``). ``phones[i]`` may be empty: the
    word then has word-level slots only.
    """

    words: tuple[str, ...]
    phones: tuple[tuple[str, ...], ...]
    segments: tuple[str | Slot, ...] = field(init=False, repr=False, compare=False)
    """Literal text and slots in answer order; adjacent literals are merged."""
    slots: tuple[Slot, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        words = tuple(_check_symbol("word", w) for w in self.words)
        phones = tuple(tuple(_check_symbol("phone", p) for p in ps) for ps in self.phones)
        if len(words) != len(phones):
            raise ValueError(f"{len(words)} words but phones for {len(phones)}")
        segments: list[str | Slot] = []

        def text(piece: str) -> None:
            if segments and isinstance(segments[-1], str):
                segments[-1] += piece
            else:
                segments.append(piece)

        for i, (word, word_phones) in enumerate(zip(words, phones, strict=True)):
            text(f"{word}:")
            for j, phone in enumerate(word_phones):
                text(f" {phone}")
                segments.append(Slot("score2", "phone", "accuracy", i, j))
                segments.append(Slot("pronounced", "phone", "pronounced", i, j))
            text(" |")
            for aspect in WORD_ASPECTS:
                text(f" {aspect}")
                segments.append(Slot("score10", "word", aspect, i))
            text("\n")
        text("sentence:")
        for aspect in SENTENCE_ASPECTS:
            text(f" {aspect}")
            segments.append(Slot("score10", "sentence", aspect))
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "phones", phones)
        object.__setattr__(self, "segments", tuple(segments))
        object.__setattr__(self, "slots", tuple(s for s in segments if isinstance(s, Slot)))

    @classmethod
    def from_reference(
        cls, words: Sequence[str], phones: Sequence[Sequence[str]]
    ) -> AnswerTemplate:
        """The template of a reference: its words (as :func:`apa.text.words_of` gives them)
        and each word's canonical phones."""
        return cls(tuple(words), tuple(tuple(p) for p in phones))

    def allowed_tokens(self, slot: Slot | int) -> tuple[str, ...]:
        """The tokens a model may put at ``slot`` (a :class:`Slot` or its index), in the
        order of a distribution vector: score tokens ``<|s0|>``... up to the slot's top, or
        :data:`~apa.lmm.vocab.PRONOUNCED_TOKENS`. ``<|na|>`` is not among them."""
        slot = self.slots[slot] if isinstance(slot, int) else slot
        if slot.kind == "pronounced":
            return PRONOUNCED_TOKENS
        return SCORE_TOKENS[: _HIGH[slot.kind] + 1]

    def _accepted(self, slot: Slot) -> tuple[str, ...]:
        allowed = self.allowed_tokens(slot)
        return allowed if slot.kind == "pronounced" else (*allowed, NA)

    def _join(self, values: Sequence[str]) -> str:
        it = iter(values)
        return "".join(s if isinstance(s, str) else next(it) for s in self.segments)

    def render_text(self, values: Sequence[str]) -> str:
        """The answer text with ``values[k]`` (a token string) at slot ``k``; a score slot
        also takes ``<|na|>``. Raises ``ValueError`` for a wrong count or value."""
        if len(values) != len(self.slots):
            raise ValueError(f"{len(values)} values for {len(self.slots)} slots")
        for slot, value in zip(self.slots, values, strict=True):
            if value not in self._accepted(slot):
                raise ValueError(f"{value!r} is not a value of {slot.location}")
        return self._join(values)

    def placeholder_text(self) -> str:
        """The answer with ``<|slot|>`` at every slot: one-pass mode's input."""
        return self._join([SLOT] * len(self.slots))

    def read_text(self, text: str) -> tuple[str, ...]:
        """The token at each slot of answer ``text`` (surrounding whitespace ignored).

        Raises :class:`AnswerError`: ``truncated`` when ``text`` stops before the template
        does, ``malformed`` when it departs from the structure (or goes on after the last
        slot), ``invalid_value`` for a token the slot does not take."""
        if not isinstance(text, str):
            raise TypeError(f"answer text is a string, not {type(text).__name__}")
        lead = len(text) - len(text.lstrip())
        body = text.strip()
        pos = 0
        tokens: list[str] = []

        def fail(code: str, message: str) -> AnswerError:
            return AnswerError(code, message, raw=text, position=lead + pos)

        for segment in self.segments:
            rest = body[pos:]
            if isinstance(segment, str):
                if rest.startswith(segment):
                    pos += len(segment)
                    continue
                if segment.startswith(rest):
                    raise fail("truncated", f"the answer stops at character {lead + pos}")
                raise fail(
                    "malformed",
                    f"expected {segment!r} at character {lead + pos}, "
                    f"got {rest[: len(segment) + 8]!r}",
                )
            match = _TOKEN.match(body, pos)
            if match is None:
                if any(token.startswith(rest) for token in ANSWER_TOKENS):
                    raise fail("truncated", f"the answer stops in {segment.location}")
                raise fail(
                    "malformed",
                    f"expected a value of {segment.location} at character {lead + pos}, "
                    f"got {rest[:16]!r}",
                )
            token = match.group()
            if token not in self._accepted(segment):
                raise fail("invalid_value", f"{token} is not a value of {segment.location}")
            tokens.append(token)
            pos = match.end()
        if pos != len(body):
            raise fail("malformed", f"text after the last slot: {body[pos : pos + 24]!r}")
        return tuple(tokens)


@dataclass(frozen=True)
class RenderedAnswer:
    """An assessment in the answer format: ``text`` (integer tokens, ``<|na|>`` for
    ``None``), ``tokens`` (the token at each slot) and ``targets`` (each slot's soft target
    over :meth:`AnswerTemplate.allowed_tokens`; ``None``: no target, masked)."""

    template: AnswerTemplate
    text: str
    tokens: tuple[str, ...]
    targets: tuple[tuple[float, ...] | None, ...]


def soft_target(x: float, high: int) -> tuple[float, ...]:
    """The two-point distribution over scores ``0..high`` whose expected value is ``x``.

    >>> soft_target(1.25, 2), soft_target(2.0, 2), soft_target(0.0, 2)
    ((0.0, 0.75, 0.25), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0))
    """
    if not (math.isfinite(x) and 0.0 <= x <= high):
        raise ValueError(f"score {x!r} is outside 0-{high}")
    lo = min(math.floor(x), high - 1)
    frac = x - lo + 0.0  # exact (Sterbenz); + 0.0 turns -0.0 into 0.0
    probs = [0.0] * (high + 1)
    probs[lo] = 1.0 - frac
    probs[lo + 1] = frac
    return tuple(probs)


def expected_score(probs: Sequence[float]) -> float:
    """The expected score of a distribution over ``0..len(probs)-1``, normalised by its sum
    (so probabilities over the whole vocabulary, restricted to the slot, work as they are).

    >>> expected_score([0.0, 0.75, 0.25]), expected_score([0.1, 0.1])
    (1.25, 0.5)
    """
    total = math.fsum(probs)
    value = math.fsum(k * p for k, p in enumerate(probs)) / total
    return min(max(value, 0.0), float(len(probs) - 1))


def _template_of(assessment: Assessment) -> AnswerTemplate:
    return AnswerTemplate.from_reference(
        [w.text for w in assessment.words], [[p.phone for p in w.phones] for w in assessment.words]
    )


def _fits(template: AnswerTemplate, assessment: Assessment) -> None:
    words = assessment.words
    same = len(words) == len(template.words) and all(
        normalize_word(w.text) == normalize_word(t)
        and [strip_stress(p.phone) for p in w.phones] == [strip_stress(p) for p in ps]
        for w, t, ps in zip(words, template.words, template.phones, strict=False)
    )
    if not same:
        raise ValueError(
            f"assessment {assessment.utterance_id!r} does not fit the template: its words and "
            "phones differ (stress digits aside)"
        )


def _pronounced_token(phone: PhoneAssessment, *, strict: bool) -> str:
    if phone.error is None:
        return OK
    if phone.error == "deletion":
        return DELETED
    assert phone.pronounced is not None
    token = phone_token(phone.pronounced)
    if strict and phone_of(token) != phone.pronounced:
        raise ValueError(
            f"pronounced phone {phone.pronounced!r} would be read back as "
            f"{phone_of(token)!r} (pass strict=False to map it)"
        )
    return token


def render(
    assessment: Assessment, *, template: AnswerTemplate | None = None, strict: bool = True
) -> RenderedAnswer:
    """The answer text, slot tokens and soft targets of ``assessment``.

    The template is the assessment's own words and phones unless ``template`` is given (the
    one the prompt used), which the assessment must fit: same words, same phones with stress
    digits ignored. A sentence-only assessment (no words) has a sentence-only template.

    ``strict`` (the default) raises ``ValueError`` for what the format cannot carry:
    insertions, timings, pronounced phones that would come back different (``AH0``,
    ``R*``). ``strict=False`` drops insertions and timings and maps those phones
    (``AH0`` -> ``AH``, ``R*`` -> ``<unk>``).
    """
    if template is None:
        template = _template_of(assessment)
    else:
        _fits(template, assessment)
    if strict:
        for w in assessment.words:
            timed = w.start is not None or any(p.start is not None for p in w.phones)
            if w.insertions or timed:
                raise ValueError(
                    f"word {w.text!r} has insertions or timings, which answer format v1 does "
                    "not carry (pass strict=False to drop them)"
                )
    tokens: list[str] = []
    targets: list[tuple[float, ...] | None] = []
    for slot in template.slots:
        if slot.kind == "pronounced":
            phone = assessment.words[slot.word].phones[slot.phone]  # type: ignore[index]
            token = _pronounced_token(phone, strict=strict)
            tokens.append(token)
            targets.append(tuple(float(t == token) for t in PRONOUNCED_TOKENS))
            continue
        x = _score_at(assessment, slot)
        if x is None:
            tokens.append(NA)
            targets.append(None)
        else:
            tokens.append(SCORE_TOKENS[nearest_score(x)])
            targets.append(soft_target(x, _HIGH[slot.kind]))
    return RenderedAnswer(template, template.render_text(tokens), tuple(tokens), tuple(targets))


def _score_at(assessment: Assessment, slot: Slot) -> float | None:
    if slot.level == "sentence":
        return getattr(assessment.sentence, slot.aspect)
    word = assessment.words[slot.word]  # type: ignore[index]
    if slot.level == "word":
        return getattr(word, slot.aspect)
    return word.phones[slot.phone].accuracy  # type: ignore[index]


def _pronounced_fields(token: str, canonical: str) -> dict[str, str | None]:
    if token == OK:
        return {"error": None, "pronounced": None}
    if token == DELETED:
        return {"error": "deletion", "pronounced": None}
    said = phone_of(token)
    if said == strip_stress(canonical):
        return {"error": None, "pronounced": None}
    return {"error": "substitution", "pronounced": said}


def _assemble(
    template: AnswerTemplate,
    values: Sequence[float | str | None],
    *,
    utterance_id: str,
    reference_text: str | None,
    model: str | None,
    model_is_random: bool,
) -> Assessment:
    """An assessment from one value per slot: a score (float or ``None``) or a pronounced
    token."""
    sentence: dict[str, float | None] = {}
    words: list[dict] = [
        {"text": w, "phones": [{"phone": p} for p in ps]}
        for w, ps in zip(template.words, template.phones, strict=True)
    ]
    for slot, value in zip(template.slots, values, strict=True):
        if slot.level == "sentence":
            sentence[slot.aspect] = value  # type: ignore[assignment]
        elif slot.level == "word":
            words[slot.word][slot.aspect] = value  # type: ignore[index]
        else:
            phone = words[slot.word]["phones"][slot.phone]  # type: ignore[index]
            if slot.kind == "pronounced":
                phone.update(_pronounced_fields(value, phone["phone"]))  # type: ignore[arg-type]
            else:
                phone["accuracy"] = value
    if reference_text is None:
        if not template.words:
            raise ValueError("a sentence-only template needs the reference_text")
        reference_text = " ".join(template.words)
    return Assessment(
        utterance_id=utterance_id,
        text=reference_text,
        sentence=SentenceScores(**sentence),
        words=[
            WordAssessment(**{**w, "phones": [PhoneAssessment(**p) for p in w["phones"]]})
            for w in words
        ],
        model=model,
        model_is_random=model_is_random,
    )


def parse_text(
    template: AnswerTemplate,
    text: str,
    *,
    utterance_id: str,
    reference_text: str | None = None,
    model: str | None = None,
    model_is_random: bool = False,
) -> Assessment:
    """The assessment in answer ``text`` (the greedy path: integer scores, ``<|na|>`` ->
    ``None``). ``reference_text`` defaults to the template's words joined by spaces.

    Raises :class:`AnswerError` (see :meth:`AnswerTemplate.read_text`) for text that does
    not fit the template.
    """
    values = [
        tok if slot.kind == "pronounced" else _score_value(score_of(tok))
        for slot, tok in zip(template.slots, template.read_text(text), strict=True)
    ]
    return _assemble(
        template,
        values,
        utterance_id=utterance_id,
        reference_text=reference_text,
        model=model,
        model_is_random=model_is_random,
    )


def _score_value(k: int | None) -> float | None:
    return None if k is None else float(k)


def _vector(template: AnswerTemplate, index: int, slot: Slot, dist: Distribution) -> list[float]:
    allowed = template.allowed_tokens(slot)
    if isinstance(dist, Mapping):
        unknown = set(dist) - set(allowed)
        if unknown:
            raise ValueError(f"{slot.location}: tokens {sorted(unknown)} are not its values")
        probs = [float(dist.get(token, 0.0)) for token in allowed]
    else:
        if hasattr(dist, "tolist"):  # numpy array, tensor: one conversion, not one per entry
            dist = dist.tolist()
        probs = [float(p) for p in dist]  # type: ignore[union-attr]
        if len(probs) != len(allowed):
            raise ValueError(
                f"slot {index} ({slot.location}) has {len(allowed)} values, "
                f"got {len(probs)} probabilities"
            )
    if not all(math.isfinite(p) and p >= 0.0 for p in probs) or math.fsum(probs) <= 0.0:
        raise AnswerError(
            "invalid_distribution",
            f"{slot.location}: probabilities must be finite, non-negative and not all zero",
            raw=repr(probs),
        )
    return probs


def _argmax(probs: Sequence[float], *, prefer_last: bool) -> int:
    order = range(len(probs))
    return max(order, key=lambda k: (probs[k], k if prefer_last else -k))


def parse_distributions(
    template: AnswerTemplate,
    distributions: Sequence[Distribution],
    *,
    utterance_id: str,
    reference_text: str | None = None,
    model: str | None = None,
    model_is_random: bool = False,
    greedy: bool = False,
) -> Assessment:
    """The assessment read from one probability distribution per slot (see
    :data:`Distribution`): a score is the expected value over the slot's scores (or, with
    ``greedy``, the most probable score, ties toward the higher); a pronounced phone is the
    most probable token, the canonical phone's ``<|ph:X|>`` counting as ``<|ok|>``. A score
    slot's ``None`` gives ``None``; a pronounced slot must have a distribution.

    Raises ``ValueError`` for a wrong number of slots or values, :class:`AnswerError`
    (``invalid_distribution``) for NaN, negative or all-zero probabilities.
    """
    if len(distributions) != len(template.slots):
        raise ValueError(f"{len(distributions)} distributions for {len(template.slots)} slots")
    values: list[float | str | None] = []
    for index, (slot, dist) in enumerate(zip(template.slots, distributions, strict=True)):
        if dist is None:
            if slot.kind == "pronounced":
                raise ValueError(f"slot {index} ({slot.location}) needs a distribution")
            values.append(None)
            continue
        probs = _vector(template, index, slot, dist)
        if slot.kind != "pronounced":
            k = _argmax(probs, prefer_last=True) if greedy else None
            values.append(float(k) if k is not None else expected_score(probs))
            continue
        canonical = strip_stress(template.phones[slot.word][slot.phone])  # type: ignore[index]
        if canonical in PHONES:
            same = PRONOUNCED_TOKENS.index(phone_token(canonical))
            probs[0] += probs[same]
            probs[same] = -1.0
        values.append(PRONOUNCED_TOKENS[_argmax(probs, prefer_last=False)])
    return _assemble(
        template,
        values,
        utterance_id=utterance_id,
        reference_text=reference_text,
        model=model,
        model_is_random=model_is_random,
    )
