"""apa.synth.espeak: espeak-ng speech from text and phoneme strings, the ARPAbet mapping,
and a clear error without espeak-ng."""

from __future__ import annotations

import dataclasses
import io
import struct

import numpy as np
import pytest
import soundfile as sf

from apa.phones import PHONES
from apa.synth import espeak
from apa.synth.espeak import (
    ARPABET_TO_ESPEAK,
    ESPEAK_TO_ARPABET,
    EspeakError,
    arpabet_phonemes,
    espeak_version,
    phonemes,
    speak,
    speak_phonemes,
    speak_words,
    synthesize,
    trim_silence,
)


def test_version_names_espeak_ng():
    assert "eSpeak NG" in espeak_version()


def test_phonemes_of_text():
    assert phonemes("we call it bear") == "wi: k'O:l It b'e@"


def test_speak_gives_16k_audio_and_keeps_the_wav(tmp_path):
    out = tmp_path / "bear.wav"
    audio = speak("we call it bear", out_wav=out)
    assert audio.sample_rate == 16000 and audio.source_sample_rate == 22050
    assert 0.8 < audio.duration_s < 2.0
    assert np.abs(audio.samples).max() > 0.05
    info = sf.info(str(out))
    assert info.samplerate == 22050 and info.channels == 1
    assert info.frames / 22050 == pytest.approx(audio.duration_s, abs=0.01)


def test_stdout_wav_header_gets_real_sizes():
    wav = synthesize("bear")
    riff_size = struct.unpack("<I", wav[4:8])[0]
    assert riff_size == len(wav) - 8
    with sf.SoundFile(io.BytesIO(wav)) as f:
        assert f.frames * 2 == len(wav) - 44  # 16-bit mono after a 44-byte header


def test_rate_changes_duration():
    slow = speak("we call it bear", rate_wpm=100)
    fast = speak("we call it bear", rate_wpm=300)
    assert slow.duration_s > 1.8 * fast.duration_s


def test_phoneme_strings_are_spoken_as_written():
    bear = speak_phonemes("wi: k'O:l It b'e@")
    pear = speak_phonemes("[[wi: k'O:l It p'e@]]")
    assert bear.duration_s == pytest.approx(pear.duration_s, abs=0.1)
    assert not np.array_equal(bear.samples[: len(pear.samples)], pear.samples[: len(bear.samples)])


def test_trim_silence_cuts_only_the_edges():
    word = speak_phonemes("m'A:m@", rate_wpm=110)
    quiet = np.abs(word.samples) <= espeak.SILENCE_FLOOR
    assert quiet[-1600:].all()  # espeak-ng ends a clause with silence
    trimmed = trim_silence(word)
    assert abs(trimmed.samples[0]) > espeak.SILENCE_FLOOR
    assert abs(trimmed.samples[-1]) > espeak.SILENCE_FLOOR
    assert 0.3 < trimmed.duration_s < word.duration_s - 0.1
    silent = dataclasses.replace(word, samples=np.zeros(160, dtype=np.float32))
    assert trim_silence(silent).samples.shape == (0,)


def test_speak_words_puts_exactly_the_pause_between_words():
    words = ["m'A:m@", "n'u:n", "m'u:n"]
    tight = speak_words(words, pause_ms=0, rate_wpm=200)
    spaced = speak_words(words, pause_ms=250, rate_wpm=200)
    assert len(spaced.samples) - len(tight.samples) == 2 * 4000  # two gaps of 250 ms at 16 kHz
    first = len(trim_silence(speak_phonemes("m'A:m@", rate_wpm=200)).samples)
    assert np.array_equal(spaced.samples[:first], tight.samples[:first])
    assert not spaced.samples[first : first + 4000].any()
    assert abs(spaced.samples[first + 4000]) > espeak.SILENCE_FLOOR
    # the words keep their own rate: slower speech, longer words, same pauses
    slow = speak_words(words, pause_ms=250, rate_wpm=110)
    assert slow.duration_s - 0.5 > 1.4 * (spaced.duration_s - 0.5)
    with pytest.raises(ValueError, match="pause_ms"):
        speak_words(words, pause_ms=-1)
    with pytest.raises(ValueError, match="no words"):
        speak_words([], pause_ms=0)


def test_arpabet_mapping_covers_the_model_phones():
    assert set(ARPABET_TO_ESPEAK) == set(PHONES)
    assert len(set(ARPABET_TO_ESPEAK.values())) == len(ARPABET_TO_ESPEAK)
    assert ESPEAK_TO_ARPABET["@"] == "AH" and ESPEAK_TO_ARPABET["tS"] == "CH"


def test_arpabet_phonemes_follow_espeak_transcriptions():
    """espeak-ng's own transcription of a word and the one built from its CMUdict phones
    agree (stress marks placed before the vowel rather than the syllable)."""
    built = arpabet_phonemes([["B", "AE1", "T"], ["CH", "ER1", "CH"], ["M", "EH1", "ZH", "ER0"]])
    assert built == "b'at tS'3:tS m'EZ3"
    assert phonemes("bat church measure") == "b'at tS'3:tS m'EZ3"
    with pytest.raises(ValueError):
        arpabet_phonemes([["B", "XX1"]])
    with pytest.raises(ValueError):
        arpabet_phonemes([[]])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        speak("bear", rate_wpm=5)
    with pytest.raises(ValueError):
        speak("   ")


def test_missing_espeak_raises_a_clear_error(monkeypatch):
    monkeypatch.setattr(espeak, "ESPEAK", "espeak-ng-not-installed")
    espeak.espeak_version.cache_clear()
    try:
        with pytest.raises(EspeakError, match="not installed"):
            speak("bear")
    finally:
        espeak.espeak_version.cache_clear()
