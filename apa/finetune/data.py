"""Training examples in the one-pass answer format: the engine's job for each utterance and
the soft target of every slot, rendered from the human scores by the same renderer the
scorer parses (:func:`apa.lmm.answer.render`).

The model's input is the prompt, the audio and the placeholder answer (``<|slot|>`` at
every slot, exactly what one-pass scoring feeds); the loss is read at the slots only, so no
slot ever sees a true score (no teacher forcing: a model that sees the word's score in its
input learns to copy it and fails at inference). Slots whose score is ``None`` have no
target and no loss.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from apa.data.inputs import read_utterances
from apa.engine.scorer import Job, LmmScorer
from apa.errors import ApaError
from apa.gop.aligner import align_many
from apa.gop.errors import AlignmentError
from apa.lmm.answer import render
from apa.lmm.vocab import check_single_tokens
from apa.log import get_logger
from apa.prepare import prepare
from apa.schema import ErrorRecord, Utterance
from apa.scorer import PreparedUtterance

log = get_logger("apa.finetune.data")

GROUPS: tuple[str, ...] = ("sentence", "word", "phone", "pronounced")
"""Slot groups with a loss each: sentence scores, word scores, phone scores, pronounced
phones."""


@dataclass(frozen=True)
class Example:
    """One utterance ready to train on."""

    item: PreparedUtterance
    job: Job
    slots: tuple[int, ...]
    """Indices (template order) of the slots with a target."""
    ids: tuple[tuple[int, ...], ...]
    """Per target slot, the token ids it allows."""
    probs: tuple[tuple[float, ...], ...]
    """Per target slot, the target probability of each allowed id."""
    groups: tuple[int, ...]
    """Per target slot, its index in :data:`GROUPS`."""


def _group(level: str, kind: str) -> int:
    return GROUPS.index("pronounced" if kind == "pronounced" else level)


def labelled_utterances(uri: str) -> tuple[list[Utterance], list[ErrorRecord]]:
    """Utterances of ``uri`` (a Speechocean762 directory with ``scores.json`` or a
    manifest with scores); those without human scores become ``input.no_scores`` errors."""
    source = read_utterances(uri)
    kept, errors = [], list(source.errors)
    for utt in source.utterances:
        if utt.human is None:
            errors.append(
                ErrorRecord(
                    utterance_id=utt.id,
                    stage="input",
                    reason="input.no_scores",
                    message=f"{utt.id}: no human scores to train on",
                )
            )
        else:
            kept.append(utt)
    return kept, errors


def build_examples(
    scorer: LmmScorer, utterances: Sequence[Utterance]
) -> tuple[list[Example], list[ErrorRecord]]:
    """Each utterance as an :class:`Example` (audio decoded, template, targets), or the
    error record of why it cannot be one."""
    ids = check_single_tokens(scorer.tokenizer)
    examples: list[Example] = []
    errors: list[ErrorRecord] = []
    ready: list[tuple[Utterance, PreparedUtterance]] = []
    for utt in utterances:
        prepared = prepare(utt)
        if isinstance(prepared, ErrorRecord):
            errors.append(prepared)
        else:
            ready.append((utt, prepared))
    if scorer.alignment != "off" and ready:
        # align the whole split at once, on every core, before the first step
        started = time.perf_counter()
        items = [p for _, p in ready]
        alignments = align_many([(p.audio, p.utterance.words, p.utterance.phones) for p in items])
        scorer.remember_alignments(items, alignments)
        log.info(
            "examples_aligned",
            utterances=len(items),
            failed=sum(isinstance(a, AlignmentError) for a in alignments),
            seconds=round(time.perf_counter() - started, 1),
        )
    for utt, prepared in ready:
        try:
            job = scorer.job(prepared)
            assert utt.human is not None
            rendered = render(utt.human, template=job.template, strict=False)
        except ApaError as e:
            errors.append(e.record(utt.id))
            continue
        except ValueError as e:
            errors.append(
                ErrorRecord(
                    utterance_id=utt.id, stage="input", reason="input.invalid_scores",
                    message=f"{utt.id}: {e}",
                )
            )  # fmt: skip
            continue
        slots, allowed, probs, groups = [], [], [], []
        for k, (slot, target) in enumerate(zip(job.template.slots, rendered.targets, strict=True)):
            if target is None:
                continue
            slots.append(k)
            allowed.append(tuple(ids[t] for t in job.template.allowed_tokens(slot)))
            probs.append(tuple(target))
            groups.append(_group(slot.level, slot.kind))
        examples.append(
            Example(prepared, job, tuple(slots), tuple(allowed), tuple(probs), tuple(groups))
        )
    return examples, errors


@dataclass(frozen=True)
class Targets:
    """A micro-batch's targets over the slots :meth:`LmmScorer.slot_states` returns."""

    index: torch.Tensor
    """``(targets,)``: row of each target slot in the slot-state tensor."""
    dense: torch.Tensor
    """``(targets, vocab)``: target probabilities, 0 outside the slot's allowed ids."""
    groups: torch.Tensor
    """``(targets,)``: each target's group (:data:`GROUPS`)."""


def collate_targets(examples: Sequence[Example], vocab: int, device: torch.device) -> Targets:
    """The targets of ``examples`` aligned with their slot states (concatenated in example
    and template order)."""
    index, groups = [], []
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    offset = 0
    for example in examples:
        for slot, ids, probs, group in zip(
            example.slots, example.ids, example.probs, example.groups, strict=True
        ):
            row = len(index)
            index.append(offset + slot)
            groups.append(group)
            rows += [row] * len(ids)
            cols += ids
            values += probs
        offset += len(example.job.kinds)
    dense = torch.zeros((len(index), vocab))
    dense[rows, cols] = torch.tensor(values)
    return Targets(
        index=torch.tensor(index, dtype=torch.long, device=device),
        dense=dense.to(device),
        groups=torch.tensor(groups, dtype=torch.long, device=device),
    )


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of ``epoch``: a function of the seed and the epoch alone,
    so that a resumed run sees the data in the same order.

    >>> epoch_order(5, 0, 1) == epoch_order(5, 0, 1) != epoch_order(5, 0, 2)
    True
    """
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order
