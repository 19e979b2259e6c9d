"""One scoring request as an online service gets it: encoded audio bytes and a reference text
in; out, the assessment trimmed to the levels the caller wants, with integer scores if asked.

The checks are the batch pipeline's (:func:`apa.prepare.prepare`, :func:`apa.audio.
decode_audio`), so a request is refused for the same reasons, with the same ``stage.code``
strings, as a row of a batch job (the length of the text included:
:func:`apa.prepare.check_text_length`).

>>> from apa.lexicon import Lexicon
>>> lexicon = Lexicon({"WE": [["W", "IY0"]]})
>>> prepare_request("r1", "   ", b"", lexicon=lexicon).reason
'input.empty_text'
>>> prepare_request("r1", "we " * 10, b"", lexicon=lexicon, max_text_chars=20).reason
'input.text_too_long'
>>> prepare_request("r1", "we bear", b"RIFF", lexicon=lexicon).reason
'lexicon.unknown_word'
>>> prepare_request("r1", "we", b"RIFF", lexicon=lexicon).reason
'audio.undecodable'
"""

from __future__ import annotations

from collections.abc import Collection

from apa.audio import AudioConfig, decode_audio
from apa.errors import ApaError, InputError
from apa.lexicon import Lexicon, with_canonical_phones
from apa.prepare import check_text_length, prepare
from apa.schema import Assessment, ErrorRecord, Level, Utterance
from apa.scorer import PreparedUtterance
from apa.scores import nearest_score
from apa.text import DEFAULT_MAX_TEXT_CHARS, words_of

LEVELS: tuple[Level, ...] = ("sentence", "word", "phone")


def prepare_request(
    request_id: str,
    text: str,
    audio: bytes,
    *,
    lexicon: Lexicon,
    audio_config: AudioConfig | None = None,
    max_text_chars: int | None = DEFAULT_MAX_TEXT_CHARS,
) -> PreparedUtterance | ErrorRecord:
    """Check the text (not empty, at most ``max_text_chars``, every word in ``lexicon``)
    before decoding any audio, then decode the audio; the first failure is returned as an
    error record for ``request_id``."""
    try:
        if not text.strip():
            raise InputError("empty_text", "the reference text is empty")
        check_text_length(text, max_text_chars)
        if not words_of(text):
            raise InputError("empty_text", "the reference text has no words, only punctuation")
        utterance = with_canonical_phones(Utterance(id=request_id, text=text), lexicon)
        decoded = decode_audio(audio, audio_config)
    except ApaError as e:
        return e.record(request_id)
    # the text is checked above, before the audio was decoded
    return prepare(utterance, lexicon=lexicon, audio=decoded, max_text_chars=None)


def assessment_view(
    assessment: Assessment,
    *,
    levels: Collection[Level] = LEVELS,
    integer: bool = False,
) -> Assessment:
    """``assessment`` with only the levels asked for and, when ``integer``, every score
    rounded half up. Sentence scores are always kept (an assessment has them by definition);
    ``"phone"`` needs ``"word"`` (phones are reported inside their word).

    >>> from apa.schema import SentenceScores, WordAssessment, PhoneAssessment
    >>> a = Assessment(utterance_id="u", text="we", sentence=SentenceScores(
    ...     accuracy=7.5, fluency=8.2, prosody=None, completeness=10.0, total=7.9),
    ...     words=[WordAssessment(text="WE", accuracy=6.5, stress=10.0, total=6.4,
    ...         phones=[PhoneAssessment(phone="W", accuracy=1.6)])])
    >>> v = assessment_view(a, levels=["sentence", "word"], integer=True)
    >>> v.sentence.accuracy, v.sentence.prosody, v.words[0].accuracy, v.words[0].phones
    (8.0, None, 7.0, [])
    >>> assessment_view(a, levels=["sentence"]).words
    []
    """
    unknown = set(levels) - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown levels {sorted(unknown)}; levels are {list(LEVELS)}")
    if "phone" in levels and "word" not in levels:
        raise ValueError("phone scores are reported inside their words: ask for 'word' too")

    def num(value: float | None) -> float | None:
        # halves go up, as raters give integers (the answer format's own rounding)
        return float(nearest_score(value)) if integer and value is not None else value

    sentence = assessment.sentence.model_copy(
        update={k: num(v) for k, v in assessment.sentence.model_dump().items()}
    )
    words = []
    if "word" in levels:
        for word in assessment.words:
            phones = (
                [p.model_copy(update={"accuracy": num(p.accuracy)}) for p in word.phones]
                if "phone" in levels
                else []
            )
            words.append(
                word.model_copy(
                    update={
                        "accuracy": num(word.accuracy),
                        "stress": num(word.stress),
                        "total": num(word.total),
                        "phones": phones,
                        "insertions": word.insertions if "phone" in levels else [],
                    }
                )
            )
    return assessment.model_copy(update={"sentence": sentence, "words": words})
