"""Phi-4-multimodal (transformers' native ``Phi4MultimodalForCausalLM``).

- :mod:`.loading`: processor (around a stub image processor) and weights from a checkpoint,
  and the checkpoint's ``speech-lora/`` adapter merged on load;
- :mod:`.backend`: the chat format, and each clip's audio encoded on its own;
- :mod:`.tiny`: the built-in ``builtin:tiny-phi4mm``.

:data:`FAMILY` is its entry in :mod:`apa.models.families`. Importing this package imports
neither torch nor transformers.
"""

from __future__ import annotations

from apa.models.family import ModelFamily, lazy
from apa.models.phi4mm.backend import Phi4mmBackend
from apa.models.phi4mm.tiny import TINY_NAME, build_tiny

_LOADING = "apa.models.phi4mm.loading"  # imports transformers: loaded at first use

FAMILY = ModelFamily(
    name="phi4mm",
    model_types=("phi4_multimodal",),
    tiny_name=TINY_NAME,
    build_tiny=build_tiny,
    load_processor=lazy(_LOADING, "load_processor"),
    load_weights=lazy(_LOADING, "load_weights"),
    audio_token_id=lazy(_LOADING, "audio_token_id"),
    backend=Phi4mmBackend,
    # every attention and MLP projection of the language model
    lora_targets=("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    modules_to_save=("lm_head",),
    merge_checkpoint_adapters=lazy(_LOADING, "merge_speech_lora"),
)
