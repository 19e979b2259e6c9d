"""The ``scores.json`` codec: one entry of Speechocean762's human scores to and from an
:class:`~apa.schema.Assessment` (:func:`assessment_from_upstream`,
:func:`assessment_to_upstream`). Used by the corpus reader (:mod:`apa.data.speechocean762`),
manifests whose rows carry scores (:mod:`apa.data.manifest`), gold files
(:mod:`apa.data.human_scores`) and the synthetic corpus's writer.

Decisions on upstream data:

- ``prosodic`` is our ``prosody``; ``completeness`` is kept as the file gives it (0-10 in the
  released file, though the upstream README says 0-1).
- A word's ``phones`` may be a space-separated string (``"W IY0"``, the file) or a list
  (Hugging Face); ``words`` and ``mispronunciations`` may be lists of objects or, as Hugging
  Face ``Sequence`` features return them, objects of lists.
- A mispronunciation becomes ``PhoneAssessment(error="substitution", pronounced=...)``, with
  the rater's marks (``R*``, ``<unk>``) kept as the pronounced phone. One whose pronounced phone
  is the canonical phone (stress digits ignored) is not a substitution: the phone keeps its
  accuracy score and no error. Its ``canonical-phone`` must be the word's phone at ``index``
  (stress ignored), else the entry is invalid.
- Phones without ``phones-accuracy`` (or lists of different lengths) are invalid scores; a
  word without ``phones`` was not assessed at phone level.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from apa.errors import InputError
from apa.schema import Assessment
from apa.text import strip_stress

SENTENCE_KEYS: dict[str, str] = {
    "accuracy": "accuracy",
    "completeness": "completeness",
    "fluency": "fluency",
    "prosodic": "prosody",
    "total": "total",
}
"""Upstream sentence-level keys of a ``scores.json`` entry -> our :class:`SentenceScores` fields."""
SCORE_KEYS: tuple[str, ...] = (*SENTENCE_KEYS, "words")
"""The keys that carry scores in a ``scores.json`` entry (besides ``text``)."""
WORD_KEYS: tuple[str, ...] = ("accuracy", "stress", "total")


def validation_message(error: ValidationError) -> str:
    """A pydantic error as ``location: message`` pairs (``sentence.fluency: Input should be
    less than or equal to 10``), joined by ``; ``."""
    parts = []
    for item in error.errors(include_url=False):
        loc = ".".join(str(p) for p in item["loc"])
        parts.append(f"{loc}: {item['msg']}" if loc else item["msg"])
    return "; ".join(parts)


def _raw(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


class _Invalid(ValueError):
    """A structural problem in a scores entry, with its upstream location."""


def _records(value: Any, loc: str) -> list[Any]:
    """A list of objects, also from the Hugging Face "object of lists" form."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        columns = {k: v for k, v in value.items()}
        lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
        if len(lengths) > 1 or -1 in lengths:
            raise _Invalid(f"{loc}: neither a list of objects nor an object of equal-length lists")
        n = lengths.pop() if lengths else 0
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]
    if not isinstance(value, list):
        raise _Invalid(f"{loc}: expected a list, got {type(value).__name__}")
    return value


def _word(i: int, word: Any) -> dict[str, Any]:
    loc = f"words.{i}"
    if not isinstance(word, Mapping):
        raise _Invalid(f"{loc}: expected an object, got {type(word).__name__}")
    phones = word.get("phones")
    if phones is None:
        phones = []
    elif isinstance(phones, str):
        phones = phones.split()
    elif isinstance(phones, list):
        phones = list(phones)
    else:
        raise _Invalid(f"{loc}.phones: expected a string or a list")
    accuracies = word.get("phones-accuracy")
    if accuracies is None and phones:
        raise _Invalid(f"{loc}.phones-accuracy: missing for phones {phones}")
    accuracies = accuracies or []
    if not isinstance(accuracies, list) or len(accuracies) != len(phones):
        got = len(accuracies) if isinstance(accuracies, list) else type(accuracies).__name__
        raise _Invalid(f"{loc}.phones-accuracy: {got} scores for {len(phones)} phones")
    scored: list[dict[str, Any]] = [
        {"phone": p, "accuracy": a} for p, a in zip(phones, accuracies, strict=True)
    ]
    seen: set[int] = set()
    for j, item in enumerate(_records(word.get("mispronunciations"), f"{loc}.mispronunciations")):
        mloc = f"{loc}.mispronunciations.{j}"
        if not isinstance(item, Mapping):
            raise _Invalid(f"{mloc}: expected an object")
        index = item.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(phones):
            raise _Invalid(f"{mloc}.index: {index!r} is not a phone index of {phones}")
        if index in seen:
            raise _Invalid(f"{mloc}.index: phone {index} has two mispronunciations")
        seen.add(index)
        canonical, pronounced = item.get("canonical-phone"), item.get("pronounced-phone")
        expected = strip_stress(str(phones[index]))
        if canonical is not None and strip_stress(str(canonical)) != expected:
            raise _Invalid(
                f"{mloc}.canonical-phone: {canonical!r} but phone {index} is {phones[index]!r}"
            )
        if not isinstance(pronounced, str) or not pronounced:
            raise _Invalid(f"{mloc}.pronounced-phone: {pronounced!r} is not a phone")
        if strip_stress(pronounced) == expected:
            continue  # said as the canonical phone: not a substitution; accuracy says how well
        scored[index].update(error="substitution", pronounced=pronounced)
    out: dict[str, Any] = {k: word[k] for k in ("text", *WORD_KEYS) if k in word}
    out["phones"] = scored
    return out


def assessment_from_upstream(utt_id: str, entry: Mapping[str, Any]) -> Assessment:
    """One ``scores.json`` entry (upstream or Hugging Face form) as a human
    :class:`~apa.schema.Assessment` (``model="human"``).

    Raises :class:`~apa.errors.InputError` ``input.invalid_scores`` whose message gives the
    location of each problem (``sentence.fluency``, ``words.1.phones-accuracy``).

    >>> a = assessment_from_upstream("u1", {
    ...     "text": "WE", "accuracy": 8, "completeness": 10.0, "fluency": 9, "prosodic": 9,
    ...     "total": 8, "words": [{"text": "WE", "accuracy": 10, "stress": 10, "total": 10,
    ...     "phones": "W IY0", "phones-accuracy": [2.0, 0.4], "mispronunciations": [
    ...     {"canonical-phone": "IY0", "index": 1, "pronounced-phone": "IH"}]}]})
    >>> a.sentence.prosody, a.words[0].phones[1].error, a.words[0].phones[1].pronounced
    (9.0, 'substitution', 'IH')
    >>> try:
    ...     assessment_from_upstream("u1", {"text": "WE", "accuracy": 11, "completeness": 10,
    ...         "fluency": 9, "prosodic": 9, "total": 8})
    ... except InputError as e:
    ...     print(e.reason, e.message.split(": ")[1])
    input.invalid_scores sentence.accuracy
    """
    if not isinstance(entry, Mapping):
        raise InputError(
            "invalid_scores",
            f"invalid scores for {utt_id!r}: expected an object, got {type(entry).__name__}",
            raw=_raw(entry),
        )
    try:
        data: dict[str, Any] = {
            "utterance_id": utt_id,
            "sentence": {
                ours: entry[theirs] for theirs, ours in SENTENCE_KEYS.items() if theirs in entry
            },
            "words": [_word(i, w) for i, w in enumerate(_records(entry.get("words"), "words"))],
            "model": "human",
        }
        if "text" in entry:
            data["text"] = entry["text"]
        return Assessment.model_validate(data)
    except ValidationError as e:
        message = validation_message(e)
    except (_Invalid, TypeError, AttributeError) as e:
        message = str(e)
    raise InputError("invalid_scores", f"invalid scores for {utt_id!r}: {message}", raw=_raw(entry))


def assessment_to_upstream(assessment: Assessment) -> dict[str, Any]:
    """An :class:`~apa.schema.Assessment` as a ``scores.json`` entry (upstream file form:
    phones as one string; ``mispronunciations`` only where there are substitutions).

    ``assessment_from_upstream(id, assessment_to_upstream(a)) == a`` for a human assessment
    without timings. The upstream schema has no deletions or inserted phones: an assessment
    with either raises ``ValueError`` rather than lose them. Timings and ``model`` are not
    written.
    """
    s = assessment.sentence
    words = []
    for i, w in enumerate(assessment.words):
        if w.insertions or any(p.error == "deletion" for p in w.phones):
            raise ValueError(
                f"word {i} {w.text!r} has deletions or insertions, which scores.json cannot hold"
            )
        word: dict[str, Any] = {
            "accuracy": w.accuracy,
            "stress": w.stress,
            "total": w.total,
            "text": w.text,
            "phones": " ".join(p.phone for p in w.phones),
            "phones-accuracy": [p.accuracy for p in w.phones],
        }
        wrong = [
            {"canonical-phone": p.phone, "index": j, "pronounced-phone": p.pronounced}
            for j, p in enumerate(w.phones)
            if p.error == "substitution"
        ]
        if wrong:
            word["mispronunciations"] = wrong
        words.append(word)
    return {
        "text": assessment.text,
        "accuracy": s.accuracy,
        "completeness": s.completeness,
        "fluency": s.fluency,
        "prosodic": s.prosody,
        "total": s.total,
        "words": words,
    }
