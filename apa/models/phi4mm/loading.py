"""Loading a Phi-4-multimodal checkpoint: transformers' native
``Phi4MultimodalForCausalLM``, a ``Phi4MultimodalProcessor`` rebuilt around
:class:`StubImageProcessor` (the real image processor needs torchvision, and apa never sends
images), and the checkpoint's own ``speech-lora/`` adapter, which its speech ability
depends on, merged into the weights on load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import ImageProcessingMixin

from apa.models.errors import ModelLoadError
from apa.models.peft_quiet import quiet_peft

SPEECH_LORA_DIR = "speech-lora"
"""Where a Phi-4-multimodal checkpoint keeps the LoRA adapter its speech ability needs."""
_ADAPTER_CONFIG = "adapter_config.json"


class StubImageProcessor(ImageProcessingMixin):
    """Stands in for Phi-4-multimodal's image processor, which cannot be built without
    torchvision. apa sends only audio and text; images given to a processor holding this
    stub fail."""

    def __init__(self, **kwargs: Any) -> None:
        pass


def load_processor(path: str | os.PathLike[str]) -> Any:
    """A ``Phi4MultimodalProcessor`` for the checkpoint at ``path`` (directory or Hub id)
    holding :class:`StubImageProcessor` in place of the image processor.

    ``AutoProcessor`` cannot be used without torchvision, and a processor holding the stub
    does not reload as one unit; so the tokenizer, audio feature extractor and processor
    settings (chat template included) are loaded each on its own, as ``from_pretrained``
    does, and put together here. The chat template comes from the processor's files
    (``chat_template.jinja``) or else the tokenizer's.
    """
    from transformers import AutoFeatureExtractor, AutoTokenizer, Phi4MultimodalProcessor

    processor_dict, _ = Phi4MultimodalProcessor.get_processor_dict(str(path))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    audio_processor = AutoFeatureExtractor.from_pretrained(str(path))
    # Passed by name: from_args_and_dict would drop it (not in the __init__ signature).
    chat_template = processor_dict.get("chat_template") or tokenizer.chat_template
    return Phi4MultimodalProcessor(
        StubImageProcessor(), audio_processor, tokenizer, chat_template=chat_template
    )


def load_weights(path: str, dtype: Any) -> Any:
    from transformers import Phi4MultimodalForCausalLM

    return Phi4MultimodalForCausalLM.from_pretrained(path, dtype=dtype)


def audio_token_id(config: Any) -> int:
    return config.audio_config.audio_token_id


def merge_speech_lora(ref: str, model: Any, path: str, is_local: bool) -> tuple[Any, tuple]:
    """Merge a Phi-4-mm checkpoint's ``speech-lora/`` adapter into ``model`` if it has one;
    returns the model and the merged adapters' names."""
    from peft import PeftModel

    if is_local:
        source = Path(path) / SPEECH_LORA_DIR
        if not (source / _ADAPTER_CONFIG).is_file():
            return model, ()
        args: tuple[str, ...] = (str(source),)
        kwargs: dict[str, Any] = {}
    else:
        from transformers.utils import cached_file

        found = cached_file(
            path,
            _ADAPTER_CONFIG,
            subfolder=SPEECH_LORA_DIR,
            _raise_exceptions_for_missing_entries=False,
        )
        if found is None:
            return model, ()
        args, kwargs = (path,), {"subfolder": SPEECH_LORA_DIR}
    try:
        with quiet_peft():
            merged = PeftModel.from_pretrained(model, *args, **kwargs).merge_and_unload()
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(
            "load_failed", f"cannot merge the {SPEECH_LORA_DIR} adapter of {ref!r}: {err}"
        ) from None
    return merged, (SPEECH_LORA_DIR,)
