"""Qwen2-Audio (``Qwen2AudioForConditionalGeneration`` with ``Qwen2AudioProcessor``).

Chat format (Qwen2-Audio-7B-Instruct's template)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\\n{instruction}<|im_end|>\\n
    <|im_start|>assistant\\n{answer}<|im_end|>

``<|AUDIO|>`` stands for one token per 40 ms of real audio; the Whisper features reach at
most 30 s, so a longer clip would be cut and is refused. The processor pads every clip's
features to 3000 frames (30 s), and transformers' encoder accepts exactly 3000 frames (it
adds its whole positional table), which makes a 2 s clip cost as much as a 30 s one. Here
the features are computed for the batch's longest clip and a few frames past it only
(:mod:`.features`, on the model's device), and :func:`encode_audio` runs the same encoder
on those frames: the positional table is sliced to match, and each clip's padding is
masked from attention as transformers masks it. The audio tokens' embeddings agree with the
padded path to float rounding (``tests/models/test_qwen2_audio_trim.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import apa.models.qwen2_audio.features as mel
from apa.models.inputs import Batch, chat_prompt

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Qwen2AudioBackend:
    family: str = "qwen2-audio"
    end_of_turn: str = "<|im_end|>"
    max_audio_seconds: float | None = 30.0

    def prompt(self, processor: Any, instruction: str) -> str:
        return chat_prompt(processor, instruction)

    def audio_tokens(self, processor: Any, samples: int) -> int:
        return mel.audio_tokens(processor.feature_extractor, samples)

    def audio_features(
        self, processor: Any, clips: Sequence[np.ndarray], device: Any
    ) -> dict[str, Any]:
        """Whisper features of the real frames and a margin (:func:`.features.log_mel`),
        with their frame mask, under the processor's key names."""
        features, frames = mel.log_mel(processor.feature_extractor, clips, device)
        return {"input_features": features, "feature_attention_mask": frames}

    def first_pass_inputs(self, text_model: Any, batch: Batch) -> dict[str, Any]:
        """``inputs_embeds``: token embeddings with the encoded audio (:func:`encode_audio`,
        projected) at the ``<|AUDIO|>`` positions."""
        features = batch.audio["input_features"]
        frames = batch.audio["feature_attention_mask"]
        audio = text_model.multi_modal_projector(
            encode_audio(text_model.audio_tower, features, frames)
        )
        embeds = text_model.get_input_embeddings()(batch.input_ids)
        _, tokens = text_model.audio_tower._get_feat_extract_output_lengths(frames.sum(-1))
        keep = _arange(audio.shape[1], audio.device)[None, :] < tokens.to(audio.device)[:, None]
        where = (batch.input_ids == text_model.config.audio_token_id).unsqueeze(-1)
        if int(where.sum()) != int(keep.sum()):
            raise ValueError(
                f"{int(where.sum())} audio tokens in the prompts but {int(keep.sum())} audio "
                "embeddings"
            )
        return {"inputs_embeds": embeds.masked_scatter(where, audio[keep].to(embeds.dtype))}


def _arange(n: int, device: Any) -> Any:
    import torch

    return torch.arange(n, device=device)


def encode_audio(encoder: Any, features: Any, frames: Any) -> Any:
    """``Qwen2AudioEncoder``'s output for ``features`` ``(batch, mels, 3000)`` whose real
    frames ``frames`` ``(batch, 3000)`` marks, computed on the first
    ``min(3000, longest + margin)`` frames only (rounded up to a multiple of 4):
    ``(batch, tokens, d_model)``, of which each clip's first
    ``_get_feat_extract_output_lengths(real frames)[1]`` rows are its audio tokens."""
    import torch
    from torch import nn
    from transformers.masking_utils import create_bidirectional_mask

    total = features.shape[-1]
    longest = int(frames.sum(-1).max())
    width = min(total, -(-(longest + mel.MARGIN_FRAMES) // 4) * 4)
    features = features[..., :width].to(dtype=encoder.conv1.weight.dtype)
    lengths, _ = encoder._get_feat_extract_output_lengths(frames.sum(-1))
    hidden = nn.functional.gelu(encoder.conv1(features))
    hidden = nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
    positions = hidden.shape[1]
    hidden = hidden + encoder.embed_positions.weight[:positions]
    hidden = nn.functional.dropout(hidden, p=encoder.dropout, training=encoder.training)
    real = (
        torch.arange(positions, device=hidden.device)[None, :] < lengths.to(hidden.device)[:, None]
    )
    mask = create_bidirectional_mask(
        config=encoder.config, inputs_embeds=hidden, attention_mask=real.long()
    )
    for layer in encoder.layers:
        hidden = layer(hidden, mask)
    hidden = encoder.avg_pooler(hidden.permute(0, 2, 1)).permute(0, 2, 1)
    return encoder.layer_norm(hidden)
