"""Qwen2-Audio (``Qwen2AudioForConditionalGeneration`` with ``Qwen2AudioProcessor``).

Chat format (Qwen2-Audio-7B-Instruct's template)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\\n{instruction}<|im_end|>\\n
    <|im_start|>assistant\\n{answer}<|im_end|>

The processor pads every clip's Whisper features to 3000 frames (30 s) and expands
``<|AUDIO|>`` to one token per 40 ms of real audio; the encoder accepts exactly 3000 frames
(``feature_attention_mask`` masks the padding), so a longer clip would be cut and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apa.lmm.backends import Batch, chat_prompt


@dataclass(frozen=True)
class Qwen2AudioBackend:
    family: str = "qwen2-audio"
    end_of_turn: str = "<|im_end|>"
    max_audio_seconds: float | None = 30.0

    def prompt(self, processor: Any, instruction: str) -> str:
        return chat_prompt(processor, instruction)

    def first_pass_inputs(self, text_model: Any, batch: Batch) -> dict[str, Any]:
        """Token ids with ``input_features`` and ``feature_attention_mask``: the model merges
        the encoded audio at the ``<|AUDIO|>`` positions itself."""
        return {"input_ids": batch.input_ids, **batch.audio}
