"""Whisper log-mel features for Qwen2-Audio, on the real frames only and on any device.

transformers' ``WhisperFeatureExtractor`` pads every clip to 30 s on the host before its
STFT, so a 3 s clip costs as much as a 30 s one (2.5 ms per clip on the H200 machine's
CPU, a third of the host work of a batch). Here a batch of clips is zero-padded only to the
longest clip plus :data:`MARGIN_FRAMES` (which the encoder's convolutions read past a
clip's end, :func:`apa.models.qwen2_audio.backend.encode_audio`) and transformed in one
``torch.stft`` on the device the model is on.

The result equals the extractor's 30 s features on their first columns, for the real frames
and the margin alike, up to float rounding (``tests/models/test_audio_features.py`` allows
1e-5 on the normalised scale, whose values span about 2): every frame sees the same
samples (the clip, then zeros), and each clip's normalisation, ``max(log_spec, clip_max -
8)``, takes the same maximum, because the frames past a clip's zero-padded tail are silence
(log10 of the 1e-10 floor) in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

MARGIN_FRAMES = 4
"""Frames kept past the longest clip: the last audio token reads frames up to two past a
clip's end through the two convolutions (kernel 3, strides 1 and 2)."""


def real_frames(extractor: Any, samples: int) -> int:
    """The frames the extractor marks as real for a clip of ``samples`` (its attention
    mask taken every ``hop_length`` samples: ``ceil(samples / hop)``)."""
    return -(-samples // extractor.hop_length)


def audio_tokens(extractor: Any, samples: int) -> int:
    """The ``<|AUDIO|>`` tokens the processor expands a clip of ``samples`` to (two
    stride-2 reductions of its real frames: the encoder's second convolution and its
    pooling)."""
    after_conv = (real_frames(extractor, samples) - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def log_mel(
    extractor: Any, clips: Sequence[np.ndarray], device: Any = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The features of ``clips`` (16 kHz float32) as ``(batch, mels, width)`` float32 on
    ``device`` and the mask of each clip's real frames ``(batch, width)``; ``width`` is the
    longest clip's frames plus :data:`MARGIN_FRAMES`, rounded up to a multiple of 4 and at
    most the extractor's 30 s. Raises ``ValueError`` for an extractor that dithers (its
    features would be random) or a clip longer than 30 s."""
    import torch

    if getattr(extractor, "dither", 0.0):
        raise ValueError("a dithering feature extractor is not supported (features would vary)")
    hop, n_fft = extractor.hop_length, extractor.n_fft
    limit = extractor.nb_max_frames
    frames = [real_frames(extractor, len(clip)) for clip in clips]
    if max(frames) > limit:
        raise ValueError(f"a clip of {max(frames)} frames: at most {limit} (30 s)")
    width = min(limit, -(-(max(frames) + MARGIN_FRAMES) // 4) * 4)
    waves = torch.zeros((len(clips), width * hop), dtype=torch.float32)
    for i, clip in enumerate(clips):
        waves[i, : len(clip)] = torch.as_tensor(clip, dtype=torch.float32)
    waves = waves.to(device)
    window = torch.hann_window(n_fft, device=device)
    stft = torch.stft(waves, n_fft, hop, window=window, return_complex=True)
    power = stft[..., :-1].abs().square()  # the extractor drops the STFT's last frame
    filters = torch.as_tensor(extractor.mel_filters, dtype=torch.float32, device=device)
    logs = (filters.T @ power).clamp(min=1e-10).log10()
    floor = logs.amax(dim=(1, 2), keepdim=True) - 8.0
    features = (torch.maximum(logs, floor) + 4.0) / 4.0
    counts = torch.tensor(frames, device=device)
    mask = torch.arange(width, device=device)[None, :] < counts[:, None]
    return features, mask.long()
