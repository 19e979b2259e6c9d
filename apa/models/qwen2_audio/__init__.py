"""Qwen2-Audio (``Qwen2AudioForConditionalGeneration``, e.g. Qwen2-Audio-7B-Instruct).

- :mod:`.loading`: processor and weights from a checkpoint;
- :mod:`.backend`: the chat format, and the audio encoder run on the real frames only;
- :mod:`.tiny`: the built-in ``builtin:tiny-qwen2-audio``.

:data:`FAMILY` is its entry in :mod:`apa.models.families`. Importing this package imports
neither torch nor transformers.
"""

from __future__ import annotations

from apa.models.family import ModelFamily
from apa.models.qwen2_audio import loading
from apa.models.qwen2_audio.backend import Qwen2AudioBackend
from apa.models.qwen2_audio.tiny import TINY_NAME, build_tiny

FAMILY = ModelFamily(
    name="qwen2-audio",
    model_types=("qwen2_audio",),
    tiny_name=TINY_NAME,
    build_tiny=build_tiny,
    load_processor=loading.load_processor,
    load_weights=loading.load_weights,
    audio_token_id=loading.audio_token_id,
    backend=Qwen2AudioBackend,
    # every attention and MLP projection of the language model, and of the audio encoder
    # (``out_proj``, ``fc1``, ``fc2``, and ``q/k/v_proj`` by name)
    lora_targets=(
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "out_proj",
        "fc1",
        "fc2",
    ),  # fmt: skip
    # the output head (its rows for the answer tokens must move for scores to calibrate)
    # and the audio projector
    modules_to_save=("multi_modal_projector", "lm_head"),
)
