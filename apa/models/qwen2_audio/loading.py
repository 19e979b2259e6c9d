"""Loading a Qwen2-Audio checkpoint: ``AutoProcessor`` and
``Qwen2AudioForConditionalGeneration``."""

from __future__ import annotations

from typing import Any


def load_processor(path: str) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path)


def load_weights(path: str, dtype: Any) -> Any:
    from transformers import Qwen2AudioForConditionalGeneration

    return Qwen2AudioForConditionalGeneration.from_pretrained(path, dtype=dtype)


def audio_token_id(config: Any) -> int:
    return config.audio_token_id
