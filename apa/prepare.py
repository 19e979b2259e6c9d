"""Utterance → :class:`~apa.scorer.PreparedUtterance`: the text's length checked,
canonical phones filled from the lexicon, audio decoded and checked. Any step's failure is
returned as an error record."""

from __future__ import annotations

from apa.audio import Audio, AudioConfig, load_audio
from apa.errors import ApaError, InputError
from apa.lexicon import Lexicon, with_canonical_phones
from apa.schema import ErrorRecord, Utterance
from apa.scorer import PreparedUtterance
from apa.text import DEFAULT_MAX_TEXT_CHARS


def check_text_length(text: str, max_text_chars: int | None) -> None:
    """Raise ``input.text_too_long`` for a text over ``max_text_chars`` (``None``: no limit).
    The one check behind every surface (``apa score``, the batch job, the service), made
    before the lexicon or the model spend anything on the text.

    >>> check_text_length("we call", 7)
    >>> check_text_length("we call", 6)
    Traceback (most recent call last):
    ...
    apa.errors.InputError: the reference text has 7 characters, over the 6-character limit
    """
    if max_text_chars is not None and len(text) > max_text_chars:
        raise InputError(
            "text_too_long",
            f"the reference text has {len(text):,} characters, over the "
            f"{max_text_chars:,}-character limit",
        )


def prepare(
    utterance: Utterance,
    *,
    lexicon: Lexicon | None = None,
    audio_config: AudioConfig | None = None,
    audio: Audio | None = None,
    max_text_chars: int | None = DEFAULT_MAX_TEXT_CHARS,
) -> PreparedUtterance | ErrorRecord:
    """Text length, then phones, then audio (from ``utterance.audio`` unless ``audio`` is
    given decoded). ``max_text_chars`` is :attr:`ScoringSettings.max_text_chars
    <apa.scoring.settings.ScoringSettings.max_text_chars>` where the caller has settings."""
    try:
        check_text_length(utterance.text, max_text_chars)
        utterance = with_canonical_phones(utterance, lexicon)
        if utterance.phones is None:
            raise InputError("no_phones", f"{utterance.id}: no canonical phones and no lexicon")
        if audio is None:
            if utterance.audio is None:
                raise InputError("no_audio", f"{utterance.id}: no audio reference")
            audio = load_audio(utterance.audio, audio_config)
    except ApaError as e:
        return e.record(utterance.id)
    return PreparedUtterance(utterance=utterance, audio=audio)
