"""What a model family is: one record of everything that differs between families (its
:class:`~apa.models.inputs.Backend` among them).

Each family lives in its own folder (``apa/models/qwen2_audio/``, ``apa/models/phi4mm/``)
holding its loader, its :class:`Backend` (chat format, audio input), its built-in tiny
model and its LoRA defaults, and exports one :class:`ModelFamily`; the table
:mod:`apa.models.families` lists them. Nothing outside a family's folder names a family
(``docs/model-families.md`` shows how a third one is added).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apa.models.inputs import Backend

if TYPE_CHECKING:
    import torch


def lazy(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported at its first call: a family's table entry must not import
    torch or transformers (importing :mod:`apa.models.families` stays cheap)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = f"{module}.{name}"
    return call


def _no_checkpoint_adapters(
    ref: str, model: Any, path: str, is_local: bool
) -> tuple[Any, tuple[str, ...]]:
    return model, ()


@dataclass(frozen=True)
class ModelFamily:
    """Everything :func:`apa.models.loading.load_model`, the scoring engine and fine-tuning
    need to know of one family."""

    name: str
    """``qwen2-audio``, ``phi4mm``: what results and logs call it"""
    model_types: tuple[str, ...]
    """the ``model_type`` values of its ``config.json``"""
    tiny_name: str
    """its built-in tiny model, ``builtin:tiny-...``"""
    build_tiny: Callable[[Path], Path]
    """writes the tiny model (random weights, a locally trained tokenizer) into a directory"""
    load_processor: Callable[[str], Any]
    """the processor of a checkpoint directory or Hub id"""
    load_weights: Callable[[str, torch.dtype], Any]
    """the model of a checkpoint directory or Hub id, in a dtype, on the CPU"""
    audio_token_id: Callable[[Any], int]
    """the audio placeholder id a model's config expects"""
    backend: Callable[[], Backend]
    lora_targets: tuple[str, ...]
    """LoRA targets when none are given"""
    modules_to_save: tuple[str, ...]
    """modules trained in full and saved with the adapter when none are given"""
    merge_checkpoint_adapters: Callable[[str, Any, str, bool], tuple[Any, tuple[str, ...]]] = (
        _no_checkpoint_adapters
    )
    """``(ref, model, path, is_local) -> (model, merged adapter names)``: adapters shipped
    inside a checkpoint that its base weights need (Phi-4-mm's ``speech-lora``)"""
