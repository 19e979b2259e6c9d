"""Built-in tiny models: the real architectures at toy size, with random weights.

Each family builds its own (``apa/models/<family>/tiny.py``: ``builtin:tiny-qwen2-audio``, a
``Qwen2AudioForConditionalGeneration``, and ``builtin:tiny-phi4mm``, a
``Phi4MultimodalForCausalLM``), each well under a million parameters, created from a config
with a fixed seed and a byte-level BPE tokenizer trained here on a small built-in English
corpus (prompt words, the scoring instruction with its Speechocean762 rubric and answer
form, ARPAbet phones, digits). They let everything downstream (scoring, training, serving,
tests) run offline and fast; their outputs mean nothing.

This module holds what the builders share: the tokenizer training, saving, and the marker
``apa_builtin.json`` (``random_weights: true``) written last into each built directory,
which marks every result as coming from a random model.
:func:`apa.models.builtin.ensure_builtin` builds one into the cache on first use; it is then
loaded by :func:`apa.models.loading.load_model` exactly like a downloaded checkpoint.

Each mirrors its real model where code could depend on it: the special tokens and chat
template, the feature extractors (Whisper 128-mel padded to 30 s; Phi-4's 80-mel), the
pre-tokenizer's digit splitting (Qwen2: one digit per token; Phi-4/o200k: up to three), a
model vocabulary padded beyond the tokenizer's, and for Phi-4-mm a ``speech-lora/`` adapter
in the checkpoint that the loader merges, as the real checkpoint needs for speech.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from apa import __version__
from apa.phones import PHONES, STRESSED_VOWELS

MARKER = "apa_builtin.json"
"""Written last into a built model's directory: ``{"name", "random_weights", "seed", ...}``."""
SEED = 0
RECIPE = 2
"""Bump when a recipe changes what is built, so caches build the new one beside the old.
2: the tokenizer is also trained on the scoring instruction (:func:`instruction_corpus`), so
a change to :mod:`apa.lmm.prompt`'s text changes the tokenizer too: bump this with it."""

_TOKENIZER_VOCAB = 1024
"""An upper bound: BPE stops when no pair occurs twice, which the corpus reaches first."""
_VOCAB_MULTIPLE = 64

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
    " ".join(PHONES),
    " ".join(STRESSED_VOWELS),
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


def read_marker(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``apa_builtin.json`` of a model directory, or ``None`` where it has none."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        return None
    return json.loads(marker.read_text())


def train_tokenizer(
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


def padded_vocab(n: int) -> int:
    """Real checkpoints pad the embedding matrix past the tokenizer; so do we."""
    return -(-n // _VOCAB_MULTIPLE) * _VOCAB_MULTIPLE


def save_model(model: Any, out: Path) -> None:
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


def write_marker(path: Path, name: str) -> None:
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
