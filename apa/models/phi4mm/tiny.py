"""The built-in ``builtin:tiny-phi4mm``: a tiny random Phi-4-multimodal with the real chat
format, special tokens, pre-tokenizer (o200k) and feature extractor, and a ``speech-lora/``
adapter in the checkpoint (:mod:`apa.models.tiny`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from apa.models.tiny import SEED, padded_vocab, save_model, train_tokenizer, write_marker

TINY_NAME = "builtin:tiny-phi4mm"

_LM_LORA_TARGETS = (
    r"model\.layers\.\d+\.(self_attn\.(qkv_proj|o_proj)|mlp\.(gate_up_proj|down_proj))"
)
"""The speech adapter's targets: the language model's layers only (the audio encoder has
modules of the same names)."""

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<|image|>",
    "<|audio|>",
)

# The pre-tokenizer pattern of the real tokenizer (o200k): runs of up to three digits.
_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Phi-4-multimodal's prompt format (`<|user|><|audio_1|>...<|end|><|assistant|>` in the
# original remote code) as transformers' native processor takes it: one `<|audio|>` per
# clip, which the processor expands to the clip's audio embedding length.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<|image|>' }}"
    "{% elif content['type'] == 'audio' %}{{ '<|audio|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)


def build_tiny(path: str | os.PathLike[str]) -> Path:
    """Write a tiny random ``Phi4MultimodalForCausalLM``, its processor pieces and a
    ``speech-lora/`` adapter to ``path``, then the ``apa_builtin.json`` marker.

    The processor is saved with a stub image processor (no torchvision here) and its entry
    in ``processor_config.json`` is rewritten to name the real
    ``Phi4MultimodalImageProcessorFast``, so the directory reads like a real checkpoint.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        GenerationConfig,
        Phi4MultimodalConfig,
        Phi4MultimodalFeatureExtractor,
        Phi4MultimodalForCausalLM,
        Phi4MultimodalProcessor,
    )

    from apa.models.peft_quiet import quiet_peft
    from apa.models.phi4mm.loading import SPEECH_LORA_DIR, StubImageProcessor

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(
        SPECIAL_TOKENS,
        _PATTERN,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image|>", "audio_token": "<|audio|>"},
    )
    feature_extractor = Phi4MultimodalFeatureExtractor()
    processor = Phi4MultimodalProcessor(
        StubImageProcessor(), feature_extractor, tokenizer, chat_template=CHAT_TEMPLATE
    )
    endoftext, end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|end|>"])
    audio_hidden = 64
    config = Phi4MultimodalConfig(
        vocab_size=padded_vocab(len(tokenizer)),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        bos_token_id=endoftext,
        eos_token_id=[endoftext, end],  # a bare 0 would be replaced by the real model's ids
        pad_token_id=endoftext,
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 56,
            "crop_size": 56,
            "patch_size": 14,
            "image_token_id": tokenizer.image_token_id,
        },
        audio_config={
            "hidden_size": audio_hidden,
            "intermediate_size": 128,
            "num_blocks": 2,
            "num_attention_heads": 4,
            "nemo_conv_channels": 32,
            "ext_pw_out_channel": audio_hidden,
            "depthwise_separable_out_channel": audio_hidden,
            "input_size": feature_extractor.feature_size,
            "time_reduction": feature_extractor.audio_compression_rate,
            "audio_token_id": tokenizer.audio_token_id,
        },
    )
    with torch.random.fork_rng(devices=[]), quiet_peft():
        torch.manual_seed(SEED)
        model = Phi4MultimodalForCausalLM(config)
        model.generation_config = GenerationConfig(
            bos_token_id=endoftext, eos_token_id=[endoftext, end], pad_token_id=endoftext
        )
        save_model(model, out)
        processor.save_pretrained(out)
        _name_real_image_processor(out)
        # The speech adapter: LoRA on the language model's layers only (the audio encoder
        # has modules of the same names), with random B so that it changes the outputs.
        speech = get_peft_model(
            model,
            LoraConfig(
                r=4,
                lora_alpha=8,
                target_modules=_LM_LORA_TARGETS,
            ),
        )
        for name, param in speech.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.02)
        speech.save_pretrained(out / SPEECH_LORA_DIR)
    write_marker(out, TINY_NAME)
    return out


def _name_real_image_processor(path: Path) -> None:
    config_path = path / "processor_config.json"
    config = json.loads(config_path.read_text())
    config["image_processor"] = {"image_processor_type": "Phi4MultimodalImageProcessorFast"}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
