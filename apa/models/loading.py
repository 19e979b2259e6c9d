"""Load an audio LMM the way Hugging Face users expect, with an optional LoRA adapter.

A model reference is one of:

* ``builtin:tiny-qwen2-audio`` / ``builtin:tiny-phi4mm``: built into the cache on first use
  (:mod:`apa.models.builtin`), then loaded from that directory like any checkpoint;
* ``s3://bucket/prefix``: every object under the prefix is downloaded once into the cache
  (:mod:`apa.models.cache`), then loaded from there;
* an existing local directory (a ``save_pretrained`` checkpoint);
* anything else: a Hugging Face Hub id, passed to ``from_pretrained`` unchanged. Where no
  Hub is reachable this fails with a :class:`ModelLoadError` naming the id.

The family comes from the config's ``model_type`` (the table :mod:`apa.models.families`);
the family's own folder loads the processor and the weights, and merges adapters its
checkpoint ships (Phi-4-multimodal's ``speech-lora/``, which its speech ability depends on)
before any adapter of ours; :attr:`LoadedModel.checkpoint_adapters` lists them.

An adapter of ours (peft LoRA; a local directory or ``s3://``) is then applied, or merged
into the weights with ``merge_adapter=True``. ``dtype="auto"`` means bfloat16 on CUDA and
float32 elsewhere; ``device="auto"`` means CUDA when available.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from apa.models.builtin import BUILTIN_PREFIX, ensure_builtin
from apa.models.cache import fetch_s3_dir
from apa.models.errors import ModelLoadError
from apa.models.families import by_model_type, model_types
from apa.models.family import ModelFamily
from apa.models.peft_quiet import quiet_peft
from apa.models.tiny import read_marker
from apa.storage import is_s3

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_ADAPTER_CONFIG = "adapter_config.json"
_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")


@dataclass
class LoadedModel:
    """A model ready for inference, its processor, and where they came from."""

    model: Any
    """The ``torch.nn.Module`` in eval mode (a ``peft.PeftModel`` when an adapter is applied
    but not merged)."""
    processor: Any
    family: str
    """the family's name (:data:`apa.models.families.FAMILIES`)"""
    name: str
    """The reference as the user gave it (``builtin:...``, ``s3://...``, a path, a Hub id)."""
    path: str
    """What ``from_pretrained`` was called on: a local directory, or the Hub id."""
    is_random: bool
    """A built-in model with random weights: its outputs mean nothing (``model_is_random``)."""
    adapter: str | None
    """The adapter reference as given, or ``None``."""
    adapter_merged: bool
    device: str
    dtype: str
    checkpoint_adapters: tuple[str, ...] = field(default=())
    """Adapters shipped inside the checkpoint and merged on load (Phi-4-mm's ``speech-lora``)."""
    adapter_path: str | None = None
    """The local directory the adapter was read from (an ``s3://`` adapter's cache copy)."""


def load_model(
    ref: str,
    *,
    adapter: str | None = None,
    merge_adapter: bool = False,
    dtype: str = "auto",
    device: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    prepare: Callable[[Any, Any], object] | None = None,
) -> LoadedModel:
    """Load the model ``ref`` (see the module docstring) with its processor.

    ``adapter`` is a peft adapter directory or ``s3://`` prefix, applied on top, or merged
    into the weights when ``merge_adapter`` is set. ``dtype`` is ``auto``, ``float32``,
    ``bfloat16`` or ``float16``; ``device`` is ``auto`` or a torch device (``cpu``,
    ``cuda``, ``cuda:1``). ``cache_dir`` overrides ``APA_CACHE_DIR`` for built-in and S3
    models. ``prepare(model, processor)``, when given, runs on the base model before the
    adapter goes on (where scoring adds its answer tokens to the tokenizer and embeddings, so
    that an adapter's own rows for them are kept). Raises :class:`ModelLoadError`.
    """
    if merge_adapter and adapter is None:
        raise ModelLoadError("invalid_option", "merge_adapter was set but no adapter was given")
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    path = resolve_model_path(ref, cache_dir=cache_dir)
    is_local = Path(path).is_dir()
    family = _family(ref, path, is_local)
    processor = _load_processor(ref, path, family)
    model = _load_weights(ref, path, family, DTYPES[resolved_dtype], resolved_device)
    model, checkpoint_adapters = family.merge_checkpoint_adapters(ref, model, path, is_local)
    _check_audio_token(ref, family, model.config, processor)
    if prepare is not None:
        prepare(model, processor)
    adapter_path: Path | None = None
    if adapter is not None:
        model, adapter_path = _apply_adapter(model, adapter, merge_adapter, cache_dir)
    model.eval()
    marker = read_marker(path) if is_local else None
    return LoadedModel(
        model=model,
        processor=processor,
        family=family.name,
        name=ref,
        path=path,
        is_random=bool(marker and marker.get("random_weights")),
        adapter=adapter,
        adapter_merged=adapter is not None and merge_adapter,
        device=resolved_device,
        dtype=resolved_dtype,
        checkpoint_adapters=checkpoint_adapters,
        adapter_path=str(adapter_path) if adapter_path is not None else None,
    )


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; other names are checked."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ModelLoadError("invalid_option", f"unknown device {device!r}: {err}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device_unavailable", f"device {device!r} asked for, but no CUDA")
    return device


def resolve_dtype(dtype: str = "auto", device: str = "cpu") -> str:
    """``auto`` → ``bfloat16`` on CUDA, ``float32`` elsewhere; else one of :data:`DTYPES`."""
    if dtype == "auto":
        return "bfloat16" if torch.device(device).type == "cuda" else "float32"
    if dtype not in DTYPES:
        choices = ", ".join(["auto", *DTYPES])
        raise ModelLoadError("invalid_option", f"unknown dtype {dtype!r}: expected {choices}")
    return dtype


def resolve_model_path(ref: str, *, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The local directory for ``ref`` (building or downloading it when needed), or ``ref``
    itself when it is taken as a Hub id."""
    if ref.startswith(BUILTIN_PREFIX):
        try:
            return str(ensure_builtin(ref, cache_dir=cache_dir))
        except ValueError as err:
            raise ModelLoadError("unknown_builtin", str(err)) from None
    if is_s3(ref):
        return str(_fetch(ref, cache_dir, what="model"))
    local = Path(ref).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if local.exists() or ref.startswith(_PATH_PREFIXES) or "://" in ref:
        raise ModelLoadError(
            "not_found",
            f"model {ref!r} is not a model directory (nor a builtin: name, an s3:// URI "
            "or a Hugging Face Hub id)",
        )
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(ref)
    except HFValidationError as err:
        raise ModelLoadError(
            "not_found",
            f"model {ref!r} is neither a builtin: name, an s3:// URI, a local directory nor "
            f"a valid Hugging Face Hub id ({err})",
        ) from None
    return ref


def _fetch(uri: str, cache_dir: str | os.PathLike[str] | None, *, what: str) -> Path:
    try:
        return fetch_s3_dir(uri, cache_dir=cache_dir)
    except FileNotFoundError as err:
        raise ModelLoadError("not_found", f"{what} {uri!r}: {err}") from None
    except ValueError as err:
        raise ModelLoadError("not_found", f"{what} {uri!r}: {err}") from None
    except OSError as err:
        raise ModelLoadError("s3_failed", f"cannot download {what} {uri!r}: {err}") from None


def _family(ref: str, path: str, is_local: bool) -> ModelFamily:
    from transformers import PretrainedConfig

    try:
        config_dict, _ = PretrainedConfig.get_config_dict(path)
    except (OSError, ValueError) as err:
        if is_local:
            raise ModelLoadError(
                "load_failed", f"cannot read the config of model {ref!r} at {path}: {err}"
            ) from None
        raise ModelLoadError(
            "hub_unreachable",
            f"cannot load model {ref!r}: it is not a builtin: name, an s3:// URI or a local "
            "directory, so it was taken as a Hugging Face Hub id, and either no Hub is "
            f"reachable from here (offline, HF_HUB_OFFLINE) or the id is wrong ({err})",
        ) from None
    model_type = config_dict.get("model_type")
    family = by_model_type(model_type)
    if family is None:
        supported = ", ".join(model_types())
        raise ModelLoadError(
            "unsupported_model",
            f"model {ref!r} (at {path}) has model_type {model_type!r}; supported: {supported}"
            f" (config keys: {sorted(config_dict)[:8]})",
        )
    return family


def _load_processor(ref: str, path: str, family: ModelFamily) -> Any:
    try:
        return family.load_processor(path)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(
            "load_failed", f"cannot load the processor of model {ref!r}: {err}"
        ) from None


def _load_weights(ref: str, path: str, family: ModelFamily, dtype: torch.dtype, device: str) -> Any:
    try:
        model = family.load_weights(path, dtype)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError("load_failed", f"cannot load model {ref!r}: {err}") from None
    return model.to(device)


def _check_audio_token(ref: str, family: ModelFamily, config: Any, processor: Any) -> None:
    """The model's audio placeholder id must be the tokenizer's: otherwise Phi-4-mm ignores
    the audio without an error, and Qwen2-Audio fails at the first clip."""
    model_id = family.audio_token_id(config)
    tokenizer_id = processor.audio_token_id
    if model_id != tokenizer_id:
        raise ModelLoadError(
            "audio_token_mismatch",
            f"model {ref!r}: the config's audio token id is {model_id} but the tokenizer's "
            f"{processor.audio_token!r} is {tokenizer_id}",
        )


def _apply_adapter(
    model: Any, adapter: str, merge: bool, cache_dir: str | os.PathLike[str] | None
) -> tuple[Any, Path]:
    """``model`` with the adapter applied (or merged), and the local directory it came from."""
    from peft import PeftModel

    if is_s3(adapter):
        source = _fetch(adapter, cache_dir, what="adapter")
    else:
        source = Path(adapter).expanduser()
    if not (source / _ADAPTER_CONFIG).is_file():
        raise ModelLoadError(
            "adapter_not_found",
            f"adapter {adapter!r} is not a peft adapter directory (no {_ADAPTER_CONFIG})",
        )
    try:
        with quiet_peft():
            peft_model = PeftModel.from_pretrained(model, str(source.resolve()))
            return (peft_model.merge_and_unload() if merge else peft_model), source.resolve()
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ModelLoadError("adapter_failed", f"cannot apply adapter {adapter!r}: {err}") from None
