"""Audio in: encoded bytes or a path/URI become mono float32 samples at 16 kHz, or an
:class:`~apa.errors.AudioError` saying why not.

WAV (and its WAVEX/RF64/W64 relatives), AIFF, FLAC, OGG (Vorbis, Opus) and MP3 are decoded
with libsndfile (``soundfile``), downmixed to mono by the mean over channels and resampled
with ``soxr`` when the rate differs from :attr:`AudioConfig.sample_rate`.

Every failure is an :class:`~apa.errors.AudioError` with a stable reason code
(``audio.<code>``), checked in this order:

=============  ==============================================================
code           when
=============  ==============================================================
not_found      no file or object at the path/URI
unreadable     the file or object exists but cannot be read (I/O, permissions), or is
               not a regular file (a directory, FIFO, device or socket: never opened)
too_large      more encoded bytes than ``max_bytes`` (a file or object: from its size,
               before reading, or from a read that stops one byte past the limit)
empty          zero bytes
undecodable    not a supported, valid audio file
too_long       the header already says it is longer than ``max_duration_s``
empty          decoded to no samples
non_finite     NaN or infinite samples (possible in float WAV)
out_of_range   a sample's magnitude above ``max_abs_amplitude`` (possible in float WAV)
too_long       decoded duration above ``max_duration_s``
too_short      decoded duration below ``min_duration_s``
silent         the loudest 100 ms stay below ``silence_dbfs`` (RMS)
=============  ==============================================================

A file is never read whole before its size is known to be within ``max_bytes``, and never
read past it, so a huge file or an endless one costs at most ``max_bytes + 1`` bytes.

The length is checked from the header before decoding, so an hour-long upload is refused
without decoding it. MP3 headers only estimate the length (a VBR file without a Xing tag is
estimated from its first frame), so for MP3 the header is not trusted for refusing; instead,
for every format, decoding stops one frame past the limit, which bounds the work either way.

Known limits of libsndfile/soundfile: soundfile reads no further than the length libsndfile
reports, so an MP3 whose estimate is too short is decoded only that far; and a FLAC stream
whose header does not give its length (written to a pipe) cannot be read at all and is
reported as ``undecodable``.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import soundfile as sf
import soxr
from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from apa import storage
from apa.errors import AudioError
from apa.schema import ErrorRecord

ResampleQuality = Literal["VHQ", "HQ", "MQ", "LQ", "QQ"]

SUPPORTED_FORMATS: frozenset[str] = frozenset(
    {"WAV", "WAVEX", "RF64", "W64", "AIFF", "FLAC", "OGG", "MP3"}
)
"""libsndfile major formats accepted; anything else it happens to parse is ``undecodable``."""

_HEADER_LENGTH_IS_ESTIMATE: frozenset[str] = frozenset({"MP3"})
_UNKNOWN_FRAMES = 2**62
"""libsndfile reports an unknown length as SF_COUNT_MAX (2**63 - 1)."""

_MIB = 1024 * 1024

FRAME_S = 0.02
"""Frame length for the silence check."""
LOUD_SPAN_S = 0.1
"""Audio is silent unless at least this much of it (five 20 ms frames) reaches
:attr:`AudioConfig.silence_dbfs`."""


class AudioConfig(BaseSettings):
    """What audio is accepted and what it becomes. Environment: ``APA_AUDIO_<FIELD>``
    (``APA_AUDIO_MAX_DURATION_S=5``)."""

    model_config = SettingsConfigDict(env_prefix="APA_AUDIO_", frozen=True, extra="forbid")

    sample_rate: int = 16000
    """Output rate in Hz; 16 kHz is what the speech encoders we fine-tune expect."""

    min_duration_s: float = 0.2
    """Shorter is refused. 0.2 s is about the shortest a single short word ("a", "I") can be
    said in, and gives a speech encoder ~10-20 frames; anything shorter is a mis-tap or a
    clipped upload, not a reading (Speechocean762 utterances run 2-20 s)."""

    max_duration_s: float = 30.0
    """Longer is refused: one read sentence fits easily, and 30 s is the window of
    Whisper-style audio encoders, so nothing is silently cut."""

    silence_dbfs: float = -60.0
    """Audio counts as silent when its loudest 100 ms stay below this RMS level (dB relative
    to a full-scale amplitude of 1.0, DC removed; see :func:`loudest_level_dbfs`). -60 dBFS
    sits well above digital silence and 16-bit dither (about -100 dBFS) and the hiss of a
    muted or unplugged microphone, and far below speech: in the Speechocean762 sample even
    the whole-file RMS, pauses averaged in, is -43 dBFS at the quietest and -25 dBFS in the
    median. Lower it (to -200, say) to refuse only digital silence."""

    max_bytes: int = 50 * _MIB
    """Larger encoded inputs are refused before decoding. 50 MiB holds 30 s of even a
    192 kHz stereo float32 WAV (46 MiB); raise it with ``max_duration_s`` for long WAVs."""

    max_abs_amplitude: float = 64.0
    """Audio with a sample of larger magnitude is refused (full scale is 1.0). Integer PCM
    cannot exceed 1.0, and a float WAV exceeds it only a little when a mix was clipped or
    normalised late; 64 (+36 dBFS) leaves room for that. Samples orders of magnitude above
    full scale (a float WAV of 3e38) are not a recording, and would overflow the features
    of the models downstream into NaN and infinity."""

    resample_quality: ResampleQuality = "HQ"
    """soxr quality recipe; HQ is soxr's default, transparent for speech and fast."""

    @field_validator("resample_quality", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> AudioConfig:
        problems = []
        if self.sample_rate <= 0:
            problems.append(f"sample_rate must be positive, got {self.sample_rate}")
        for name in ("min_duration_s", "max_duration_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name} must be a positive number of seconds, got {value}")
        if not problems and self.min_duration_s >= self.max_duration_s:
            problems.append(
                f"min_duration_s ({self.min_duration_s}) must be less than "
                f"max_duration_s ({self.max_duration_s})"
            )
        if not (math.isfinite(self.silence_dbfs) and self.silence_dbfs <= 0):
            problems.append(
                f"silence_dbfs must be a finite level at or below 0 dBFS, got {self.silence_dbfs}"
            )
        if self.max_bytes <= 0:
            problems.append(f"max_bytes must be positive, got {self.max_bytes}")
        if not (math.isfinite(self.max_abs_amplitude) and self.max_abs_amplitude >= 1.0):
            problems.append(
                "max_abs_amplitude must be a finite number at or above full scale (1.0), "
                f"got {self.max_abs_amplitude}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass(frozen=True, eq=False)
class Audio:
    """Decoded audio: ``samples`` is 1-D, mono, C-contiguous float32 at ``sample_rate``.

    The ``source_*`` fields describe the input as it came (``source_format`` is libsndfile's
    major format: ``"WAV"``, ``"FLAC"``, ``"OGG"``, ``"MP3"``, ...). Equality is identity:
    arrays do not compare as a single truth value.
    """

    samples: np.ndarray
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    source_format: str

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.sample_rate


def decode_audio(data: bytes, config: AudioConfig | None = None) -> Audio:
    """Decode encoded audio bytes. Raises only :class:`AudioError` for anything wrong with
    the audio (a misconfigured environment still raises pydantic's ``ValidationError`` when
    the default config is built: that is the deployment's fault, not the input's)."""
    config = config if config is not None else AudioConfig()
    try:
        return _decode(data, config)
    except AudioError:
        raise
    except MemoryError as exc:
        raise AudioError("undecodable", "ran out of memory decoding the audio") from exc
    except Exception as exc:  # the contract: nothing but AudioError reaches the caller
        raise AudioError("undecodable", f"cannot decode audio: {_describe(exc)}") from exc


def load_audio(source: str | os.PathLike[str], config: AudioConfig | None = None) -> Audio:
    """Read and decode the audio at a local path or an ``s3://`` URI. Raises only
    :class:`AudioError` (see :func:`decode_audio` for the one exception)."""
    config = config if config is not None else AudioConfig()
    data = read_audio_bytes(source, config)
    return decode_audio(data, config)


def load_audio_or_error(
    utterance_id: str, source: str | os.PathLike[str], config: AudioConfig | None = None
) -> Audio | ErrorRecord:
    """:func:`load_audio`, with a failure returned as the utterance's error row."""
    try:
        return load_audio(source, config)
    except AudioError as exc:
        return exc.record(utterance_id)


def read_audio_bytes(source: str | os.PathLike[str], config: AudioConfig | None = None) -> bytes:
    """The encoded bytes of an audio file (local path or ``s3://``), at most
    ``config.max_bytes`` of them: a larger file is refused from its size, before reading,
    and the read stops one byte past the limit should the file be larger than it said. Any
    failure is an :class:`~apa.errors.AudioError` (``audio.not_found``, ``audio.unreadable``,
    ``audio.too_large``)."""
    config = config if config is not None else AudioConfig()
    try:
        uri = os.fsdecode(os.fspath(source))
    except Exception as exc:
        raise AudioError(
            "unreadable", f"not a path or URI: {type(source).__name__} {source!r}"
        ) from exc
    try:
        return storage.read_bytes(uri, max_bytes=config.max_bytes)
    except storage.TooLargeError as exc:
        raise _too_large(exc.size, config.max_bytes, where=f" at {uri}") from exc
    except storage.NotARegularFileError as exc:
        raise AudioError("unreadable", str(exc)) from exc
    except FileNotFoundError as exc:
        raise AudioError("not_found", f"no audio at {uri}") from exc
    except PermissionError as exc:
        raise AudioError("unreadable", f"permission denied reading {uri}") from exc
    except MemoryError as exc:
        raise AudioError("unreadable", f"ran out of memory reading {uri}") from exc
    except Exception as exc:  # OSError, pyarrow errors, unsupported URI scheme (ValueError)
        raise AudioError("unreadable", f"cannot read {uri}: {_describe(exc)}") from exc


def _decode(data: bytes, config: AudioConfig) -> Audio:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise AudioError(
            "undecodable", f"expected encoded audio as bytes, got {type(data).__name__}"
        )
    size = memoryview(data).nbytes
    if size == 0:
        raise AudioError("empty", "audio is 0 bytes")
    if size > config.max_bytes:
        raise _too_large(size, config.max_bytes)

    try:
        sound = sf.SoundFile(io.BytesIO(data))
    except Exception as exc:
        raise AudioError("undecodable", f"not a readable audio file: {_describe(exc)}") from exc
    with sound:
        fmt, rate, channels, header_frames = (
            sound.format,
            sound.samplerate,
            sound.channels,
            sound.frames,
        )
        if fmt not in SUPPORTED_FORMATS:
            raise AudioError(
                "undecodable",
                f"{fmt} audio is not supported (supported: {', '.join(sorted(SUPPORTED_FORMATS))})",
            )
        if rate <= 0 or channels <= 0:
            raise AudioError("undecodable", f"{fmt} header gives {rate} Hz and {channels} channels")
        length_known = 0 <= header_frames < _UNKNOWN_FRAMES
        if length_known and fmt not in _HEADER_LENGTH_IS_ESTIMATE:
            header_s = header_frames / rate
            if header_s > config.max_duration_s:
                raise AudioError(
                    "too_long",
                    f"audio is {_secs(header_s)} according to its {fmt} header, longer than "
                    f"the {_secs(config.max_duration_s)} limit",
                )
        # One frame past the limit tells "too long" without decoding the rest.
        max_frames = math.floor(config.max_duration_s * rate)
        try:
            frames = sound.read(max_frames + 1, dtype="float32", always_2d=True)
        except MemoryError:
            raise
        except Exception as exc:
            unknown = "" if length_known else " (its header does not give its length)"
            raise AudioError(
                "undecodable", f"cannot decode {fmt} audio{unknown}: {_describe(exc)}"
            ) from exc

    n = frames.shape[0]
    if n == 0:
        raise AudioError("empty", f"{fmt} audio has no samples")
    finite = np.isfinite(frames)
    if not finite.all():
        bad = int(frames.size - np.count_nonzero(finite))
        raise AudioError(
            "non_finite",
            f"audio has {bad:,} non-finite (NaN or infinite) of {frames.size:,} samples",
        )
    peak = float(np.max(np.abs(frames)))
    if peak > config.max_abs_amplitude:
        raise AudioError(
            "out_of_range",
            f"audio peaks at {peak:.3g} times full scale, beyond the "
            f"{config.max_abs_amplitude:g} limit: not a recording",
        )
    if n > max_frames:
        raise AudioError(
            "too_long",
            f"audio runs past the {_secs(config.max_duration_s)} limit "
            f"(decoding stopped at {_secs(n / rate)})",
        )
    duration = n / rate
    if duration < config.min_duration_s:
        raise AudioError(
            "too_short",
            f"audio is {_secs(duration)}, shorter than the {_secs(config.min_duration_s)} minimum",
        )

    mono = frames[:, 0] if channels == 1 else frames.mean(axis=1, dtype=np.float64)
    if rate != config.sample_rate:
        try:
            mono = soxr.resample(mono, rate, config.sample_rate, quality=config.resample_quality)
        except MemoryError:
            raise
        except Exception as exc:
            raise AudioError(
                "undecodable",
                f"cannot resample from {rate} Hz to {config.sample_rate} Hz: {_describe(exc)}",
            ) from exc
    samples = np.ascontiguousarray(mono, dtype=np.float32)
    if not np.isfinite(samples).all():  # finite input so large that it overflows float32
        raise AudioError(
            "non_finite",
            f"audio overflows float32 after downmixing and resampling (peak input {peak:.3g})",
        )

    level = loudest_level_dbfs(samples, config.sample_rate)
    if level < config.silence_dbfs:
        detail = (
            "every sample has the same value"
            if level == -math.inf
            else f"its loudest {LOUD_SPAN_S * 1000:.0f} ms reach only {level:.1f} dBFS RMS"
        )
        raise AudioError(
            "silent",
            f"audio is silent: {detail}, below the {config.silence_dbfs:.1f} dBFS threshold",
        )
    return Audio(
        samples=samples,
        sample_rate=config.sample_rate,
        source_sample_rate=rate,
        source_channels=channels,
        source_format=fmt,
    )


def loudest_level_dbfs(samples: np.ndarray, sample_rate: int) -> float:
    """How loud the loudest :data:`LOUD_SPAN_S` of ``samples`` is: the RMS level, in dB
    relative to a full-scale amplitude of 1.0 (a full-scale sine is -3 dBFS), of the
    ``LOUD_SPAN_S / FRAME_S``-th loudest frame of :data:`FRAME_S`, after removing the DC
    offset. ``-inf`` for a constant signal.

    Neither the whole-file RMS (a short word in a long recording averages away) nor the peak
    (one click from a muted microphone counts as speech) tells silence from speech; this
    does: a click fills a frame or two, a word many.

    >>> t = np.arange(16000) / 16000
    >>> round(loudest_level_dbfs(0.1 * np.sin(2 * np.pi * 500 * t), 16000), 1)
    -23.0
    >>> loudest_level_dbfs(np.full(16000, 0.5), 16000)
    -inf
    """
    power, _ = _frame_power(samples, sample_rate, whole_if_short=True)
    count = len(power)
    k = min(count, math.ceil(LOUD_SPAN_S / FRAME_S - 1e-9))
    rms = math.sqrt(float(np.partition(power, count - k)[count - k]))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def _frame_power(
    samples: np.ndarray, sample_rate: int, *, whole_if_short: bool
) -> tuple[np.ndarray, int]:
    """The mean power of each whole :data:`FRAME_S` frame of ``samples`` (DC removed) and
    the frame length in samples; audio shorter than a frame is one frame when
    ``whole_if_short``, else none."""
    x = np.asarray(samples, dtype=np.float64)
    x = x - x.mean() if len(x) else x
    frame = max(1, round(FRAME_S * sample_rate))
    count = len(x) // frame
    if count == 0:
        if not whole_if_short:
            return np.zeros(0), frame
        frame, count = len(x), 1
    return np.mean(np.square(x[: count * frame]).reshape(count, frame), axis=1), frame


def _too_large(size: int | None, limit: int, where: str = "") -> AudioError:
    """``audio.too_large``; ``size`` ``None`` when only a capped read found it out."""
    if size is None:
        found = f"more than {limit:,} bytes"
    else:
        found = f"{size:,} bytes ({size / _MIB:.1f} MiB)"
    return AudioError(
        "too_large",
        f"audio{where} is {found}, over the {limit:,}-byte ({limit / _MIB:.1f} MiB) limit",
    )


def _secs(value: float) -> str:
    """A duration for a message: ``"31.20 s"``, and enough digits for tiny ones (``"0.004 s"``)."""
    return f"{value:.2f} s" if value >= 0.1 else f"{value:.2g} s"


def _describe(exc: BaseException) -> str:
    """A stable message for an exception: libsndfile's own text without the object address."""
    text = getattr(exc, "error_string", None) or str(exc) or type(exc).__name__
    return text.strip()


def speech_bounds(
    samples: np.ndarray, sample_rate: int, *, floor_db: float = 45.0, margin_s: float = 0.2
) -> tuple[int, int]:
    """The sample range ``[start, stop)`` that holds the sound of ``samples``: from
    ``margin_s`` before the first to ``margin_s`` after the last :data:`FRAME_S` frame whose
    RMS level is within ``floor_db`` of the loudest frame's (DC removed). Leading and
    trailing silence (a recording's idle start, the padding of a synthetic clip) lies
    outside; a pause between words stays in. The whole range for a constant signal.

    A forced aligner spends its time on every frame, silence included, and finds the same
    phone spans in the range as in the whole (offset by ``start``): aligning the range only
    is about 2x faster on clips padded like the synthetic corpus's.

    >>> rate = 16000
    >>> tone = 0.1 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)
    >>> speech_bounds(np.concatenate([np.zeros(rate), tone, np.zeros(2 * rate)]), rate)
    (12800, 35200)
    >>> speech_bounds(np.zeros(800), rate)
    (0, 800)
    """
    power, frame = _frame_power(samples, sample_rate, whole_if_short=False)
    if len(power) == 0:
        return 0, len(samples)
    n = len(samples)
    loudest = float(power.max())
    if loudest <= 0.0:
        return 0, n
    loud = np.flatnonzero(power >= loudest * 10.0 ** (-floor_db / 10.0))
    margin = round(margin_s * sample_rate)
    start = max(0, int(loud[0]) * frame - margin)
    stop = min(n, (int(loud[-1]) + 1) * frame + margin)
    return start, stop
