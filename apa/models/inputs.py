"""The model inputs of a batch, the same for every audio LMM family.

A family's :class:`Backend` knows its chat format and how its audio
reaches the language model; everything else (the instruction, the answer template,
decoding, reading slots) is shared. Every family is used the same way:

1. :meth:`Backend.prompt` wraps the instruction in the processor's chat
   template: one user turn holding the audio placeholder and the instruction, then the
   assistant prefix (``<|im_start|>assistant\\n`` for Qwen2-Audio, ``<|assistant|>`` for
   Phi-4-multimodal).
2. :func:`build_batch` runs the processor on the prompts and clips (which expands each
   audio placeholder to the clip's audio tokens and extracts the features), appends each
   item's answer token ids right after its assistant prefix, and left-pads the rows:
   ``pad ... pad | prompt + audio tokens | answer``. Every row ends at the same column, and
   :attr:`Batch.answer_starts` says where each answer begins. ``position_ids`` are
   ``cumsum(attention_mask) - 1``, so padding does not shift any token's position.
3. :meth:`Backend.first_pass_inputs` turns a batch into the inputs of the
   family's text model for the first forward pass (the one that carries the audio); later
   cached passes take token ids only.

The answer's ids are appended as ids, never re-tokenized with the prompt: an answer is
tokenized on its own (``add_special_tokens=False``), so the same answer text gives the same
ids whatever prompt precedes it, in training and in scoring alike.

The backends: :mod:`apa.models.qwen2_audio.backend`, :mod:`apa.models.phi4mm.backend`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch

SAMPLE_RATE = 16_000
"""The rate of every clip given to a backend (:mod:`apa.audio` decodes to it)."""
AUDIO_URL = "input.wav"
"""Stands for the clip in the chat message; ``apply_chat_template(tokenize=False)`` only
renders the placeholder (the real templates test for an ``audio_url`` or ``audio`` key)."""


@dataclass(frozen=True)
class Batch:
    """Model inputs for a batch of prompts with audio and answers, left-padded."""

    input_ids: torch.Tensor
    """``(batch, length)``: padding, prompt (audio placeholders expanded), answer."""
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    """``cumsum(attention_mask) - 1``; 0 at padding."""
    audio: dict[str, torch.Tensor]
    """The processor's audio outputs (features, their masks or sizes), by its key names."""
    answer_starts: tuple[int, ...]
    """The column where each row's answer begins (its first answer token)."""

    def to(self, device: Any, dtype: torch.dtype | None = None) -> Batch:
        """On ``device``; floating audio features also in ``dtype`` when given."""

        def move(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device)

        return replace(
            self,
            input_ids=move(self.input_ids),
            attention_mask=move(self.attention_mask),
            position_ids=move(self.position_ids),
            audio={k: move(v) for k, v in self.audio.items()},
        )


class Backend(Protocol):
    """One model family's chat format and audio input."""

    family: str
    """the family's :attr:`~apa.models.family.ModelFamily.name`"""
    end_of_turn: str
    """The token that ends the assistant's turn (follows an answer in training targets)."""
    max_audio_seconds: float | None
    """The longest clip the feature extractor keeps whole (longer ones it would cut)."""

    def prompt(self, processor: Any, instruction: str) -> str:
        """The chat text up to and including the assistant prefix, with one audio
        placeholder."""
        ...

    def collate_audio(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """The audio tensors of a batch from each item's own processor outputs (one clip
        each), padded as the family's encoder expects."""
        ...

    def first_pass_inputs(self, text_model: Any, batch: Batch) -> dict[str, Any]:
        """Keyword arguments for ``text_model`` (see
        :func:`apa.models.inputs.text_model_and_head`) that carry the batch's tokens and
        audio, without the masks and positions."""
        ...


def chat_prompt(processor: Any, instruction: str) -> str:
    """``instruction`` as one user turn after the audio, through the processor's chat
    template, ending with the assistant prefix. Raises ``ValueError`` unless the text holds
    exactly one audio placeholder."""
    conversation = [
        {
            "role": "user",
            "content": [
                {"type": "audio", "audio_url": AUDIO_URL},
                {"type": "text", "text": instruction},
            ],
        }
    ]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    count = text.count(processor.audio_token)
    if count != 1:
        raise ValueError(
            f"the chat template gave {count} audio placeholders {processor.audio_token!r}, not 1"
        )
    return text


def build_batch(
    processor: Any,
    prompts: Sequence[str],
    audios: Sequence[np.ndarray],
    answers: Sequence[str | Sequence[int]],
    *,
    backend: Backend,
) -> Batch:
    """Tokenize ``prompts`` with their clips (16 kHz float32) and append each answer (text,
    tokenized alone with ``add_special_tokens=False``, or token ids) right after its prompt;
    left-pad the rows. An empty answer gives the prompt alone. The items' audio inputs are
    put together by the family's ``backend`` (:meth:`Backend.
    collate_audio`)."""
    import torch

    if not len(prompts) == len(audios) == len(answers) > 0:
        raise ValueError(
            f"{len(prompts)} prompts, {len(audios)} clips and {len(answers)} answers: "
            "give one of each per item, at least one item"
        )
    tokenizer = processor.tokenizer
    # One processor call per item, then the audio tensors padded and stacked here: batched,
    # Phi-4-multimodal's feature extractor fails on clips of nearly equal length (it slices
    # past the last frame of the longest clip: "size of tensor a (570) must match ... (571)"),
    # and an item's features must not depend on the clips batched with it anyway.
    items = [
        processor(text=[prompt], audio=[audio], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        for prompt, audio in zip(prompts, audios, strict=True)
    ]
    encoded = backend.collate_audio(
        [
            {k: v for k, v in item.items() if k not in ("input_ids", "attention_mask")}
            for item in items
        ]
    )
    ids = [item["input_ids"][0][item["attention_mask"][0].bool()] for item in items]
    rows: list[list[int]] = []
    answer_lengths: list[int] = []
    for i, answer in enumerate(answers):
        answer_ids = (
            tokenizer.encode(answer, add_special_tokens=False)
            if isinstance(answer, str)
            else [int(t) for t in answer]
        )
        rows.append(ids[i].tolist() + answer_ids)
        answer_lengths.append(len(answer_ids))
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, width - len(row) :] = 1
    return Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions(attention_mask),
        audio=encoded,
        answer_starts=tuple(width - n for n in answer_lengths),
    )


def stack_padded(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Tensors of one item each (leading dimension 1) stacked into a batch, each padded
    with zeros (``False``) at the end of every other dimension to the largest.

    >>> import torch
    >>> stack_padded([torch.ones(1, 2), torch.ones(1, 3)]).tolist()
    [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    """
    import torch

    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    out = torch.zeros((sum(t.shape[0] for t in tensors), *shape), dtype=tensors[0].dtype)
    row = 0
    for t in tensors:
        out[(slice(row, row + t.shape[0]), *(slice(0, n) for n in t.shape[1:]))] = t
        row += t.shape[0]
    return out


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """``cumsum(attention_mask) - 1`` along the last axis, 0 at leading padding: each real
    token's position counts only the real tokens before it."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def text_model_and_head(model: Any) -> tuple[Any, Any]:
    """The family's model below the output head (``model.model`` of the HF class, which
    takes audio and returns ``last_hidden_state``) and the output head (``lm_head``), seen
    through a peft wrapper when an adapter is applied. Scoring applies the head only where
    slots are read."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.get_output_embeddings()
