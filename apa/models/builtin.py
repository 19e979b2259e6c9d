"""Built-in tiny models: the real architectures at toy size, with random weights.

``builtin:tiny-qwen2-audio`` is a ``Qwen2AudioForConditionalGeneration`` and
``builtin:tiny-phi4mm`` a ``Phi4MultimodalForCausalLM``, each well under a million
parameters, created from a config with a fixed seed and a byte-level BPE tokenizer trained
here on a small built-in English corpus (prompt words, the scoring instruction with its
Speechocean762 rubric and answer form, ARPAbet phones, digits). They let everything
downstream (scoring, training, serving, tests) run offline and fast; their outputs mean
nothing.

:func:`ensure_builtin` builds one into the cache on first use and returns its directory,
which is then loaded by :func:`apa.models.loading.load_model` exactly like a downloaded
checkpoint (``from_pretrained`` of model and processor). Each directory holds
``apa_builtin.json`` (``random_weights: true``), which marks every result as coming from a
random model.

Each mirrors its real model where code could depend on it: the special tokens and chat
template (``<|im_start|>user\\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\\n...`` for
Qwen2-Audio, ``<|user|><|audio|>...<|end|><|assistant|>`` for Phi-4-mm), the feature
extractors (Whisper 128-mel padded to 30 s; Phi-4's 80-mel), the pre-tokenizer's digit
splitting (Qwen2: one digit per token; Phi-4/o200k: up to three), a model vocabulary
padded beyond the tokenizer's, and for Phi-4-mm a ``speech-lora/`` adapter in the
checkpoint that the loader merges, as the real checkpoint needs for speech.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from apa import __version__
from apa.models.cache import build_atomically, cache_root, is_complete

BUILTIN_PREFIX = "builtin:"
TINY_QWEN2_AUDIO = "builtin:tiny-qwen2-audio"
TINY_PHI4MM = "builtin:tiny-phi4mm"
BUILTIN_NAMES: tuple[str, ...] = (TINY_QWEN2_AUDIO, TINY_PHI4MM)

MARKER = "apa_builtin.json"
"""Written last into a built model's directory: ``{"name", "random_weights", "seed", ...}``."""
SEED = 0
RECIPE = 2
"""Bump when a recipe changes what is built, so caches build the new one beside the old.
2: the tokenizer is also trained on the scoring instruction (:func:`instruction_corpus`), so
a change to :mod:`apa.lmm.prompt`'s text changes the tokenizer too: bump this with it."""
SPEECH_LORA_DIR = "speech-lora"
"""Where a Phi-4-multimodal checkpoint keeps the LoRA adapter its speech ability needs."""

_PHI4MM_LM_LORA_TARGETS = (
    r"model\.layers\.\d+\.(self_attn\.(qkv_proj|o_proj)|mlp\.(gate_up_proj|down_proj))"
)
_TOKENIZER_VOCAB = 1024
"""An upper bound: BPE stops when no pair occurs twice, which the corpus reaches first."""
_VOCAB_MULTIPLE = 64

QWEN2_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
)
PHI4MM_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<|image|>",
    "<|audio|>",
)

# The pre-tokenizer patterns of the real tokenizers: Qwen2's splits digits one by one,
# Phi-4's (o200k) keeps runs of up to three digits together.
_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_O200K_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2-Audio-7B-Instruct's template (also transformers' default for the processor), with
# `{"type": "audio"}` items accepted without a payload.
QWEN2_AUDIO_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content or content['type'] == 'audio' %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)

# Phi-4-multimodal's prompt format (`<|user|><|audio_1|>...<|end|><|assistant|>` in the
# original remote code) as transformers' native processor takes it: one `<|audio|>` per
# clip, which the processor expands to the clip's audio embedding length.
PHI4MM_CHAT_TEMPLATE = (
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

_ARPABET = (
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
    "UH UW V W Y Z ZH"
)
CORPUS: tuple[str, ...] = (
    "You are a helpful assistant.",
    "You are an English pronunciation teacher.",
    "Listen to the speaker and rate the pronunciation.",
    "Rate the accuracy, fluency, prosody and completeness of the sentence.",
    "Give a total score for the sentence, each word and each phone.",
    "Score the accuracy and stress of every word from 0 to 10.",
    "Score every phone from 0 to 2: 2 is correct, 1 has a heavy accent, 0 is wrong or missed.",
    "Audio 1: the speaker reads the reference text.",
    "Reference text: we call it bear",
    "The reference phones are W IY1 K AO1 L IH1 T B EH1 R",
    "accuracy fluency prosody completeness total stress word phone sentence score",
    '{"accuracy": 8, "fluency": 7, "prosody": 7, "completeness": 10, "total": 8}',
    '{"word": "bear", "accuracy": 9, "stress": 10, "total": 9, "phones": [2, 2, 1]}',
    _ARPABET,
    " ".join(
        f"{p}{s}" for p in ("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split()) for s in "012"
    ),
    "0 1 2 3 4 5 6 7 8 9 10",
    "0.5 1.5 2.0 7.5 8.25 9.75 10.0",
    "I think this is a good idea because we can learn from it.",
    "She sells sea shells by the sea shore.",
    "The weather is nice today and we are going to the park.",
    "My favourite subject at school was English.",
    "He said that he would call me later in the evening.",
    "What time does the train leave for the city?",
    "There were three thin things on the table.",
    "Please read the following sentence aloud.",
    "The speaker paused too long between words.",
    "The vowel was too short and the final consonant was missing.",
    "user assistant system",
)
_CORPUS_REPEATS = 4

# References spelled out in the instruction's answer form when the tokenizer is trained.
_INSTRUCTION_REFERENCES: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("We call it bear.", (("W", "IY1"), ("K", "AO1", "L"), ("IH1", "T"), ("B", "EH1", "R"))),
    (
        "The dog ran home.",
        (("DH", "AH0"), ("D", "AO1", "G"), ("R", "AE1", "N"), ("HH", "OW1", "M")),
    ),
)


def instruction_corpus() -> tuple[str, ...]:
    """The scoring instruction (:func:`apa.lmm.prompt.instruction`) for a few references,
    as tokenizer training text.

    Every utterance is scored with that instruction, so a tokenizer that has seen it spells
    it in about 660 tokens instead of about 1,170, which makes an utterance's sequence about
    a third shorter and a fine-tuning step correspondingly cheaper (benchmarks/RESULTS.md,
    ``## Learnability``)."""
    from apa.lmm.prompt import instruction

    return tuple(
        instruction(text, text.rstrip(".").upper().split(), [list(p) for p in phones])
        for text, phones in _INSTRUCTION_REFERENCES
    )


def ensure_builtin(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory of the built-in model ``name`` (``builtin:tiny-qwen2-audio`` or
    ``builtin:tiny-phi4mm``), built into the cache on first use and reused after.

    Raises ``ValueError`` for an unknown name.
    """
    builder = _BUILDERS.get(name)
    if builder is None:
        known = ", ".join(BUILTIN_NAMES)
        raise ValueError(f"unknown built-in model {name!r}: expected one of {known}")
    final = cache_root(cache_dir) / "builtin" / f"{name[len(BUILTIN_PREFIX) :]}-r{RECIPE}"
    if is_complete(final, MARKER):
        return final
    return build_atomically(final, builder, marker=MARKER)


def read_marker(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``apa_builtin.json`` of a model directory, or ``None`` where it has none."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        return None
    return json.loads(marker.read_text())


def build_tiny_qwen2_audio(path: str | os.PathLike[str]) -> Path:
    """Write a tiny random ``Qwen2AudioForConditionalGeneration`` and its processor to
    ``path`` with ``save_pretrained``, then the ``apa_builtin.json`` marker."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(
        QWEN2_SPECIAL_TOKENS,
        _QWEN2_PATTERN,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "audio_token": "<|AUDIO|>",
            "audio_bos_token": "<|audio_bos|>",
            "audio_eos_token": "<|audio_eos|>",
        },
    )
    processor = Qwen2AudioProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
        tokenizer=tokenizer,
        chat_template=QWEN2_AUDIO_CHAT_TEMPLATE,
    )
    endoftext, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    config = Qwen2AudioConfig(
        # The encoder keeps the real 1500 positions: it only accepts 30 s of features.
        audio_config={
            "d_model": 32,
            "encoder_layers": 2,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "num_mel_bins": 128,
            "max_source_positions": 1500,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": _padded_vocab(len(tokenizer)),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "tie_word_embeddings": False,
            "bos_token_id": endoftext,
            "eos_token_id": im_end,
            "pad_token_id": endoftext,
        },
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = Qwen2AudioForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext, eos_token_id=[im_end, endoftext], pad_token_id=endoftext
    )
    _save_model(model, out)
    processor.save_pretrained(out)
    _write_marker(out, TINY_QWEN2_AUDIO)
    return out


def build_tiny_phi4mm(path: str | os.PathLike[str]) -> Path:
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

    from apa.models.loading import StubImageProcessor, quiet_peft

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(
        PHI4MM_SPECIAL_TOKENS,
        _O200K_PATTERN,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image|>", "audio_token": "<|audio|>"},
    )
    feature_extractor = Phi4MultimodalFeatureExtractor()
    processor = Phi4MultimodalProcessor(
        StubImageProcessor(), feature_extractor, tokenizer, chat_template=PHI4MM_CHAT_TEMPLATE
    )
    endoftext, end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|end|>"])
    audio_hidden = 64
    config = Phi4MultimodalConfig(
        vocab_size=_padded_vocab(len(tokenizer)),
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
        _save_model(model, out)
        processor.save_pretrained(out)
        _name_real_image_processor(out)
        # The speech adapter: LoRA on the language model's layers only (the audio encoder
        # has modules of the same names), with random B so that it changes the outputs.
        speech = get_peft_model(
            model,
            LoraConfig(
                r=4,
                lora_alpha=8,
                target_modules=_PHI4MM_LM_LORA_TARGETS,
            ),
        )
        for name, param in speech.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.02)
        speech.save_pretrained(out / SPEECH_LORA_DIR)
    _write_marker(out, TINY_PHI4MM)
    return out


def _tokenizer(
    special_tokens: tuple[str, ...], pattern: str, **tokenizer_kwargs: Any
) -> Any:  # PreTrainedTokenizerFast
    """A byte-level BPE trained on :data:`CORPUS` and :func:`instruction_corpus`, special
    tokens first (ids 0, 1, ...).

    Training is deterministic: the same corpus gives the same merges and ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_TOKENIZER_VOCAB,
        min_frequency=2,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = list(CORPUS) + list(instruction_corpus())
    bpe.train_from_iterator(corpus * _CORPUS_REPEATS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
        **tokenizer_kwargs,
    )


def _padded_vocab(n: int) -> int:
    """Real checkpoints pad the embedding matrix past the tokenizer; so do we."""
    return -(-n // _VOCAB_MULTIPLE) * _VOCAB_MULTIPLE


def _name_real_image_processor(path: Path) -> None:
    config_path = path / "processor_config.json"
    config = json.loads(config_path.read_text())
    config["image_processor"] = {"image_processor_type": "Phi4MultimodalImageProcessorFast"}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _save_model(model: Any, out: Path) -> None:
    """``model.save_pretrained(out)`` on whichever process builds the model.

    transformers writes nothing, silently, from a ``torch.distributed`` rank other than 0. A
    built-in model is built by the first process that needs it, which in a data-parallel
    job (Ray Train workers) may be any rank, so this rank saves regardless (the build is
    private to it until renamed into the cache), and the files are checked to be there.
    """
    model.should_save_on_this_rank = lambda is_main_process: True  # instance override
    try:
        model.save_pretrained(out)
    finally:
        del model.should_save_on_this_rank
    missing = [f for f in ("config.json", "model.safetensors") if not (out / f).is_file()]
    if missing:
        raise RuntimeError(f"saving the built-in model to {out} wrote no {', '.join(missing)}")


def _write_marker(path: Path, name: str) -> None:
    import transformers

    marker = {
        "name": name,
        "random_weights": True,
        "seed": SEED,
        "recipe": RECIPE,
        "apa_version": __version__,
        "transformers_version": transformers.__version__,
    }
    (path / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


_BUILDERS = {TINY_QWEN2_AUDIO: build_tiny_qwen2_audio, TINY_PHI4MM: build_tiny_phi4mm}
