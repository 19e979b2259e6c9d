"""Phi-4-multimodal's log-mel features for a batch of clips, on any device.

Each feature frame is one 25 ms window (pre-emphasis inside the window, a Hamming window,
an FFT, the power through the mel filters, the natural log floored at 1), so a frame
depends on its own samples only. A batch is zero-padded to its longest clip, framed with
one ``unfold`` and transformed at once on the model's device; each clip keeps
``(samples - win) // hop + 1`` frames (the rest are masked), exactly the frames the
extractor gives it alone. That equals transformers' ``Phi4MultimodalFeatureExtractor`` on
each clip to float rounding (it computes in float64, here float32: the test allows 5e-3
on log values of about 7 to 26, 2e-4 relative; ``tests/models/test_audio_features.py``),
without its batched path's slicing bug (two clips of nearly equal length beside others
failed with "size of tensor a (26) must match ... (27)").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch


def real_frames(extractor: Any, samples: int) -> int:
    """The feature frames of a clip of ``samples`` (only whole windows; 0 for a clip
    shorter than one window)."""
    if samples < extractor.win_length:
        return 0
    return (samples - extractor.win_length) // extractor.hop_length + 1


def audio_tokens(extractor: Any, samples: int) -> int:
    """The ``<|audio|>`` tokens the processor expands a clip of ``samples`` to: its frames
    divided (rounding up) by the encoder's compression rate, then by the downsampling
    rate."""
    frames = real_frames(extractor, samples) * extractor.audio_feat_stride
    compressed = -(-frames // extractor.audio_compression_rate)
    return -(-compressed // extractor.audio_downsample_rate)


def log_mel(
    extractor: Any, clips: Sequence[np.ndarray], device: Any = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The features of ``clips`` (16 kHz float32) as ``(batch, frames, mels)`` float32 on
    ``device``, padded with zeros past each clip's frames, and the mask of its real frames
    ``(batch, frames)``. Raises ``ValueError`` for a clip shorter than one window."""
    import torch

    win, hop = extractor.win_length, extractor.hop_length
    frames = [real_frames(extractor, len(clip)) for clip in clips]
    if min(frames) < 1:
        raise ValueError(f"a clip shorter than one {win}-sample window")
    longest = max(len(clip) for clip in clips)
    waves = torch.zeros((len(clips), longest), dtype=torch.float32)
    for i, clip in enumerate(clips):
        waves[i, : len(clip)] = torch.as_tensor(clip, dtype=torch.float32)
    windows = waves.to(device).unfold(-1, win, hop)  # (batch, frames, win)
    previous = torch.cat([windows[..., :1], windows[..., :-1]], dim=-1)
    windows = (windows - extractor.preemphasis * previous) * 32768
    hamming = torch.hamming_window(win, periodic=False, device=device, dtype=torch.float32)
    spectrum = torch.fft.rfft(windows * hamming, n=extractor.n_fft, dim=-1)
    filters = torch.as_tensor(extractor.mel_filters, dtype=torch.float32, device=device)
    features = (spectrum.abs().square() @ filters).clamp(min=1.0).log()
    counts = torch.tensor(frames, device=device)
    mask = torch.arange(features.shape[1], device=device)[None, :] < counts[:, None]
    return features.masked_fill(~mask[..., None], 0.0), mask
