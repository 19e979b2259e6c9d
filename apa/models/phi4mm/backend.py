"""Phi-4-multimodal (transformers' native ``Phi4MultimodalForCausalLM`` and
``Phi4MultimodalProcessor``).

Chat format::

    <|user|><|audio|>{instruction}<|end|><|assistant|>{answer}<|end|>

``<|audio|>`` stands for one token per 80 ms; the 80-bin log-mel features are computed
for a whole batch at once on the model's device (:mod:`.features`). transformers' audio
encoder is not invariant to a batch's padding (its attention adds the padding mask as 0/1
instead of masking, and its convolutions see the padded frames); :func:`encode_audio` runs
its modules on the whole batch with the padding zeroed and masked, so a clip's scores do
not depend on the clips batched with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import apa.models.phi4mm.features as mel
from apa.models.inputs import Batch, chat_prompt

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Phi4mmBackend:
    family: str = "phi4mm"
    end_of_turn: str = "<|end|>"
    max_audio_seconds: float | None = None

    def prompt(self, processor: Any, instruction: str) -> str:
        return chat_prompt(processor, instruction)

    def audio_tokens(self, processor: Any, samples: int) -> int:
        return mel.audio_tokens(processor.audio_processor, samples)

    def audio_features(
        self, processor: Any, clips: Sequence[np.ndarray], device: Any
    ) -> dict[str, Any]:
        """Each clip's log-mel features (:func:`.features.log_mel`) padded to the longest,
        the embedding sizes, and ``audio_attention_mask`` marking each clip's real frames,
        under the processor's key names."""
        import torch

        features, frames = mel.log_mel(processor.audio_processor, clips, device)
        sizes = [self.audio_tokens(processor, len(clip)) for clip in clips]
        return {
            "audio_input_features": features,
            "audio_embed_sizes": torch.tensor(sizes, device=device),
            "audio_attention_mask": frames,
        }

    def first_pass_inputs(self, text_model: Any, batch: Batch) -> dict[str, Any]:
        """``inputs_embeds``: token embeddings with each clip's audio embeddings (the batch's
        clips encoded together, :func:`encode_audio`) at its ``<|audio|>`` positions."""
        import torch

        features = batch.audio["audio_input_features"]
        sizes = batch.audio["audio_embed_sizes"]
        frames = batch.audio["audio_attention_mask"]
        embedding = text_model.embed_tokens_extend.audio_embed
        embeds = text_model.embed_tokens(batch.input_ids)
        audio = encode_audio(embedding, features, frames)
        merged = torch.cat([audio[i, : int(n)] for i, n in enumerate(sizes)])
        where = (batch.input_ids == embedding.config.audio_config.audio_token_id).nonzero(
            as_tuple=True
        )
        if len(where[0]) != merged.shape[0]:
            raise ValueError(
                f"{len(where[0])} audio tokens in the prompts but {merged.shape[0]} audio "
                "embeddings"
            )
        embeds = embeds.index_put(where, merged.to(embeds.dtype))
        return {"inputs_embeds": embedding.drop(embeds)}


_MAX_ENCODER_POSITIONS = 500
"""The encoder's longest sequence (after the 8x subsampling, 40 s of audio): longer ones it
folds into 500-position chunks, which :func:`encode_audio` leaves to transformers, clip by
clip."""


def encode_audio(embedding: Any, features: Any, frames: Any) -> Any:
    """The speech embeddings of a batch of clips (``Phi4MultimodalAudioEmbedding``: the
    conformer encoder, then the speech projection): ``(batch, positions, hidden)``, of which
    each clip's first ``audio_embed_sizes`` rows are its audio tokens' embeddings.

    transformers' encoder is not invariant to padding: its subsampling convolutions read the
    padded frames (normalised, so no longer zeros) and its attention *adds* the padding and
    streaming masks (0 or 1) to the relative position bias instead of masking. So the clips
    of a batch are encoded here with the encoder's own modules, such that each clip sees
    what it sees alone: the normalised features and every subsampling stage's output are
    zeroed past the clip's length (alone, the convolution pads with zeros there), the
    streaming mask is added as transformers adds it, and the keys past each clip's length
    are masked out. Equal to encoding each clip alone to float rounding
    (``tests/models/test_backends.py``). A batch whose longest clip passes
    :data:`_MAX_ENCODER_POSITIONS` is encoded clip by clip by transformers' own code."""
    import torch

    encoder = embedding.encoder
    dtype = embedding.up_proj_for_speech.bias.dtype
    features = features.to(dtype=dtype)
    lengths = frames.sum(-1)
    subsampled = lengths
    for _ in range(int(torch.log2(torch.tensor(encoder.config.time_reduction)))):
        subsampled = (subsampled + 1) // 2  # each stride-2 stage: ceil(n / 2)
    if int(subsampled.max()) > _MAX_ENCODER_POSITIONS:
        return _encode_one_by_one(embedding, features, lengths)
    hidden = encoder.encoder_embedding(features).masked_fill(~frames.bool()[..., None], 0.0)
    hidden = hidden.unsqueeze(1)  # (batch, 1, time, mels)
    stage_lengths = lengths
    for module in encoder.embed.conv:
        hidden = module(hidden)
        if isinstance(module, torch.nn.Conv2d) and module.stride[0] == 2:
            stage_lengths = (stage_lengths + 1) // 2
        if not isinstance(module, torch.nn.Conv2d):  # an activation: the stage's end
            real = _arange(hidden.shape[2], hidden.device) < stage_lengths[:, None]
            hidden = hidden * real[:, None, :, None].to(hidden.dtype)
    batch, _, positions, _ = hidden.shape
    hidden = encoder.embed.out(hidden.transpose(1, 2).reshape(batch, positions, -1))
    config = encoder.config
    streaming = encoder._streaming_mask(positions, batch, config.chunk_size, config.left_chunk)
    keys = _arange(positions, hidden.device) < subsampled.to(hidden.device)[:, None]
    mask = streaming.to(hidden.device, hidden.dtype).unsqueeze(1)  # added, as transformers
    mask = mask + encoder.relative_attention_bias_layer(hidden)
    mask = mask.masked_fill(~keys[:, None, None, :], torch.finfo(mask.dtype).min)
    for layer in encoder.encoders:
        hidden = layer(hidden, mask)
    hidden = torch.nn.functional.gelu(embedding.up_proj_for_speech(hidden))
    return embedding.down_proj_for_speech(hidden)


def _encode_one_by_one(embedding: Any, features: Any, lengths: Any) -> Any:
    """:func:`encode_audio` by transformers' encoder, one clip at a time, padded."""
    import torch

    rows = []
    for i, n in enumerate(lengths.tolist()):
        hidden = embedding.encoder(features[i : i + 1, :n], None)
        hidden = torch.nn.functional.gelu(embedding.up_proj_for_speech(hidden))
        rows.append(embedding.down_proj_for_speech(hidden)[0])
    out = torch.zeros(
        (len(rows), max(r.shape[0] for r in rows), rows[0].shape[-1]),
        dtype=rows[0].dtype,
        device=rows[0].device,
    )
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
    return out


def _arange(n: int, device: Any) -> Any:
    import torch

    return torch.arange(n, device=device)
