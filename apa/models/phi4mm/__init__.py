"""Phi-4-multimodal (transformers' native ``Phi4MultimodalForCausalLM``).

- :mod:`.loading`: processor (around a stub image processor) and weights from a checkpoint,
  and the checkpoint's ``speech-lora/`` adapter merged on load;
- :mod:`.backend`: the chat format, and each clip's audio encoded on its own;
- :mod:`.tiny`: the built-in ``builtin:tiny-phi4mm``.

:data:`FAMILY` is its entry in :mod:`apa.models.families`. Importing this package imports
neither torch nor transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apa.models.family import ModelFamily
from apa.models.inputs import Backend
from apa.models.phi4mm.tiny import TINY_NAME


def _build_tiny(path: Path) -> Path:
    from apa.models.phi4mm.tiny import build_tiny

    return build_tiny(path)


def _backend() -> Backend:
    from apa.models.phi4mm.backend import Phi4mmBackend

    return Phi4mmBackend()


def _load_processor(path: str) -> Any:
    from apa.models.phi4mm.loading import load_processor

    return load_processor(path)


def _load_weights(path: str, dtype: Any) -> Any:
    from apa.models.phi4mm.loading import load_weights

    return load_weights(path, dtype)


def _audio_token_id(config: Any) -> int:
    from apa.models.phi4mm.loading import audio_token_id

    return audio_token_id(config)


def _merge_speech_lora(ref: str, model: Any, path: str, is_local: bool) -> tuple[Any, tuple]:
    from apa.models.phi4mm.loading import merge_speech_lora

    return merge_speech_lora(ref, model, path, is_local)


FAMILY = ModelFamily(
    name="phi4mm",
    model_types=("phi4_multimodal",),
    tiny_name=TINY_NAME,
    build_tiny=_build_tiny,
    load_processor=_load_processor,
    load_weights=_load_weights,
    audio_token_id=_audio_token_id,
    backend=_backend,
    # every attention and MLP projection of the language model
    lora_targets=("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    modules_to_save=("lm_head",),
    merge_checkpoint_adapters=_merge_speech_lora,
)
