"""The model inputs of a batch, the same for every audio LMM family.

A family's :class:`~apa.models.family.Backend` knows its chat format and how its audio
reaches the language model; everything else (the instruction, the answer template,
decoding, reading slots) is shared. Every family is used the same way:

1. :meth:`~apa.models.family.Backend.prompt` wraps the instruction in the processor's chat
   template: one user turn holding the audio placeholder and the instruction, then the
   assistant prefix (``<|im_start|>assistant\\n`` for Qwen2-Audio, ``<|assistant|>`` for
   Phi-4-multimodal).
2. :func:`build_batch` runs the processor on the prompts and clips (which expands each
   audio placeholder to the clip's audio tokens and extracts the features), appends each
   item's answer token ids right after its assistant prefix, and left-pads the rows:
   ``pad ... pad | prompt + audio tokens | answer``. Every row ends at the same column, and
   :attr:`Batch.answer_starts` says where each answer begins. ``position_ids`` are
   ``cumsum(attention_mask) - 1``, so padding does not shift any token's position.
3. :meth:`~apa.models.family.Backend.first_pass_inputs` turns a batch into the inputs of the
   family's text model for the first forward pass (the one that carries the audio); later
   cached passes take token ids only.

The answer's ids are appended as ids, never re-tokenized with the prompt: an answer is
tokenized on its own (``add_special_tokens=False``), so the same answer text gives the same
ids whatever prompt precedes it, in training and in scoring alike.

The backends: :mod:`apa.models.qwen2_audio.backend`, :mod:`apa.models.phi4mm.backend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

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
) -> Batch:
    """Tokenize ``prompts`` with their clips (16 kHz float32) and append each answer (text,
    tokenized alone with ``add_special_tokens=False``, or token ids) right after its prompt;
    left-pad the rows. An empty answer gives the prompt alone."""
    import torch

    if not len(prompts) == len(audios) == len(answers) > 0:
        raise ValueError(
            f"{len(prompts)} prompts, {len(audios)} clips and {len(answers)} answers: "
            "give one of each per item, at least one item"
        )
    tokenizer = processor.tokenizer
    encoded = processor(
        text=list(prompts),
        audio=list(audios),
        sampling_rate=SAMPLE_RATE,
        return_tensors="pt",
        padding=True,
    )
    ids, mask = encoded.pop("input_ids"), encoded.pop("attention_mask")
    rows: list[list[int]] = []
    answer_lengths: list[int] = []
    for i, answer in enumerate(answers):
        answer_ids = (
            tokenizer.encode(answer, add_special_tokens=False)
            if isinstance(answer, str)
            else [int(t) for t in answer]
        )
        rows.append(ids[i][mask[i].bool()].tolist() + answer_ids)
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
        audio={k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)},
        answer_starts=tuple(width - n for n in answer_lengths),
    )


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
