"""The trimmed Qwen2-Audio encoder forward, on features computed for the real frames only,
gives what transformers' padded path gives on the processor's 30 s features."""

from __future__ import annotations

import numpy as np
import torch

from apa.models.families import TINY_QWEN2_AUDIO
from apa.models.inputs import build_batch, text_model_and_head
from apa.models.qwen2_audio.backend import Qwen2AudioBackend, encode_audio


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16_000, 27_300, 9_000)]


def _processor_features(processor, clips: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """The processor's own features, each clip padded to 30 s."""
    items = [
        processor(text=[processor.audio_token], audio=[clip], sampling_rate=16_000,
                  return_tensors="pt")
        for clip in clips
    ]  # fmt: skip
    return {
        k: torch.cat([i[k] for i in items]) for k in ("input_features", "feature_attention_mask")
    }


def test_trimmed_first_pass_matches_the_padded_30_s_path(loaded_models) -> None:
    loaded = loaded_models[TINY_QWEN2_AUDIO]
    backend = Qwen2AudioBackend()
    prompts = [backend.prompt(loaded.processor, f"say {i}") for i in range(3)]
    batch = build_batch(loaded.processor, prompts, _clips(), ["", "", ""], backend=backend)
    padded = _processor_features(loaded.processor, _clips())
    text_model, _ = text_model_and_head(loaded.model)
    with torch.inference_mode():
        ours = text_model(
            **backend.first_pass_inputs(text_model, batch),
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).last_hidden_state
        theirs = text_model(
            input_ids=batch.input_ids,
            **padded,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).last_hidden_state
    real = batch.attention_mask.bool()
    assert padded["input_features"].shape[-1] == 3000
    assert batch.audio["input_features"].shape[-1] == 176  # 27,300 samples: 171 frames + 4 -> 176
    assert (ours[real] - theirs[real]).abs().max() < 1e-5


def test_encoder_reads_only_the_frames_the_longest_clip_needs(loaded_models) -> None:
    loaded = loaded_models[TINY_QWEN2_AUDIO]
    encoder = text_model_and_head(loaded.model)[0].audio_tower
    frames = torch.zeros((2, 3000), dtype=torch.long)
    frames[0, :170] = 1
    frames[1, :100] = 1
    features = torch.randn((2, 128, 3000))
    out = encode_audio(encoder, features, frames)
    # 176 frames (170 + 4 of margin, a multiple of 4) -> 88 after the strided conv -> 44.
    assert out.shape == (2, 44, encoder.config.d_model)
    tokens = encoder._get_feat_extract_output_lengths(frames.sum(-1))[1]
    assert tokens.tolist() == [42, 25]
