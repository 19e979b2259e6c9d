"""Phi-4-multimodal (transformers' native ``Phi4MultimodalForCausalLM`` and
``Phi4MultimodalProcessor``).

Chat format::

    <|user|><|audio|>{instruction}<|end|><|assistant|>{answer}<|end|>

The processor expands ``<|audio|>`` to one token per 80 ms and extracts 80-bin log-mel
features, padded across the batch. The native audio encoder is not invariant to that
padding (its attention adds the padding mask as 0/1 instead of masking, and its
convolutions see the padded frames), so each clip is encoded here on its own, with its
real frames only: a clip's scores do not depend on the clips batched with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apa.models.inputs import Batch, chat_prompt, stack_padded


@dataclass(frozen=True)
class Phi4mmBackend:
    family: str = "phi4mm"
    end_of_turn: str = "<|end|>"
    max_audio_seconds: float | None = None

    def prompt(self, processor: Any, instruction: str) -> str:
        return chat_prompt(processor, instruction)

    def collate_audio(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Each clip's log-mel features (extracted on its own: the batched extractor of
        transformers slices past the last frame when two clips are nearly equally long)
        padded to the longest, the embedding sizes, and ``audio_attention_mask`` marking
        each clip's real frames."""
        import torch

        features = [item["audio_input_features"] for item in items]
        frames = [torch.ones(1, f.shape[1], dtype=torch.bool) for f in features]
        return {
            "audio_input_features": stack_padded(features),
            "audio_embed_sizes": torch.cat([item["audio_embed_sizes"] for item in items]),
            "audio_attention_mask": stack_padded(frames),
        }

    def first_pass_inputs(self, text_model: Any, batch: Batch) -> dict[str, Any]:
        """``inputs_embeds``: token embeddings with each clip's audio embeddings (encoded
        one clip at a time) at its ``<|audio|>`` positions."""
        import torch

        features = batch.audio["audio_input_features"]
        sizes = batch.audio["audio_embed_sizes"]
        frames = batch.audio.get("audio_attention_mask")
        embeds = text_model.embed_tokens(batch.input_ids)
        rows = []
        for i in range(batch.input_ids.shape[0]):
            n = int(frames[i].sum()) if frames is not None else features.shape[1]
            rows.append(
                text_model.embed_tokens_extend(
                    batch.input_ids[i : i + 1],
                    embeds[i : i + 1],
                    audio_input_features=features[i : i + 1, :n],
                    audio_embed_sizes=sizes[i : i + 1],
                )
            )
        return {"inputs_embeds": torch.cat(rows)}
