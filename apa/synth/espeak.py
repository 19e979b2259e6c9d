"""A small wrapper around the espeak-ng command line: speech from text or from espeak-ng
phoneme strings, and a mapping from ARPAbet to espeak-ng phonemes to build speech with
known substitutions.

espeak-ng speaks phoneme mnemonics written inside ``[[ ]]`` as they are: ``[[wi: k'O:l It
p'e@]]`` is "we call it bear" with b replaced by p. :func:`arpabet_phonemes` writes such a
string from ARPAbet phones, so a test (or the synthetic-corpus generator) can say the
canonical phones of a text with any phone swapped and know exactly what was said.

Audio comes back through ``--stdout`` (no temporary files) as a WAV at espeak-ng's 22050 Hz
and is decoded and resampled to 16 kHz with :func:`apa.audio.decode_audio`. espeak-ng must be
installed (``apt-get install espeak-ng``; ``make system-deps``); without it every call
raises :class:`EspeakError`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from apa.audio import Audio, AudioConfig, decode_audio

ESPEAK = "espeak-ng"
TIMEOUT_S = 60.0

ARPABET_TO_ESPEAK: dict[str, str] = {
    # consonants
    "B": "b",
    "CH": "tS",
    "D": "d",
    "DH": "D",
    "F": "f",
    "G": "g",
    "HH": "h",
    "JH": "dZ",
    "K": "k",
    "L": "l",
    "M": "m",
    "N": "n",
    "NG": "N",
    "P": "p",
    "R": "r",
    "S": "s",
    "SH": "S",
    "T": "t",
    "TH": "T",
    "V": "v",
    "W": "w",
    "Y": "j",
    "Z": "z",
    "ZH": "Z",
    # vowels (US English voice)
    "AA": "A:",
    "AE": "a",
    "AH": "V",
    "AO": "O:",
    "AW": "aU",
    "AY": "aI",
    "EH": "E",
    "ER": "3:",
    "EY": "eI",
    "IH": "I",
    "IY": "i:",
    "OW": "oU",
    "OY": "OI",
    "UH": "U",
    "UW": "u:",
}
"""ARPAbet phone (no stress) -> espeak-ng phoneme of the ``en-us`` voice, as espeak-ng itself
transcribes CMUdict's examples (``espeak-ng -v en-us -x``: bat ``b'at``, father ``f'A:D3``,
caught ``k'O:t``, but ``b'Vt``, bird ``b'3:d``, measure ``m'EZ3``, church ``tS'3:tS``).
Unstressed ``AH0`` and ``ER0`` are reduced, as espeak-ng says them: see
:data:`ARPABET_UNSTRESSED`."""

ARPABET_UNSTRESSED: dict[str, str] = {"AH": "@", "ER": "3"}
"""Espeak-ng phonemes for ``AH0`` (schwa, about ``a#b'aUt``) and ``ER0`` (butter ``b'Vt#3``)."""

ESPEAK_TO_ARPABET: dict[str, str] = {
    **{v: k for k, v in ARPABET_TO_ESPEAK.items()},
    **{v: k for k, v in ARPABET_UNSTRESSED.items()},
}
"""The inverse mapping (espeak-ng phoneme -> ARPAbet without stress)."""

_STRESS_MARK = {"1": "'", "2": ","}


class EspeakError(RuntimeError):
    """espeak-ng is missing, or failed on an input."""


@functools.cache
def espeak_version() -> str:
    """espeak-ng's version line (``eSpeak NG text-to-speech: 1.51 ...``). Raises
    :class:`EspeakError` when espeak-ng is not installed or does not run."""
    if shutil.which(ESPEAK) is None:
        raise EspeakError(
            f"{ESPEAK} is not installed (apt-get install espeak-ng, or `make system-deps`)"
        )
    result = _run(["--version"])
    return result.decode("utf-8", "replace").strip()


def _run(args: list[str]) -> bytes:
    try:
        done = subprocess.run([ESPEAK, *args], capture_output=True, timeout=TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise EspeakError(f"{ESPEAK} is not installed (apt-get install espeak-ng)") from exc
    except subprocess.TimeoutExpired as exc:
        raise EspeakError(f"{ESPEAK} took longer than {TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip()
        raise EspeakError(f"{ESPEAK} {' '.join(args[:-1])} failed: {message}")
    return done.stdout


def _voice_args(voice: str, rate_wpm: int, pitch: int, amplitude: int, word_gap: int) -> list[str]:
    if not (80 <= rate_wpm <= 450):
        raise ValueError(f"rate_wpm must be 80-450 words per minute, got {rate_wpm}")
    if not (0 <= pitch <= 99):
        raise ValueError(f"pitch must be 0-99, got {pitch}")
    if not (0 <= amplitude <= 200):
        raise ValueError(f"amplitude must be 0-200, got {amplitude}")
    if word_gap < 0:
        raise ValueError(f"word_gap must be >= 0 (units of 10 ms), got {word_gap}")
    return ["-v", voice, "-s", str(rate_wpm), "-p", str(pitch), "-a", str(amplitude),
            "-g", str(word_gap)]  # fmt: skip


def _fix_wav_sizes(wav: bytes) -> bytes:
    """espeak-ng writes a streamed WAV to stdout with placeholder RIFF and data sizes
    (0x7ffff000); put in the real ones so that any reader takes the file as it is."""
    if len(wav) < 44 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise EspeakError(f"{ESPEAK} did not write a WAV file ({len(wav)} bytes)")
    out = bytearray(wav)
    out[4:8] = struct.pack("<I", len(wav) - 8)
    pos = 12
    while pos + 8 <= len(out):
        chunk, size = out[pos : pos + 4], struct.unpack("<I", out[pos + 4 : pos + 8])[0]
        if chunk == b"data":
            out[pos + 4 : pos + 8] = struct.pack("<I", len(out) - pos - 8)
            break
        pos += 8 + size + (size & 1)
    return bytes(out)


def synthesize(
    text: str,
    *,
    voice: str = "en-us",
    rate_wpm: int = 175,
    pitch: int = 50,
    amplitude: int = 100,
    word_gap: int = 0,
) -> bytes:
    """espeak-ng's WAV (22050 Hz, 16-bit mono) for ``text``; phoneme strings go in
    ``[[ ]]``. ``rate_wpm`` is words per minute (espeak-ng's default 175), ``pitch`` 0-99
    (default 50), ``amplitude`` 0-200 (default 100), ``word_gap`` extra silence between
    words in units of 10 ms."""
    espeak_version()
    if not text.strip():
        raise ValueError("no text to speak")
    args = _voice_args(voice, rate_wpm, pitch, amplitude, word_gap)
    return _fix_wav_sizes(_run([*args, "--stdout", "--", text]))


def speak(
    text: str,
    *,
    voice: str = "en-us",
    rate_wpm: int = 175,
    pitch: int = 50,
    amplitude: int = 100,
    word_gap: int = 0,
    out_wav: str | Path | None = None,
    config: AudioConfig | None = None,
) -> Audio:
    """``text`` spoken by espeak-ng, decoded to mono float32 at ``config.sample_rate``
    (16 kHz). ``out_wav`` also keeps espeak-ng's own WAV there. See :func:`synthesize`.

    Pass ordinary case: espeak-ng spells some all-capital words out as letters
    (``"WE CALL IT BEAR"`` says "I.T."), so lower-case corpus transcripts first."""
    wav = synthesize(
        text,
        voice=voice,
        rate_wpm=rate_wpm,
        pitch=pitch,
        amplitude=amplitude,
        word_gap=word_gap,
    )
    if out_wav is not None:
        Path(out_wav).write_bytes(wav)
    return decode_audio(wav, config)


def speak_phonemes(phoneme_string: str, **kwargs: object) -> Audio:
    """Speak espeak-ng phoneme mnemonics (``"wi: k'O:l It p'e@"``; ``[[ ]]`` added when
    missing). Keyword arguments as for :func:`speak`."""
    text = phoneme_string.strip()
    if not text.startswith("[["):
        text = f"[[{text}]]"
    return speak(text, **kwargs)  # type: ignore[arg-type]


SILENCE_FLOOR = 1e-4
"""Samples at or below this magnitude (about -80 dBFS) count as the silence that
:func:`trim_silence` cuts: espeak-ng's digital silence, and resampling's faint ringing."""


def trim_silence(audio: Audio, floor: float = SILENCE_FLOOR) -> Audio:
    """``audio`` without its leading and trailing silence (samples of magnitude ``<=
    floor``); all of it when nothing is louder."""
    loud = np.flatnonzero(np.abs(audio.samples) > floor)
    samples = audio.samples[loud[0] : loud[-1] + 1] if loud.size else audio.samples[:0]
    return dataclasses.replace(audio, samples=np.ascontiguousarray(samples))


def speak_words(words: Sequence[str], *, pause_ms: float, **kwargs: object) -> Audio:
    """Words (espeak-ng phoneme mnemonics, one string per word) joined by exactly
    ``pause_ms`` of silence: each word is spoken on its own (:func:`speak_phonemes`, keyword
    arguments as for :func:`speak`), its leading and trailing silence cut
    (:func:`trim_silence`), and the words put end to end with the pause between them.

    espeak-ng's own word gap (``-g``, ``word_gap``) cannot give a known pause: its unit is
    10 ms only at the default rate, it grows faster than 1/rate as speech slows (``-g 30``:
    about 220 ms between words at 260 wpm, 1,050 ms at 110), it depends on the words (one
    sentence gets 407 ms where another gets 512 at the same settings) and it lengthens the
    speech around it. Here the silence between two words is ``pause_ms`` to the sample;
    each word keeps only the silence inside it (a stop's closure)."""
    if pause_ms < 0:
        raise ValueError(f"pause_ms must be >= 0, got {pause_ms}")
    if not words:
        raise ValueError("no words to speak")
    # each distinct word once: a filler said three times is synthesised once
    spoken = {w: trim_silence(speak_phonemes(w, **kwargs)) for w in dict.fromkeys(words)}
    first = spoken[words[0]]
    pause = np.zeros(round(pause_ms * first.sample_rate / 1000), dtype=np.float32)
    parts = [part for w in words for part in (pause, spoken[w].samples)][1:]
    return dataclasses.replace(first, samples=np.concatenate(parts))


def phonemes(text: str, *, voice: str = "en-us") -> str:
    """espeak-ng's phoneme transcription of ``text`` (``espeak-ng -x -q``), one line: ``"we
    call it bear"`` -> ``"wi: k'O:l It b'e@"``."""
    espeak_version()
    out = _run(["-v", voice, "-q", "-x", "--", text]).decode("utf-8", "replace")
    return " ".join(out.split())


def arpabet_phonemes(words: Sequence[Sequence[str]]) -> str:
    """Espeak-ng phoneme mnemonics for ARPAbet words (one list of phones per word), stress
    digits turned into espeak-ng's stress marks (``1`` -> ``'``, ``2`` -> ``,`` before the
    vowel), words separated by spaces, ready for :func:`speak_phonemes`.

    >>> arpabet_phonemes([["W", "IY1"], ["K", "AO1", "L"], ["IH1", "T"], ["P", "EH1", "R"]])
    "w'i: k'O:l 'It p'Er"
    >>> arpabet_phonemes([["AH0", "B", "AW1", "T"], ["B", "AH1", "T", "ER0"]])
    "@b'aUt b'Vt3"

    espeak-ng reads mnemonics greedily, so a few adjacent pairs inside one word fuse into
    another phoneme (``T SH`` -> ``tS``, ``D ZH`` -> ``dZ``); avoid them when building tests.
    """
    out = []
    for word in words:
        parts = []
        for phone in word:
            match = re.fullmatch(r"([A-Z]+)([012]?)", phone.upper())
            if match is None or match.group(1) not in ARPABET_TO_ESPEAK:
                raise ValueError(f"{phone!r} is not an ARPAbet phone")
            base, stress = match.groups()
            symbol = ARPABET_TO_ESPEAK[base]
            if stress == "0" and base in ARPABET_UNSTRESSED:
                symbol = ARPABET_UNSTRESSED[base]
            parts.append(_STRESS_MARK.get(stress, "") + symbol)
        if not parts:
            raise ValueError("a word needs at least one phone")
        out.append("".join(parts))
    return " ".join(out)
