"""The model inputs of a batch, the same for every audio LMM family.

A family's :class:`Backend` knows its chat format and how its audio
reaches the language model; everything else (the instruction, the answer template,
decoding, reading slots) is shared. Every family is used the same way:

1. :meth:`Backend.prompt` wraps the instruction in the processor's chat
   template: one user turn holding the audio placeholder and the instruction, then the
   assistant prefix (``<|im_start|>assistant\\n`` for Qwen2-Audio, ``<|assistant|>`` for
   Phi-4-multimodal).
2. The prompt is tokenized once (:func:`tokenize_prompt`), its audio placeholder left as
   one token; for each clip the placeholder is repeated once per audio token
   (:meth:`Backend.audio_tokens`, :func:`expand`: the ids the processor would give) and
   the item's answer ids follow. :func:`collate` left-pads the rows,
   ``pad ... pad | prompt + audio tokens | answer``, so that every row ends at the same
   column (:attr:`Batch.answer_starts` says where each answer begins), with
   ``position_ids = cumsum(attention_mask) - 1`` (padding shifts no token's position), and
   has the backend compute the clips' log-mel features on the model's device, for their
   real frames only (:meth:`Backend.audio_features`). :func:`build_batch` does all of
   this for prompts given as text.
3. :meth:`Backend.first_pass_inputs` turns a batch into the inputs of the
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

    def audio_tokens(self, processor: Any, samples: int) -> int:
        """The audio tokens a clip of ``samples`` (16 kHz) expands the placeholder to (0 for
        a clip too short for one)."""
        ...

    def audio_features(
        self, processor: Any, clips: Sequence[np.ndarray], device: Any
    ) -> dict[str, torch.Tensor]:
        """The encoder's inputs for a batch of clips (log-mel features on the real frames and
        their masks), computed on ``device``; each clip's features do not depend on the
        clips batched with it."""
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


@dataclass(frozen=True)
class PromptIds:
    """A prompt's token ids with its one audio placeholder (:func:`tokenize_prompt`):
    computed once per prompt, expanded per clip by :func:`expand`."""

    ids: tuple[int, ...]
    audio_at: int
    """The placeholder's index in ``ids``."""


def tokenize_prompt(processor: Any, prompt: str) -> PromptIds:
    """``prompt`` tokenized as the processor tokenizes it, its audio placeholder left as one
    token. The processor repeats the placeholder's text once per audio token before
    tokenizing, and the placeholder is a special token (never merged with its
    neighbours), so repeating its id instead gives the processor's ids
    (``tests/models/test_backends.py``). Raises ``ValueError`` unless the prompt holds the
    placeholder exactly once."""
    ids = processor.tokenizer(prompt)["input_ids"]
    where = [i for i, t in enumerate(ids) if t == processor.audio_token_id]
    if len(where) != 1:
        raise ValueError(f"the prompt holds {len(where)} audio placeholders, not 1")
    return PromptIds(tuple(ids), where[0])


def expand(prompt: PromptIds, audio_tokens: int, audio_token_id: int) -> list[int]:
    """The prompt's ids with its placeholder repeated ``audio_tokens`` times (what the
    processor gives for a clip of that many audio tokens)."""
    at = prompt.audio_at
    return [*prompt.ids[:at], *([audio_token_id] * audio_tokens), *prompt.ids[at + 1 :]]


def pad_id(tokenizer: Any) -> int:
    """The id padded rows are filled with: the tokenizer's pad token, else 0 (masked out
    either way)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def collate(
    rows: Sequence[Sequence[int]],
    answer_lengths: Sequence[int],
    clips: Sequence[np.ndarray],
    *,
    processor: Any,
    backend: Backend,
    device: Any = "cpu",
) -> Batch:
    """A batch of token rows (prompt with its audio tokens expanded, then the answer, whose
    last ``answer_lengths[i]`` ids are row ``i``'s answer) and their clips: the rows
    left-padded, the clips' features computed on ``device`` by the family's backend
    (:meth:`Backend.audio_features`)."""
    import torch

    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id(processor.tokenizer), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
        attention_mask[i, width - len(row) :] = 1
    return Batch(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        position_ids=positions(attention_mask).to(device),
        audio=backend.audio_features(processor, clips, device),
        answer_starts=tuple(width - n for n in answer_lengths),
    )


def build_batch(
    processor: Any,
    prompts: Sequence[str],
    audios: Sequence[np.ndarray],
    answers: Sequence[str | Sequence[int]],
    *,
    backend: Backend,
    device: Any = "cpu",
) -> Batch:
    """Tokenize ``prompts`` (:func:`tokenize_prompt`), expand each one's audio placeholder
    for its clip (16 kHz float32) and append its answer (text, tokenized alone with
    ``add_special_tokens=False``, or token ids) right after it; left-pad the rows
    (:func:`collate`). An empty answer gives the prompt alone. The scoring engine does the
    same in stages, with each reference's prompt tokenized once."""
    if not len(prompts) == len(audios) == len(answers) > 0:
        raise ValueError(
            f"{len(prompts)} prompts, {len(audios)} clips and {len(answers)} answers: "
            "give one of each per item, at least one item"
        )
    tokenizer = processor.tokenizer
    rows: list[list[int]] = []
    answer_lengths: list[int] = []
    for prompt, audio, answer in zip(prompts, audios, answers, strict=True):
        answer_ids = (
            tokenizer.encode(answer, add_special_tokens=False)
            if isinstance(answer, str)
            else [int(t) for t in answer]
        )
        tokens = backend.audio_tokens(processor, len(audio))
        ids = expand(tokenize_prompt(processor, prompt), tokens, processor.audio_token_id)
        rows.append(ids + answer_ids)
        answer_lengths.append(len(answer_ids))
    return collate(
        rows, answer_lengths, audios, processor=processor, backend=backend, device=device
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
