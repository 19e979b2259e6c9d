"""A catalogue of hostile inputs, each with the answer every surface must give.

An adversarial campaign found the defects issue 17 fixed; this module keeps its inputs as
data, so that the same kinds are tried by the tests (``tests/test_adversarial.py`` for ``apa
score`` and the batch job, ``tests/serve/test_adversarial_http.py`` for the service) and by
``benchmarks/reliability.py``, and listed in ``docs/reliability.md``.

A :class:`Kind` is one input row: a reference text and an audio source (bytes written to a
file, a special path such as a FIFO, or a raw manifest line), and the error reason it must
end as (``None``: it must be scored). Kinds made of bytes also go to the HTTP service, where
the answer is the status and the same reason.

:func:`write_corpus` writes every kind into a directory as a JSONL manifest plus its files;
the manifest's ids are the kinds' names.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from apa.synth.espeak import synthesize

TEXT = "we call it bear"
"""The reference every audio kind is read against (every word in CMUdict)."""


def _speech() -> np.ndarray:
    """espeak-ng saying :data:`TEXT`, float32 at 22.05 kHz."""
    samples, _ = sf.read(io.BytesIO(synthesize(TEXT)), dtype="float32")
    return samples


def _encode(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None):
    sink = io.BytesIO()
    sf.write(sink, samples, rate, format=fmt, subtype=subtype)
    return sink.getvalue()


def _resampled(rate: int) -> bytes:
    import soxr

    return _encode(soxr.resample(_speech(), 22050, rate), rate, subtype="PCM_16")


def _scaled_float(peak: float) -> bytes:
    speech = _speech()
    return _encode(speech / np.max(np.abs(speech)) * peak, 22050, subtype="FLOAT")


def _with_values(value: float) -> bytes:
    speech = _speech().copy()
    speech[1000:1010] = value
    return _encode(speech, 22050, subtype="FLOAT")


def _hour_long_header() -> bytes:
    """A WAV whose header claims an hour of 16 kHz 16-bit mono, with 1 s of data."""
    data = np.zeros(16000, dtype="<i2").tobytes()
    claimed = 3600 * 16000 * 2
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    return (
        b"RIFF" + struct.pack("<I", 36 + claimed) + b"WAVE"
        + b"fmt " + struct.pack("<I", 16) + fmt
        + b"data" + struct.pack("<I", claimed) + data
    )  # fmt: skip


def _tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * math.pi * 220 * t)).astype(np.float32)


Audio = bytes | Callable[[Path], str] | None
"""bytes: written to ``<root>/audio/<name>.<ext>``; a callable: makes a special path under
the root and returns it; ``None``: no audio field."""


@dataclass(frozen=True)
class Kind:
    name: str
    what: str
    reason: str | None
    """the error reason it must end as; ``None``: scored"""
    text: str | None = TEXT
    audio: Audio = None
    ext: str = "wav"
    raw_line: bytes | None = None
    """a manifest line written as it is (malformed rows); id from :attr:`row_id`"""
    row_id: str | None = None
    """the id the manifest reader gives a row without a usable id (``<row N>``)"""
    http_status: int | None = None
    """status the HTTP service answers (bytes kinds only); ``None``: not an HTTP kind"""
    http_reason: str | None = None
    """the service's reason where it differs from :attr:`reason` (a manifest's reader
    refuses a blank or wordless text as a bad field; a request finds it has no words)"""

    @property
    def http_answer(self) -> str | None:
        return self.http_reason if self.http_reason is not None else self.reason

    @property
    def http(self) -> bool:
        return self.http_status is not None and isinstance(self.audio, bytes)


def _fifo(root: Path) -> str:
    path = root / "special" / "pipe.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.mkfifo(path)
    return str(path)


def _directory(root: Path) -> str:
    path = root / "special" / "a-directory.wav"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _sparse(size: int) -> Callable[[Path], str]:
    def make(root: Path) -> str:
        path = root / "special" / f"sparse-{size}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            f.truncate(size)  # no bytes on disk, the size on paper
        return str(path)

    return make


def _fixed(path: str) -> Callable[[Path], str]:
    return lambda root: path


def kinds() -> list[Kind]:
    """Every kind (built fresh: the audio is synthesised here, about 1 s in all)."""
    speech = _speech()
    ok = 200
    bad = 422
    return [
        # audio that must be scored
        Kind("ok_wav_22k", "espeak-ng speech, 22.05 kHz 16-bit WAV", None,
             audio=_encode(speech, 22050, subtype="PCM_16"), http_status=ok),
        Kind("ok_wav_8k", "the same at 8 kHz (resampled up)", None,
             audio=_resampled(8000), http_status=ok),
        Kind("ok_wav_48k_stereo", "48 kHz stereo (downmixed, resampled)", None,
             audio=_encode(np.stack([_resampled_array(48000)] * 2, axis=1), 48000,
                           subtype="PCM_24"), http_status=ok),
        Kind("ok_flac", "FLAC", None, audio=_encode(speech, 22050, "FLAC"), ext="flac",
             http_status=ok),
        Kind("ok_ogg", "Ogg Vorbis", None, audio=_encode(speech, 22050, "OGG", "VORBIS"),
             ext="ogg", http_status=ok),
        Kind("ok_float_peak_1_5", "float WAV peaking at 1.5 (clipped upstream)", None,
             audio=_scaled_float(1.5), http_status=ok),
        Kind("ok_text_punctuation", "reference with punctuation and case", None,
             text="We call it, \"BEAR\"!", audio=_encode(speech, 22050, subtype="PCM_16"),
             http_status=ok),
        # audio that must be refused
        Kind("empty_file", "0 bytes", "audio.empty", audio=b"", http_status=bad),
        Kind("random_bytes", "4 KiB of random bytes", "audio.undecodable",
             audio=np.random.default_rng(0).bytes(4096), http_status=bad),
        Kind("text_as_wav", "a text file named .wav", "audio.undecodable",
             audio=b"this is not audio\n" * 50, http_status=bad),
        Kind("riff_garbage", "a RIFF header followed by garbage", "audio.undecodable",
             audio=b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\xff" * 64, http_status=bad),
        Kind("unsupported_format", "a valid AU file (format not accepted)", "audio.undecodable",
             audio=_encode(speech, 22050, "AU", "PCM_16"), ext="au", http_status=bad),
        Kind("header_claims_an_hour", "WAV header claiming 1 h over 1 s of zeros: the length "
             "comes from the data, nothing is read past it", "audio.silent",
             audio=_hour_long_header(), http_status=bad),
        Kind("too_long_31s", "31 s of tone", "audio.too_long",
             audio=_encode(_tone(31.0), 16000, subtype="PCM_16"), http_status=bad),
        Kind("too_short_0_1s", "0.1 s of tone", "audio.too_short",
             audio=_encode(_tone(0.1), 16000, subtype="PCM_16"), http_status=bad),
        Kind("digital_silence", "2 s of zeros", "audio.silent",
             audio=_encode(np.zeros(32000, np.float32), 16000, subtype="PCM_16"),
             http_status=bad),
        Kind("dc_offset_only", "2 s of a constant value", "audio.silent",
             audio=_encode(np.full(32000, 0.5, np.float32), 16000, subtype="PCM_16"),
             http_status=bad),
        Kind("hiss_at_minus_80_dbfs", "2 s of noise at -80 dBFS", "audio.silent",
             audio=_encode((np.random.default_rng(1).standard_normal(32000) * 1e-4)
                           .astype(np.float32), 16000, subtype="FLOAT"), http_status=bad),
        Kind("nan_samples", "float WAV with NaN samples", "audio.non_finite",
             audio=_with_values(math.nan), http_status=bad),
        Kind("inf_samples", "float WAV with infinite samples", "audio.non_finite",
             audio=_with_values(math.inf), http_status=bad),
        Kind("extreme_3e38", "float WAV with finite samples near 3e38", "audio.out_of_range",
             audio=_scaled_float(3e38), http_status=bad),
        Kind("extreme_1e6", "float WAV peaking at 1e6", "audio.out_of_range",
             audio=_scaled_float(1e6), http_status=bad),
        # texts that must be refused
        Kind("empty_text", "empty reference", "input.missing_field", text="",
             audio=_encode(speech, 22050, subtype="PCM_16")),
        Kind("whitespace_text", "reference of spaces and tabs", "input.missing_field",
             text=" \t  ", audio=_encode(speech, 22050, subtype="PCM_16"), http_status=bad,
             http_reason="input.empty_text"),
        Kind("punctuation_text", "reference of punctuation only", "input.invalid_field",
             text="?!, ...", audio=_encode(speech, 22050, subtype="PCM_16"), http_status=bad,
             http_reason="input.empty_text"),
        Kind("unknown_word", "a word no lexicon knows", "lexicon.unknown_word",
             text="we call it zorblax", audio=_encode(speech, 22050, subtype="PCM_16"),
             http_status=bad),
        Kind("emoji_text", "a reference of emoji", "input.invalid_field", text="🐻 🐻",
             audio=_encode(speech, 22050, subtype="PCM_16"), http_status=bad,
             http_reason="input.empty_text"),
        Kind("text_5000_chars", "a 5,000-character reference", "input.text_too_long",
             text=("we call it bear " * 313)[:5000], audio=_encode(speech, 22050,
                                                                   subtype="PCM_16"),
             http_status=bad),
        Kind("text_too_long_bad_audio", "an over-long reference with a huge sparse file: "
             "refused on the text, the audio never read", "input.text_too_long",
             text="bear " * 400, audio=_sparse(2**31 + 1)),
        # sources that must be refused (manifest surfaces only)
        Kind("missing_file", "audio path that does not exist", "audio.not_found",
             audio=_fixed("/nonexistent/apa/missing.wav")),
        Kind("directory_as_audio", "a directory named .wav", "audio.unreadable",
             audio=_directory),
        Kind("fifo_as_audio", "a FIFO (named pipe): used to hang the run", "audio.unreadable",
             audio=_fifo),
        Kind("dev_zero_as_audio", "/dev/zero (endless): used to fill memory", "audio.unreadable",
             audio=_fixed("/dev/zero")),
        Kind("sparse_2gib", "a 2 GiB + 1 byte file: used to crash the batch fetch stage",
             "audio.too_large", audio=_sparse(2**31 + 1)),
        Kind("sparse_51mib", "just over the 50 MiB size limit", "audio.too_large",
             audio=_sparse(50 * 2**20 + 1)),
        Kind("http_uri", "an http:// audio URI (scheme not supported)", "audio.unreadable",
             audio=_fixed("http://127.0.0.1:9/a.wav")),
        Kind("no_audio_field", "a row without audio", "input.no_audio", audio=None),
        # manifest rows that must be refused
        Kind("malformed_json_line", "a JSONL line that is not JSON", "input.malformed_row",
             raw_line=b'{"id": "malformed_json_line", "audio": ', row_id="<row {n}>"),
        Kind("invalid_utf8_line", "a line with invalid UTF-8", "input.malformed_row",
             raw_line=b'{"id": "x\xff\xfe", "text": "we", "audio": "a.wav"}',
             row_id="<row {n}>"),
        Kind("row_without_id", "a row with no id", "input.missing_field",
             raw_line=b'{"text": "we call it bear", "audio": "a.wav"}', row_id="<row {n}>"),
        Kind("row_not_an_object", "a JSON line that is a list", "input.malformed_row",
             raw_line=b'["we", "call"]', row_id="<row {n}>"),
        Kind("duplicate_id", "two rows with the same id", "input.duplicate_id",
             raw_line=b'{"id": "duplicate_id", "text": "we", "audio": "a.wav"}\n'
             b'{"id": "duplicate_id", "text": "we", "audio": "b.wav"}'),
    ]  # fmt: skip


def _resampled_array(rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(_speech(), 22050, rate).astype(np.float32)


@dataclass(frozen=True)
class Corpus:
    manifest: Path
    expected: dict[str, str | None]
    """the answer by id: an error reason, or ``None`` for scored"""
    ids: dict[str, str]
    """kind name -> the id its row ends under (``<row N>`` for a row without a usable id)"""


def write_corpus(root: str | Path, selected: list[Kind] | None = None) -> Corpus:
    """Write the kinds under ``root``: ``manifest.jsonl`` and the audio files."""
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    lines: list[bytes] = []
    expected: dict[str, str | None] = {}
    ids: dict[str, str] = {}
    for kind in selected if selected is not None else kinds():
        if kind.raw_line is not None:
            for line in kind.raw_line.split(b"\n"):
                lines.append(line)
            uid = kind.row_id.format(n=len(lines)) if kind.row_id else kind.name
        else:
            uid = kind.name
            row: dict[str, object] = {"id": kind.name}
            if kind.text is not None:
                row["text"] = kind.text
            if isinstance(kind.audio, bytes):
                path = root / "audio" / f"{kind.name}.{kind.ext}"
                path.write_bytes(kind.audio)
                row["audio"] = f"audio/{path.name}"
            elif kind.audio is not None:
                row["audio"] = kind.audio(root)
            lines.append(json.dumps(row, ensure_ascii=False).encode())
        expected[uid] = kind.reason
        ids[kind.name] = uid
    manifest = root / "manifest.jsonl"
    manifest.write_bytes(b"".join(line + b"\n" for line in lines))
    return Corpus(manifest=manifest, expected=expected, ids=ids)


def answers(out: str | Path) -> dict[str, str | None]:
    """What an output directory (``apa score``'s files or the batch job's part
    directories) says of each id: its error reason, or ``None`` when it was scored. An id
    in both tables, or twice in one, raises: that is a duplicate, never an answer."""
    from apa.tables import read_table

    got: dict[str, str | None] = {}
    for table, column in (("utterances", None), ("errors", "reason")):
        for candidate in (Path(out) / f"{table}.parquet", Path(out) / table):
            if candidate.exists():
                for row in read_table(str(candidate)).to_pylist():
                    uid = row["utterance_id"]
                    if uid in got:
                        raise AssertionError(f"{uid} is in the output twice")
                    got[uid] = row[column] if column else None
                break
    return got
