"""Utterance → :class:`~apa.scoring.scorer.PreparedUtterance`: canonical phones filled from the
lexicon, audio decoded and checked. Either step's failure is returned as an error record."""

from __future__ import annotations

from apa.audio import Audio, AudioConfig, load_audio
from apa.errors import ApaError, InputError
from apa.lexicon import Lexicon, with_canonical_phones
from apa.schema import ErrorRecord, Utterance
from apa.scoring.scorer import PreparedUtterance


def prepare(
    utterance: Utterance,
    *,
    lexicon: Lexicon | None = None,
    audio_config: AudioConfig | None = None,
    audio: Audio | None = None,
) -> PreparedUtterance | ErrorRecord:
    """Phones, then audio (from ``utterance.audio`` unless ``audio`` is given decoded)."""
    try:
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
