"""The table of model families: the one place that lists them.

A family is a folder of its own (loading, backend, built-in tiny model, LoRA defaults)
exporting a :class:`~apa.models.family.ModelFamily`; adding one means a new folder and a
line here (``docs/model-families.md``).
"""

from __future__ import annotations

from apa.models import phi4mm, qwen2_audio
from apa.models.family import ModelFamily

FAMILIES: tuple[ModelFamily, ...] = (qwen2_audio.FAMILY, phi4mm.FAMILY)

TINY_QWEN2_AUDIO = qwen2_audio.FAMILY.tiny_name
TINY_PHI4MM = phi4mm.FAMILY.tiny_name
BUILTIN_NAMES: tuple[str, ...] = tuple(f.tiny_name for f in FAMILIES)


def by_name(name: str) -> ModelFamily:
    """The family called ``name`` (``qwen2-audio``, ``phi4mm``); ``ValueError`` if none."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ValueError(f"no model family {name!r}: expected one of {[f.name for f in FAMILIES]}")


def by_model_type(model_type: object) -> ModelFamily | None:
    """The family whose checkpoints have this config ``model_type``, or ``None``."""
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def by_tiny_name(name: str) -> ModelFamily | None:
    """The family whose built-in tiny model is ``name``, or ``None``."""
    return next((f for f in FAMILIES if f.tiny_name == name), None)


def model_types() -> list[str]:
    return [t for f in FAMILIES for t in f.model_types]
