"""apa.audio: decoding, downmixing, resampling and every typed refusal. All audio is
synthesized here; only the corpus test reads a real recording."""

from __future__ import annotations

import io
import math
import os
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from apa import audio as audio_mod
from apa import storage
from apa.audio import Audio, AudioConfig, decode_audio, load_audio, load_audio_or_error
from apa.errors import AudioError
from apa.schema import ErrorRecord


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No APA_AUDIO_* setting from the developer's shell leaks into a test."""
    import os

    for key in list(os.environ):
        if key.startswith("APA_AUDIO_"):
            monkeypatch.delenv(key)


def tone(
    seconds: float,
    rate: int,
    *,
    freq: float = 440.0,
    amps: tuple[float, ...] = (0.5,),
) -> np.ndarray:
    """A sine of ``freq`` Hz, one column per amplitude in ``amps`` (same phase)."""
    t = np.arange(round(seconds * rate)) / rate
    wave = np.sin(2 * np.pi * freq * t)
    return np.stack([a * wave for a in amps], axis=1).astype(np.float32)


def encode(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def wav(seconds: float = 1.0, rate: int = 16000, **kw) -> bytes:
    return encode(tone(seconds, rate, **kw), rate, "WAV", "PCM_16")


def float_wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    return encode(samples, rate, "WAV", "FLOAT")


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * rate / len(samples)


def _can_write_mp3() -> bool:
    try:
        encode(tone(0.1, 16000), 16000, "MP3")
    except Exception:
        return False
    return True


MP3 = pytest.param(
    "MP3",
    "MPEG_LAYER_III",
    44100,
    1,
    marks=pytest.mark.skipif(
        not _can_write_mp3(), reason="this libsndfile cannot encode MP3 (needs >= 1.1 with LAME)"
    ),
)


def reason_of(data: bytes, config: AudioConfig | None = None) -> AudioError:
    with pytest.raises(AudioError) as info:
        decode_audio(data, config)
    return info.value


# --- decoding ----------------------------------------------------------------------------


def test_int16_stereo_44k1_wav_becomes_mono_16k_with_the_tone_kept() -> None:
    # Left and right differ in level, so the mean (0.4) is told from either channel or a sum.
    data = wav(1.5, 44100, amps=(0.6, 0.2))
    out = decode_audio(data)
    assert isinstance(out, Audio)
    assert (out.sample_rate, out.source_sample_rate, out.source_channels) == (16000, 44100, 2)
    assert out.source_format == "WAV"
    assert out.samples.dtype == np.float32 and out.samples.ndim == 1
    assert out.samples.flags.c_contiguous
    assert abs(len(out.samples) - 24000) <= 1
    assert out.duration_s == pytest.approx(1.5, abs=1e-3)
    assert dominant_hz(out.samples, 16000) == pytest.approx(440.0, abs=1.0)
    middle = out.samples[1000:-1000]  # away from the resampler's edges
    assert np.max(np.abs(middle)) == pytest.approx(0.4, abs=0.01)


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "channels"),
    [
        ("FLAC", "PCM_16", 48000, 1),
        ("FLAC", "PCM_24", 16000, 2),
        ("OGG", "VORBIS", 22050, 2),
        ("OGG", "OPUS", 48000, 1),
        ("WAV", "FLOAT", 8000, 1),
        MP3,
    ],
)
def test_round_trip(fmt: str, subtype: str, rate: int, channels: int) -> None:
    data = encode(tone(2.0, rate, amps=(0.5,) * channels), rate, fmt, subtype)
    out = decode_audio(data)
    assert out.source_format == fmt
    assert (out.source_sample_rate, out.source_channels) == (rate, channels)
    assert out.sample_rate == 16000 and out.samples.dtype == np.float32
    # Lossy codecs add encoder delay or padding; a few tens of ms at most.
    assert out.duration_s == pytest.approx(2.0, abs=0.06)
    assert dominant_hz(out.samples, 16000) == pytest.approx(440.0, abs=1.0)


def test_matching_rate_is_not_resampled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio_mod.soxr, "resample", lambda *a, **k: pytest.fail("resampled"))
    samples = tone(1.0, 16000)
    out = decode_audio(float_wav(samples))
    np.testing.assert_array_equal(out.samples, samples[:, 0])


def test_other_target_rate_and_quality() -> None:
    config = AudioConfig(sample_rate=22050, resample_quality="VHQ")
    out = decode_audio(wav(1.0, 44100), config)
    assert out.sample_rate == 22050 and len(out.samples) == 22050
    assert dominant_hz(out.samples, 22050) == pytest.approx(440.0, abs=1.0)


def test_audio_is_frozen_and_reports_its_duration() -> None:
    out = decode_audio(wav(0.5))
    assert out.duration_s == pytest.approx(0.5)
    with pytest.raises(AttributeError):
        out.sample_rate = 8000  # type: ignore[misc]


# --- refusals ----------------------------------------------------------------------------


def _nan_at(i: int, value: float, seconds: float = 1.0, channels: int = 1) -> bytes:
    samples = tone(seconds, 16000, amps=(0.5,) * channels)
    samples[i, channels - 1] = value
    return float_wav(samples)


def _truncated_header() -> bytes:
    return wav(1.0)[:20]


def _overflowing() -> bytes:
    """Finite float samples so large that resampling them overflows float32."""
    samples = np.full((44100, 1), 3e38, np.float32)
    samples[::2] *= -1
    return encode(samples, 44100, "WAV", "FLOAT")


def _unknown_length_flac() -> bytes:
    data = bytearray(encode(tone(1.0, 16000), 16000, "FLAC"))
    streaminfo = 8  # after "fLaC" and the metadata block header
    data[streaminfo + 13] &= 0xF0  # total samples: low 4 bits of this byte and the next 4
    data[streaminfo + 14 : streaminfo + 18] = b"\0\0\0\0"
    return bytes(data)


REFUSALS = [
    # (id, data builder, config overrides, code, words the message must contain)
    ("zero_bytes", lambda: b"", {}, "empty", ["0 bytes"]),
    (
        "zero_frames",
        lambda: encode(np.zeros((0, 1), np.float32), 16000, "WAV"),
        {},
        "empty",
        ["no samples"],
    ),
    ("nan", lambda: _nan_at(100, math.nan), {}, "non_finite", ["1 non-finite", "16,000"]),
    ("inf", lambda: _nan_at(5, math.inf), {}, "non_finite", ["1 non-finite"]),
    (
        "-inf_in_right_channel",
        lambda: _nan_at(5, -math.inf, channels=2),
        {},
        "non_finite",
        ["1 non-finite", "32,000"],
    ),
    (
        "all_zeros",
        lambda: float_wav(np.zeros((16000, 1), np.float32)),
        {},
        "silent",
        ["same value", "-60.0 dBFS"],
    ),
    (
        "constant_dc",
        lambda: float_wav(np.full((16000, 1), 0.5, np.float32)),
        {},
        "silent",
        ["same value"],
    ),
    (
        "quiet_tone_-83dBFS",
        lambda: float_wav(tone(1.0, 16000, freq=500, amps=(1e-4,))),
        {},
        "silent",
        ["loudest 100 ms reach only -83.0 dBFS", "-60.0 dBFS threshold"],
    ),
    ("too_short", lambda: wav(0.1), {}, "too_short", ["0.10 s", "0.20 s minimum"]),
    ("too_short_tiny", lambda: wav(0.004), {}, "too_short", ["0.004 s", "0.20 s minimum"]),
    (
        "extreme_float_3e38",
        lambda: float_wav(tone(1.0, 16000, amps=(3e38,))),
        {},
        "out_of_range",
        ["3e+38 times full scale", "64 limit"],
    ),
    ("extreme_float_44k1", _overflowing, {}, "out_of_range", ["3e+38"]),
    (
        "above_a_lowered_amplitude_limit",
        lambda: float_wav(tone(1.0, 16000, amps=(2.0,))),
        {"max_abs_amplitude": 1.5},
        "out_of_range",
        ["peaks at 2 times full scale", "1.5 limit"],
    ),
    (
        "overflows_float32",
        _overflowing,
        {"max_abs_amplitude": 1e39},
        "non_finite",
        ["overflows float32", "3e+38"],
    ),
    ("too_long", lambda: wav(31.0, 8000), {}, "too_long", ["31.00 s", "30.00 s limit"]),
    ("garbage", lambda: bytes(range(256)) * 40, {}, "undecodable", ["not recognised"]),
    ("truncated_header", _truncated_header, {}, "undecodable", ["fmt"]),
    (
        "unsupported_format",
        lambda: encode(tone(1.0, 16000), 16000, "AU"),
        {},
        "undecodable",
        ["AU audio is not supported"],
    ),
    ("unknown_length_flac", _unknown_length_flac, {}, "undecodable", ["does not give its length"]),
    (
        "over_max_bytes",
        lambda: wav(1.0),
        {"max_bytes": 1000},
        "too_large",
        ["32,044 bytes", "1,000-byte"],
    ),
    ("not_bytes", lambda: "RIFF....WAVE", {}, "undecodable", ["got str"]),
]


@pytest.mark.parametrize(
    ("build", "overrides", "code", "words"),
    [pytest.param(*row[1:], id=row[0]) for row in REFUSALS],
)
def test_refusals(build, overrides: dict, code: str, words: list[str]) -> None:
    error = reason_of(build(), AudioConfig(**overrides))
    assert error.reason == f"audio.{code}"
    assert error.stage == "audio"
    for word in words:
        assert word in error.message, error.message


def _sine_rms(level_dbfs: float, seconds: float) -> np.ndarray:
    amplitude = 10 ** (level_dbfs / 20) * math.sqrt(2)  # a sine's RMS is amplitude / sqrt(2)
    return tone(seconds, 16000, amps=(amplitude,))


def _burst(level_dbfs: float, burst_s: float, total_s: float) -> np.ndarray:
    samples = np.zeros((round(total_s * 16000), 1), np.float32)
    burst = _sine_rms(level_dbfs, burst_s)
    start = len(samples) // 2
    samples[start : start + len(burst)] = burst
    return samples


@pytest.mark.parametrize(
    ("samples", "silent"),
    [
        pytest.param(_sine_rms(-65.0, 1.0), True, id="-65dBFS"),
        pytest.param(_sine_rms(-55.0, 1.0), False, id="-55dBFS"),
        # One full-scale click lifts neither a whole-file RMS (-43 dBFS here) nor counts.
        pytest.param(
            np.where(np.arange(16000)[:, None] == 8000, np.float32(0.9), _sine_rms(-65.0, 1.0)),
            True,
            id="-65dBFS_with_a_click",
        ),
        pytest.param(_burst(-20.0, 0.05, 2.0), True, id="50ms_burst"),
        # A quiet short word in a long take: whole-file RMS -68 dBFS, yet it is speech.
        pytest.param(_burst(-45.0, 0.15, 25.0), False, id="150ms_word_in_25s"),
    ],
)
def test_silence_is_judged_on_the_loudest_100ms(samples: np.ndarray, silent: bool) -> None:
    data = float_wav(samples)
    if silent:
        assert reason_of(data).reason == "audio.silent"
    else:
        assert decode_audio(data).duration_s == pytest.approx(len(samples) / 16000)


@pytest.mark.parametrize("peak", [1.0, 1.5, 64.0])
def test_float_wav_a_little_above_full_scale_is_accepted(peak: float) -> None:
    """A clipped or late-normalised float mix may exceed 1.0; only absurd levels are refused."""
    samples = tone(1.0, 16000, amps=(0.5,))
    samples[100, 0] = peak
    out = decode_audio(float_wav(samples))
    assert float(np.max(np.abs(out.samples))) == pytest.approx(peak)


def test_durations_at_the_limits_are_accepted() -> None:
    config = AudioConfig(min_duration_s=0.5, max_duration_s=2.0)
    assert decode_audio(wav(0.5), config).duration_s == pytest.approx(0.5)
    assert decode_audio(wav(2.0), config).duration_s == pytest.approx(2.0)
    assert reason_of(wav(2.001), config).reason == "audio.too_long"


def _spy_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        calls.append(frames)
        return real(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    monkeypatch.setattr(sf, "read", lambda *a, **k: pytest.fail("sf.read must not be called"))
    return calls


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_over_long_file_is_refused_from_its_header(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encode(tone(40.0, 8000), 8000, fmt)
    calls = _spy_reads(monkeypatch)
    error = reason_of(data)
    assert error.reason == "audio.too_long"
    assert "40.00 s according to its" in error.message
    assert calls == [], "the samples were decoded"


@pytest.mark.skipif(not _can_write_mp3(), reason="this libsndfile cannot encode MP3")
def test_over_long_mp3_is_decoded_only_up_to_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(tone(40.0, 16000), 16000, "MP3")
    calls = _spy_reads(monkeypatch)
    error = reason_of(data)
    assert error.reason == "audio.too_long"
    assert "decoding stopped at 30.00 s" in error.message
    assert calls == [30 * 16000 + 1]


def test_corrupted_inputs_raise_only_audio_errors() -> None:
    """Truncations and flipped bytes of every format: an Audio or an AudioError, nothing else."""
    rng = np.random.default_rng(0)
    formats = [("WAV", "PCM_16"), ("FLAC", None), ("OGG", None)]
    if _can_write_mp3():
        formats.append(("MP3", None))
    outcomes: set[str] = set()
    for fmt, subtype in formats:
        good = encode(tone(0.5, 16000), 16000, fmt, subtype)
        for _ in range(25):
            data = bytearray(good)
            if rng.random() < 0.5:
                data = data[: int(rng.integers(0, len(data)))]
            else:
                for i in rng.integers(0, len(data), size=8):
                    data[i] = int(rng.integers(0, 256))
            try:
                decode_audio(bytes(data))
                outcomes.add("ok")
            except AudioError as error:
                outcomes.add(error.reason)
    assert "audio.undecodable" in outcomes  # the corruption did hit something


def test_decoder_crash_becomes_undecodable(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(sf.SoundFile, "read", boom)
    error = reason_of(wav(1.0))
    assert error.reason == "audio.undecodable" and "memory" in error.message


def test_unexpected_internal_failure_becomes_undecodable(monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(audio_mod, "loudest_level_dbfs", bug)
    error = reason_of(wav(1.0))
    assert error.reason == "audio.undecodable" and "a bug" in error.message


def test_truncated_data_chunk_decodes_what_is_there() -> None:
    data = wav(2.0)
    out = decode_audio(data[: len(data) // 2])
    assert out.duration_s == pytest.approx(1.0, abs=0.01)


# --- configuration -----------------------------------------------------------------------


def test_env_var_changes_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    data = wav(6.0, 8000)
    assert decode_audio(data).duration_s == pytest.approx(6.0)
    monkeypatch.setenv("APA_AUDIO_MAX_DURATION_S", "5")
    assert AudioConfig().max_duration_s == 5.0
    error = reason_of(data)
    assert error.reason == "audio.too_long" and "5.00 s limit" in error.message


def test_env_var_quality_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APA_AUDIO_RESAMPLE_QUALITY", "vhq")
    assert AudioConfig().resample_quality == "VHQ"


def test_defaults() -> None:
    config = AudioConfig()
    assert (config.sample_rate, config.min_duration_s, config.max_duration_s) == (16000, 0.2, 30)
    assert config.silence_dbfs == -60.0 and config.max_bytes == 50 * 1024 * 1024
    assert config.resample_quality == "HQ" and config.max_abs_amplitude == 64.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_duration_s": 10.0, "max_duration_s": 5.0}, "must be less than max_duration_s"),
        ({"min_duration_s": 5.0, "max_duration_s": 5.0}, "must be less than max_duration_s"),
        ({"min_duration_s": -1.0}, "min_duration_s must be a positive"),
        ({"max_duration_s": math.nan}, "max_duration_s must be a positive"),
        ({"max_duration_s": math.inf}, "max_duration_s must be a positive"),
        ({"sample_rate": 0}, "sample_rate must be positive"),
        ({"max_bytes": 0}, "max_bytes must be positive"),
        ({"max_abs_amplitude": 0.5}, "max_abs_amplitude must be a finite number at or above"),
        ({"max_abs_amplitude": math.inf}, "max_abs_amplitude must be a finite number"),
        ({"max_abs_amplitude": math.nan}, "max_abs_amplitude must be a finite number"),
        ({"silence_dbfs": 3.0}, "silence_dbfs must be a finite level"),
        ({"resample_quality": "best"}, "resample_quality"),
        ({"max_duraton_s": 5.0}, "max_duraton_s"),
    ],
)
def test_invalid_config_is_rejected(overrides: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AudioConfig(**overrides)


def test_invalid_env_config_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APA_AUDIO_MIN_DURATION_S", "40")
    with pytest.raises(ValidationError, match="must be less than max_duration_s"):
        AudioConfig()


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        AudioConfig().max_duration_s = 1.0  # type: ignore[misc]


# --- loading -----------------------------------------------------------------------------


def test_load_from_path_and_pathlike(tmp_path: Path) -> None:
    target = tmp_path / "a.flac"
    target.write_bytes(encode(tone(1.0, 16000), 16000, "FLAC"))
    for source in (target, str(target)):
        out = load_audio(source)
        assert out.source_format == "FLAC" and out.duration_s == pytest.approx(1.0)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioError) as info:
        load_audio(missing)
    assert info.value.reason == "audio.not_found"
    assert str(missing) in info.value.message


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(AudioError) as info:
        load_audio(tmp_path)
    assert info.value.reason == "audio.unreadable"
    assert "a directory, not a regular file" in info.value.message


def _within(seconds: float, fn, *, unblock=None):
    """``fn()``'s result or exception, failing the test (not hanging it) when ``fn`` has not
    returned within ``seconds``; ``unblock`` then frees the stuck thread."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if unblock is not None:
            unblock()
        pytest.fail(f"still blocked after {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: a run would hang forever."""
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)

    def unblock() -> None:  # a writer that comes and goes lets the blocked open return
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    record = _within(5, lambda: load_audio_or_error("u1", fifo), unblock=unblock)
    assert isinstance(record, ErrorRecord) and record.reason == "audio.unreadable"
    assert "FIFO" in record.message and str(fifo) in record.message


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_endless_device_is_refused_without_reading() -> None:
    """In a child process with 3 GiB of address space: a regression that reads /dev/zero
    fails there, instead of taking the machine's memory."""
    import resource
    import subprocess
    import sys

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    code = (
        "from apa.audio import load_audio_or_error\n"
        "r = load_audio_or_error('u1', '/dev/zero')\n"
        "print(r.reason, r.message, sep='|')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_memory,
    )
    assert done.returncode == 0, done.stderr
    reason, message = done.stdout.strip().split("|")
    assert reason == "audio.unreadable" and "a character device" in message


def test_file_over_max_bytes_is_refused_from_its_size_without_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    with big.open("wb") as f:
        f.write(wav(1.0))
        f.truncate(64 * 1024 * 1024)  # sparse: costs no disk, 64 MiB to whoever reads it
    config = AudioConfig(max_bytes=1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(AudioError) as info:
            load_audio(big, config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason == "audio.too_large"
    assert "67,108,864 bytes" in info.value.message and "1,048,576-byte" in info.value.message
    assert peak < 256 * 1024, f"{peak:,} bytes allocated refusing it"


def test_file_at_max_bytes_is_read_and_one_byte_over_is_not(tmp_path: Path) -> None:
    data = wav(1.0)
    path = tmp_path / "a.wav"
    path.write_bytes(data)
    assert audio_mod.read_audio_bytes(path, AudioConfig(max_bytes=len(data))) == data
    with pytest.raises(AudioError) as info:
        audio_mod.read_audio_bytes(path, AudioConfig(max_bytes=len(data) - 1))
    assert info.value.reason == "audio.too_large" and str(path) in info.value.message


def test_read_without_a_config_takes_the_limit_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch job's fetch stage calls ``read_audio_bytes(uri)``: still limited."""
    path = tmp_path / "a.wav"
    path.write_bytes(wav(1.0))
    monkeypatch.setenv("APA_AUDIO_MAX_BYTES", "1000")
    with pytest.raises(AudioError) as info:
        audio_mod.read_audio_bytes(str(path))
    assert info.value.reason == "audio.too_large" and "1,000-byte" in info.value.message


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="no /proc")
def test_file_larger_than_its_reported_size_is_capped() -> None:
    """``/proc`` files say they are 0 bytes (as a file growing after its size was read
    would): the read itself stops one byte past the limit."""
    with pytest.raises(AudioError) as info:
        load_audio("/proc/self/maps", AudioConfig(max_bytes=100))
    assert info.value.reason == "audio.too_large"
    assert "more than 100 bytes" in info.value.message


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (FileNotFoundError("gone"), "not_found"),
        (PermissionError("denied"), "unreadable"),
        (OSError("AWS Error NETWORK_CONNECTION"), "unreadable"),
        (ValueError("unsupported URI scheme"), "unreadable"),
        (MemoryError(), "unreadable"),
        (RuntimeError("anything"), "unreadable"),
    ],
)
def test_read_failures_become_audio_errors(
    raised: Exception, code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(uri: str, *, max_bytes: int | None = None) -> bytes:
        raise raised

    monkeypatch.setattr(storage, "read_bytes", fail)
    with pytest.raises(AudioError) as info:
        load_audio("/data/x.wav")
    assert info.value.reason == f"audio.{code}"
    assert "/data/x.wav" in info.value.message


def test_unsupported_scheme_is_unreadable() -> None:
    with pytest.raises(AudioError) as info:
        load_audio("gs://bucket/x.wav")
    assert info.value.reason == "audio.unreadable"
    assert "unsupported URI scheme" in info.value.message


def test_not_a_path_is_unreadable() -> None:
    with pytest.raises(AudioError) as info:
        load_audio(42)  # type: ignore[arg-type]
    assert info.value.reason == "audio.unreadable"


def test_load_audio_or_error(tmp_path: Path) -> None:
    good = tmp_path / "good.wav"
    good.write_bytes(wav(1.0))
    assert isinstance(load_audio_or_error("utt1", good), Audio)

    short = tmp_path / "short.wav"
    short.write_bytes(wav(0.05))
    for source, reason in (
        (tmp_path / "missing.wav", "audio.not_found"),
        (short, "audio.too_short"),
    ):
        record = load_audio_or_error("utt1", source)
        assert isinstance(record, ErrorRecord)
        assert (record.utterance_id, record.stage, record.reason) == ("utt1", "audio", reason)
        assert record.message


def test_corpus_sample_decodes(sample_dir: Path) -> None:
    path = sample_dir / "WAVE" / "SPEAKER0001" / "000010011.flac"
    out = load_audio(path)
    info = sf.info(str(path))
    assert (out.sample_rate, out.source_sample_rate) == (16000, 16000)
    assert (out.source_channels, out.source_format) == (1, "FLAC")
    assert 1.0 < out.duration_s < 10.0
    assert len(out.samples) == info.frames
    assert audio_mod.loudest_level_dbfs(out.samples, 16000) > -40.0


def test_s3_load(s3) -> None:
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="wav/a.wav", Body=wav(1.0, 44100, amps=(0.3, 0.3)))
    out = load_audio(f"s3://{bucket}/wav/a.wav")
    assert (out.source_sample_rate, out.source_channels) == (44100, 2)
    assert out.duration_s == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(AudioError) as info:
        load_audio(f"s3://{bucket}/wav/missing.wav")
    assert info.value.reason == "audio.not_found"


def test_s3_object_over_max_bytes_is_refused_from_its_size(
    s3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size comes from the object's metadata (a HEAD): the object is never fetched."""
    client, bucket = s3
    data = wav(1.0)
    client.put_object(Bucket=bucket, Key="wav/big.wav", Body=data)
    opened: list[str] = []
    real = storage.filesystem

    def spy(uri: str):
        fs, path = real(uri)
        opening = fs.open_input_stream

        class Spy:
            def __getattr__(self, name):
                return getattr(fs, name)

            def open_input_stream(self, *args, **kwargs):
                opened.append(args[0])
                return opening(*args, **kwargs)

        return Spy(), path

    monkeypatch.setattr(storage, "filesystem", spy)
    with pytest.raises(AudioError) as info:
        load_audio(f"s3://{bucket}/wav/big.wav", AudioConfig(max_bytes=1000))
    assert info.value.reason == "audio.too_large"
    assert f"{len(data):,} bytes" in info.value.message and opened == []
    assert load_audio(f"s3://{bucket}/wav/big.wav").duration_s == pytest.approx(1.0)
    assert opened == [f"{bucket}/wav/big.wav"]
    with pytest.raises(AudioError) as info:
        load_audio(f"s3://{bucket}/wav")  # a prefix, not an object
    assert info.value.reason == "audio.unreadable" and "prefix" in info.value.message


def test_import_pulls_in_neither_ray_nor_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, apa.audio\n"
        "print(','.join(m for m in ('ray', 'torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
