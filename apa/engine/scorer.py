"""The LMM scoring engine: an audio LMM fills the answer template of each utterance.

:class:`LmmScorer` implements the :class:`~apa.scorer.Scorer` protocol for both
families (through :mod:`apa.models.inputs`). For each utterance it builds the instruction
(:func:`apa.lmm.prompt.instruction`) and the answer template
(:class:`~apa.lmm.answer.AnswerTemplate`), and reads every slot as a probability
distribution over the tokens the slot allows; :func:`~apa.lmm.answer.parse_distributions`
turns the distributions into an assessment. Two modes:

``generate`` (the default: what a zero-shot instruct model needs)
    Constrained decoding. The answer's structure is fixed by the reference, so the
    placeholder answer is tokenized once and cut at its ``<|slot|>`` ids into fixed chunks.
    The first forward pass reads the prompt, the audio and the first chunk; at the end of
    each chunk the next-token distribution, restricted to
    :meth:`~apa.lmm.answer.AnswerTemplate.allowed_tokens` and renormalised, is the slot's
    distribution, and its most probable token is the slot's value. The next pass feeds that
    token and the following chunk together, on the KV cache. One pass per slot; every answer
    is well-formed by construction, even from random weights.

``one-pass`` (for a model trained in that format)
    The placeholder answer, ``<|slot|>`` at every slot, goes in with the prompt, and one
    forward pass reads every slot: the distribution of the slot at position ``p`` is the
    output at ``p - 1``. Slots cannot see each other's values.

Rows are left-padded with ``position_ids = cumsum(attention_mask) - 1``; in generate mode
the rows of a batch advance together, each step's chunks left-padded as well, and finished
rows are fed padding. So a batch scores each utterance as it would be scored alone (to float
rounding). The output head is applied only where slots are read.

Scores are expected values over the allowed score tokens (``scores="expected"``) or the most
probable score (``"greedy"``); a pronounced phone is the most probable token.

The work runs in three stages (:class:`~apa.scorer.StagedScorer`), as an LLM engine's
preprocess, engine and postprocess: :meth:`LmmScorer.encode` (host) turns each utterance
into token ids, the audio placeholder expanded for its clip, everything that depends only on
the reference (template, prompt ids, placeholder answer, slot offsets) coming from a bounded
LRU per distinct reference; :meth:`LmmScorer.run` (device, one call at a time) computes the
log-mel features of the batch's clips on the model's device, runs the forward passes and
reads the slots' distributions; :meth:`LmmScorer.decode` (host) reads them into
assessments. Callers overlap the host stages of one batch with the device stage of another
(:func:`apa.scoring.pipeline.score_batches`, the Serve replica's two concurrent batches, the
batch job's two calls per actor).

The generated answer is decoded to text and checked against the template; an answer that
does not fit, or distributions that cannot be read (NaN logits), become an
:class:`~apa.schema.ErrorRecord` (stage ``answer``, ``raw`` holding the answer text), never
an exception. :attr:`LmmScorer.forward_passes` counts the LM forward passes each utterance
took part in (one per slot in generate mode, exactly one in one-pass mode).
"""

from __future__ import annotations

import functools
import math
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from apa.errors import ApaError, AudioError, InputError
from apa.gop.analysis import Alignment, with_timings
from apa.gop.errors import AlignmentError
from apa.lmm.answer import AnswerError, AnswerTemplate, Slot, SlotKind, parse_distributions
from apa.lmm.prompt import (
    ALIGNMENT_USES,
    PROMPT_STYLES,
    WIDE_SPAN_S,
    AlignmentUse,
    PromptStyle,
    instruction,
)
from apa.lmm.vocab import SLOT, add_answer_tokens, check_single_tokens
from apa.models.card import read_card
from apa.models.errors import ModelLoadError
from apa.models.families import by_name
from apa.models.inputs import (
    Batch,
    PromptIds,
    collate,
    expand,
    pad_id,
    text_model_and_head,
    tokenize_prompt,
)
from apa.models.loading import DTYPES, LoadedModel, load_model
from apa.schema import Assessment, ErrorRecord
from apa.scorer import PreparedUtterance, ScoreResult, ScorerInfo

Mode = Literal["one-pass", "generate"]
ScoreReading = Literal["expected", "greedy"]
MODES: tuple[str, ...] = ("one-pass", "generate")
SCORE_READINGS: tuple[str, ...] = ("expected", "greedy")


def adapter_mode(adapter_dir: str | os.PathLike[str] | None) -> Mode:
    """The decoding mode the adapter in ``adapter_dir`` was trained for: its training card's
    ``mode`` (``apa finetune`` trains in the one-pass format and records it; a card from
    before the field means one-pass too), ``generate`` for no adapter or one without an
    ``apa finetune`` card (trained elsewhere, so nothing says it knows the placeholders).

    Raises ``ValueError`` for a card that is not JSON or names no known mode."""
    card = read_card(adapter_dir) if adapter_dir is not None else None
    if card is None:
        return "generate"
    mode = card.get("mode", "one-pass")
    if mode not in MODES:
        raise ValueError(f"{adapter_dir}: unknown mode {mode!r} in its training card")
    return mode


def adapter_prompt(adapter_dir: str | os.PathLike[str] | None) -> PromptStyle:
    """The prompt style the adapter in ``adapter_dir`` was trained with (its
    ``training.json``, written by ``apa finetune``); ``rubric`` for no adapter, or one
    without a recorded style (adapters from before the field, or from elsewhere)."""
    card = read_card(adapter_dir) if adapter_dir is not None else None
    style = (card or {}).get("config", {}).get("prompt", "rubric")
    if style not in PROMPT_STYLES:
        raise ValueError(f"{adapter_dir}: unknown prompt style {style!r} in its training card")
    return style


def adapter_alignment(adapter_dir: str | os.PathLike[str] | None) -> AlignmentUse:
    """Whether the adapter in ``adapter_dir`` was trained with the forced alignment in hand
    (its ``training.json``'s ``alignment``, written by ``apa finetune``); ``off`` for no
    adapter or one without the field."""
    card = read_card(adapter_dir) if adapter_dir is not None else None
    use = (card or {}).get("config", {}).get("alignment", "off")
    if use not in ALIGNMENT_USES:
        raise ValueError(f"{adapter_dir}: unknown alignment {use!r} in its training card")
    return use


_KINDS: tuple[SlotKind, ...] = ("score2", "score10", "pronounced")
_KIND_TOKENS: dict[str, tuple[str, ...]] = {
    kind: AnswerTemplate((), ()).allowed_tokens(Slot(kind, "phone", "accuracy")) for kind in _KINDS
}
"""The allowed tokens of each slot kind (they depend on the kind only)."""
_WIDTHS = tuple(len(_KIND_TOKENS[kind]) for kind in _KINDS)
_WIDTH = max(_WIDTHS)
_HEAD_ROWS = 512
"""Hidden states sent through the output head at once (bounds the logits' memory)."""


REFERENCE_CACHE_SIZE = 4096
"""Distinct references whose template, prompt and placeholder chunks a scorer keeps (an
exam has thousands of learners read the same few sentences)."""


@dataclass(frozen=True)
class Reference:
    """What depends on the reference and the prompt style only, not on the audio: computed
    once per distinct reference (:meth:`LmmScorer.reference`)."""

    template: AnswerTemplate
    prompt: str
    prompt_ids: PromptIds
    """The prompt's ids, its audio placeholder not yet expanded."""
    chunks: tuple[tuple[int, ...], ...]
    """The placeholder answer's ids between slots: ``len(template.slots) + 1`` chunks."""
    kinds: tuple[int, ...]
    """Each slot's kind, as an index into :data:`_KINDS`."""
    answer: tuple[int, ...]
    """The placeholder answer's ids: the chunks joined by the slot token."""
    slot_offsets: tuple[int, ...]
    """Each slot token's index in :attr:`answer`."""
    phone_reads: tuple[int, ...]
    """Per canonical phone (in order), the index in :attr:`answer` of the token whose
    output reads the phone's score slot (the one before the slot): where alignment-informed
    scoring adds the phone's audio (:meth:`LmmScorer._add_alignment`)."""
    word_reads: tuple[tuple[int, ...], ...] = ()
    """Per word (in order), the indices in :attr:`answer` of the tokens whose outputs read
    the word's score slots: where ``+words`` scoring adds the word's audio."""


@dataclass(frozen=True)
class Job:
    """One utterance ready for the model (:meth:`LmmScorer.job`)."""

    item: PreparedUtterance
    reference: Reference
    alignment: Alignment | None = None
    """Where each word and canonical phone is in the audio, for a scorer that uses the
    forced alignment (``alignment="spans"``) and an utterance the aligner could align;
    ``None`` otherwise (the plain path)."""

    @property
    def template(self) -> AnswerTemplate:
        return self.reference.template

    @property
    def prompt(self) -> str:
        return self.reference.prompt

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        return self.reference.chunks

    @property
    def kinds(self) -> tuple[int, ...]:
        return self.reference.kinds


@dataclass(frozen=True)
class Encoded:
    """One utterance as model-ready inputs: the first stage's output
    (:meth:`LmmScorer.encode`), what the device stage (:meth:`LmmScorer.run`) takes."""

    job: Job
    ids: tuple[int, ...]
    """The prompt with the clip's audio tokens, then the answer ids of the first pass (the
    placeholder answer in one-pass mode, the first chunk in generate mode)."""
    answer_length: int
    """How many of :attr:`ids` are the answer (the row's last)."""

    @property
    def samples(self) -> np.ndarray:
        return self.job.item.audio.samples


@dataclass(frozen=True)
class StepFeed:
    """What one later pass of constrained generation feeds the model (:func:`step_feeds`):
    every row still answering gets its previous slot's value (chosen on the device, written
    at ``(value_rows, value_cols)`` of :attr:`ids`) and the answer's next chunk, left-padded
    to the step's widest feed."""

    ids: torch.Tensor
    """``(rows, width)`` the chunk ids, the pad id elsewhere and at the value's place."""
    mask: torch.Tensor
    """``(rows, width)`` 1 at the fed tokens."""
    positions: torch.Tensor
    """``(rows, width)`` each fed token's position (0 at padding)."""
    value_rows: torch.Tensor
    value_cols: torch.Tensor
    rows: int
    """How many rows this pass feeds."""

    def to(self, device: torch.device) -> StepFeed:
        return StepFeed(
            *(t.to(device) for t in (self.ids, self.mask, self.positions)),
            self.value_rows.to(device),
            self.value_cols.to(device),
            self.rows,
        )


def step_feeds(encoded: Sequence[Encoded], pad_id: int) -> list[StepFeed]:
    """Every later pass's feed for a batch in generate mode, built up front on the host:
    what each pass feeds depends on the references' chunks and the rows' lengths only (the
    values chosen are written in on the device), so the device loop does tensor work only."""
    jobs = [e.job for e in encoded]
    steps = max(len(job.kinds) for job in jobs)
    seen = np.array([len(e.ids) for e in encoded], dtype=np.int64)  # tokens so far, per row
    feeds = []
    for k in range(1, steps):
        fed = np.array([1 + len(job.chunks[k]) if k < len(job.kinds) else 0 for job in jobs])
        width = int(fed.max())
        first = width - fed  # each row's first fed column (its value's)
        cols = np.arange(width)
        mask = cols[None, :] >= first[:, None]
        ids = np.full((len(jobs), width), pad_id, dtype=np.int64)
        for i, job in enumerate(jobs):
            if fed[i]:
                ids[i, first[i] + 1 :] = job.chunks[k]
        positions = np.where(mask, seen[:, None] + cols[None, :] - first[:, None], 0)
        rows = np.flatnonzero(fed)
        feeds.append(
            StepFeed(
                ids=torch.from_numpy(ids),
                mask=torch.from_numpy(mask.astype(np.int64)),
                positions=torch.from_numpy(positions),
                value_rows=torch.from_numpy(rows),
                value_cols=torch.from_numpy(first[rows]),
                rows=len(rows),
            )
        )
        seen += fed
    return feeds


@dataclass(frozen=True)
class Read:
    """What the model put in one job's slots (the device stage's output): the token chosen
    ``(slots,)`` and the distribution over each slot's allowed tokens ``(slots, width)``
    (in :meth:`AnswerTemplate.allowed_tokens` order, 0 past the kind's tokens)."""

    tokens: np.ndarray
    probs: np.ndarray


def load_lmm_scorer(
    ref: str,
    *,
    adapter: str | None = None,
    merge_adapter: bool = False,
    dtype: str = "auto",
    device: str = "auto",
    mode: Mode | None = None,
    scores: ScoreReading = "expected",
    prompt: PromptStyle | None = None,
    alignment: AlignmentUse | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> LmmScorer:
    """Load model ``ref`` (see :func:`apa.models.loading.load_model`) with the answer tokens
    added to its tokenizer and embeddings before the adapter goes on (so an adapter's
    trained rows for them are kept), and wrap it in an :class:`LmmScorer`. ``prompt=None``
    asks in the style the adapter was trained with (:func:`adapter_prompt`;
    ``rubric`` without an adapter), and ``mode=None`` decodes the way it was trained to
    answer (:func:`adapter_mode`: ``one-pass`` for an ``apa finetune`` adapter, ``generate``
    otherwise): a one-pass adapter read slot by slot sees real scores where it learned
    placeholders, and scores worse. ``alignment=None`` uses the forced alignment where the
    adapter was trained with it (:func:`adapter_alignment`)."""

    def add_tokens(model: Any, processor: Any) -> None:
        add_answer_tokens(processor.tokenizer, model)

    loaded = load_model(
        ref,
        adapter=adapter,
        merge_adapter=merge_adapter,
        dtype=dtype,
        device=device,
        cache_dir=cache_dir,
        prepare=add_tokens,
    )
    try:
        if prompt is None:
            prompt = adapter_prompt(loaded.adapter_path)
        if mode is None:
            mode = adapter_mode(loaded.adapter_path)
        if alignment is None:
            alignment = adapter_alignment(loaded.adapter_path)
    except ValueError as e:  # a training.json that is not JSON or names no known style/mode
        raise ModelLoadError("adapter_failed", f"adapter {adapter!r}: {e}") from None
    return LmmScorer(loaded, mode=mode, scores=scores, prompt=prompt, alignment=alignment)


class LmmScorer:
    """Scores utterances with an audio LMM (see the module docstring).

    ``loaded``'s tokenizer must hold the answer tokens
    (:func:`~apa.lmm.vocab.add_answer_tokens`; :func:`load_lmm_scorer` adds them), each a
    single token inside the model's vocabulary; otherwise ``ValueError``.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        mode: Mode = "generate",
        scores: ScoreReading = "expected",
        prompt: PromptStyle = "rubric",
        alignment: AlignmentUse = "off",
        reference_cache_size: int = REFERENCE_CACHE_SIZE,
    ) -> None:
        if prompt not in PROMPT_STYLES:
            raise ValueError(f"prompt must be one of {PROMPT_STYLES}, not {prompt!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if scores not in SCORE_READINGS:
            raise ValueError(f"scores must be one of {SCORE_READINGS}, not {scores!r}")
        if alignment not in ALIGNMENT_USES:
            raise ValueError(f"alignment must be one of {ALIGNMENT_USES}, not {alignment!r}")
        if alignment != "off" and mode != "one-pass":
            raise ValueError(
                "alignment-informed scoring is one-pass only: a model learns to read the "
                "alignment by fine-tuning, and apa finetune trains in the one-pass format"
            )
        self.loaded = loaded
        self.mode: Mode = mode
        self.scores: ScoreReading = scores
        self.prompt: PromptStyle = prompt
        """The instruction's style (:func:`apa.lmm.prompt.instruction`)."""
        self.alignment: AlignmentUse = alignment
        """``spans`` (``spans+next``): each utterance is force-aligned (:meth:`align`) and
        each canonical phone's audio reaches the model at the phone (and before the previous
        phone: :meth:`_add_alignment`)."""
        self._aligners = threading.local()
        self._alignments: weakref.WeakKeyDictionary[
            PreparedUtterance, Alignment | AlignmentError
        ] = weakref.WeakKeyDictionary()
        self._alignments_lock = threading.Lock()
        self.backend = by_name(loaded.family).backend()
        self.processor = loaded.processor
        self.tokenizer = loaded.processor.tokenizer
        self._text_model, self._head = text_model_and_head(loaded.model)
        ids = check_single_tokens(self.tokenizer)
        vocab = self._head.weight.shape[0]
        if max(ids.values()) >= vocab:
            raise ValueError(
                f"answer token ids reach {max(ids.values())} but the model's output has "
                f"{vocab} rows: add the tokens to the model too (add_answer_tokens)"
            )
        self.slot_id = ids[SLOT]
        self._audio_id = self.processor.audio_token_id
        self._tokenizer_lock = threading.Lock()
        self._device_lock = threading.Lock()
        self._device = torch.device(loaded.device)
        self._dtype = DTYPES[loaded.dtype]
        # Allowed ids per slot kind, padded to one width; ``valid`` marks the real entries.
        index = torch.zeros((len(_KINDS), _WIDTH), dtype=torch.long)
        valid = torch.zeros((len(_KINDS), _WIDTH), dtype=torch.bool)
        for k, kind in enumerate(_KINDS):
            allowed = [ids[t] for t in _KIND_TOKENS[kind]]
            index[k, : len(allowed)] = torch.tensor(allowed)
            valid[k, : len(allowed)] = True
        self._allowed = index.to(self._device)
        self._valid = valid.to(self._device)
        self.reference = functools.lru_cache(maxsize=reference_cache_size)(self._reference)
        """:meth:`_reference` behind a bounded LRU cache (``cache_info()`` counts hits)."""
        self.forward_passes = 0
        """LM forward passes, counted once per utterance taking part in each."""
        self.utterances = 0
        """Utterances that reached the model."""
        self._thread_counts = threading.local()

    @property
    def info(self) -> ScorerInfo:
        return ScorerInfo(
            name=self.loaded.name,
            backend=self.loaded.family,
            model_is_random=self.loaded.is_random,
            adapter=self.loaded.adapter,
            device=self.loaded.device,
        )

    @property
    def forward_passes_per_utterance(self) -> float | None:
        """Mean LM forward passes per utterance so far; ``None`` before any."""
        return self.forward_passes / self.utterances if self.utterances else None

    def thread_counts(self) -> tuple[int, int]:
        """(LM forward passes, utterances that reached the model) counted by the device
        stages run in the calling thread so far: the difference across a call is that
        call's, however many other threads score at the same time (the batch job's actors
        take two calls at once; :attr:`forward_passes` counts them together)."""
        counts = self._thread_counts
        return getattr(counts, "passes", 0), getattr(counts, "utterances", 0)

    def reset_counts(self) -> None:
        """Zero :attr:`forward_passes`, :attr:`utterances` and the reference cache (its
        statistics too): what was scored so far (a load's self-check probe) is not the
        caller's work. Threads' counts are read as differences and stay."""
        with self._device_lock:
            self.forward_passes = self.utterances = 0
        self.reference.cache_clear()

    def _count(self, passes: int, utterances: int) -> None:
        """Add to the totals and to the calling thread's counts (under the device lock)."""
        counts = self._thread_counts
        counts.passes = getattr(counts, "passes", 0) + passes
        counts.utterances = getattr(counts, "utterances", 0) + utterances
        self.forward_passes += passes
        self.utterances += utterances

    def score(self, batch: Sequence[PreparedUtterance]) -> list[ScoreResult]:
        """The three stages in a row: :meth:`encode`, :meth:`run`, :meth:`decode`."""
        encoded = self.encode(batch)
        ready = [e for e in encoded if isinstance(e, Encoded)]
        reads = iter(self.decode(ready, self.run(ready)) if ready else [])
        return [next(reads) if isinstance(e, Encoded) else e for e in encoded]

    # -- the stages --------------------------------------------------------------------
    # encode and decode are host work, safe to run in other threads while run (the device
    # work, one call at a time) goes on: the tokenizer is used under a lock.

    def cost(self, item: PreparedUtterance) -> float:
        """The tokens of ``item``'s first pass (0 for an item :meth:`encode` refuses)."""
        try:
            return len(self._encode(self.job(item, align=False)).ids)
        except ApaError:
            return 0

    def encode(self, batch: Sequence[PreparedUtterance]) -> list[Encoded | ErrorRecord]:
        """Host stage: each utterance's token ids (its reference's prompt and answer from
        the cache, the audio placeholder expanded for its clip), or the error that keeps it
        from the model (audio too long or too short, a reference the template cannot
        hold)."""
        out: list[Encoded | ErrorRecord] = []
        for item in batch:
            try:
                out.append(self._encode(self.job(item)))
            except ApaError as e:
                out.append(e.record(item.utterance.id))
        return out

    def run(self, encoded: Sequence[Encoded]) -> list[Read]:
        """Device stage: the model reads every slot of a batch (features, forward passes,
        the output head at the slots), one call at a time."""
        # generate mode's later passes: host work, done before the device is taken
        feeds = None if self.mode == "one-pass" else step_feeds(encoded, pad_id(self.tokenizer))
        with self._device_lock, torch.inference_mode():
            self._count(0, len(encoded))
            return self._one_pass(encoded) if feeds is None else self._generate(encoded, feeds)

    def decode(self, encoded: Sequence[Encoded], reads: Sequence[Read]) -> list[ScoreResult]:
        """Host stage: each utterance's assessment from what the model put in its slots,
        or the answer error."""
        return [self._result(e.job, r) for e, r in zip(encoded, reads, strict=True)]

    # -- preparing -----------------------------------------------------------------------

    def job(self, item: PreparedUtterance, *, align: bool = True) -> Job:
        """``item``'s template, prompt and placeholder chunks, and its forced alignment
        where the scorer uses it (:meth:`align`; not with ``align=False``). Raises
        :class:`~apa.errors.AudioError` for audio the backend cannot take whole and
        :class:`~apa.errors.InputError` for a reference the template cannot hold."""
        utterance = item.utterance
        limit = self.backend.max_audio_seconds
        if limit is not None and item.audio.duration_s > limit:
            raise AudioError(
                "too_long",
                f"{utterance.id}: {item.audio.duration_s:.1f} s of audio, but "
                f"{self.backend.family} takes at most {limit:g} s",
            )
        phones = tuple(tuple(word) for word in utterance.phones or ())
        try:
            with self._tokenizer_lock:
                reference = self.reference(utterance.text, tuple(utterance.words), phones)
        except ValueError as e:
            raise InputError("invalid_reference", f"{utterance.id}: {e}") from None
        aligned = self.align(item) if align and self.alignment != "off" else None
        return Job(item, reference, aligned if isinstance(aligned, Alignment) else None)

    def align(self, item: PreparedUtterance) -> Alignment | AlignmentError:
        """``item``'s forced alignment (:meth:`apa.gop.aligner.GopAligner.align`, one
        aligner per thread), or why the aligner could not align it: then the utterance is
        scored on the plain path. Computed once per item while the item lives (training
        reuses its examples' items every epoch and validation)."""
        with self._alignments_lock:
            known = self._alignments.get(item)
        if known is not None:
            return known
        aligner = getattr(self._aligners, "aligner", None)
        if aligner is None:
            from apa.gop.aligner import GopAligner  # pocketsphinx: only where it is used

            aligner = self._aligners.aligner = GopAligner()
        utt = item.utterance
        try:
            result: Alignment | AlignmentError = aligner.align(item.audio, utt.words, utt.phones)
        except AlignmentError as e:
            result = e
        with self._alignments_lock:
            self._alignments[item] = result
        return result

    def remember_alignments(
        self, items: Sequence[PreparedUtterance], results: Sequence[Alignment | AlignmentError]
    ) -> None:
        """Take alignments computed elsewhere (:func:`apa.gop.aligner.align_many`, in
        parallel processes) as :meth:`align`'s for ``items``."""
        with self._alignments_lock:
            for item, result in zip(items, results, strict=True):
                self._alignments[item] = result

    def _reference(
        self, text: str, words: tuple[str, ...], phones: tuple[tuple[str, ...], ...]
    ) -> Reference:
        """The template, prompt and placeholder chunks of a reference (``ValueError`` for
        one the template cannot hold); cached by :attr:`reference`."""
        template = AnswerTemplate.from_reference(list(words), [list(p) for p in phones])
        text = instruction(text, list(words), [list(p) for p in phones], style=self.prompt)
        prompt = self.backend.prompt(self.processor, text)
        ids = self.tokenizer.encode(template.placeholder_text(), add_special_tokens=False)
        chunks: list[tuple[int, ...]] = []
        start = 0
        for end in [j for j, t in enumerate(ids) if t == self.slot_id] + [len(ids)]:
            chunks.append(tuple(ids[start:end]))
            start = end + 1
        if len(chunks) != len(template.slots) + 1:
            raise RuntimeError(
                f"the placeholder answer has {len(chunks) - 1} slot tokens for "
                f"{len(template.slots)} slots"
            )
        kinds = tuple(_KINDS.index(s.kind) for s in template.slots)
        slot_offsets = tuple(j for j, t in enumerate(ids) if t == self.slot_id)
        phone_reads = tuple(
            offset - 1
            for slot, offset in zip(template.slots, slot_offsets, strict=True)
            if slot.level == "phone" and slot.kind == "score2"
        )
        word_reads = tuple(
            tuple(
                offset - 1
                for slot, offset in zip(template.slots, slot_offsets, strict=True)
                if slot.level == "word" and slot.word == w
            )
            for w in range(len(words))
        )
        return Reference(
            template,
            prompt,
            tokenize_prompt(self.processor, prompt),
            tuple(chunks),
            kinds,
            answer=tuple(ids),
            slot_offsets=slot_offsets,
            phone_reads=phone_reads,
            word_reads=word_reads,
        )

    def _encode(self, job: Job, mode: Mode | None = None) -> Encoded:
        """``job``'s first-pass ids in ``mode`` (the scorer's by default)."""
        samples = len(job.item.audio.samples)
        tokens = self.backend.audio_tokens(self.processor, samples)
        if tokens < 1:
            raise AudioError(
                "too_short",
                f"{job.item.utterance.id}: {samples} samples of audio, too short for "
                f"one {self.backend.family} audio token",
            )
        answer = job.reference.answer if (mode or self.mode) == "one-pass" else job.chunks[0]
        ids = (*expand(job.reference.prompt_ids, tokens, self._audio_id), *answer)
        return Encoded(job, ids, len(answer))

    def _batch(self, encoded: Sequence[Encoded]) -> Batch:
        batch = collate(
            [e.ids for e in encoded],
            [e.answer_length for e in encoded],
            [e.samples for e in encoded],
            processor=self.processor,
            backend=self.backend,
            device=self._device,
        )
        return batch.to(self._device, self._dtype)

    # -- the model -----------------------------------------------------------------------

    def _forward(self, rows: int, **inputs: Any) -> Any:
        """One LM forward pass that ``rows`` utterances take part in."""
        self._count(rows, 0)
        return self._text_model(**inputs)

    def _read_slots(
        self, hidden: torch.Tensor, kinds: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For hidden states ``(n, hidden)`` just before slots of ``kinds`` ``(n,)``: each
        slot's distribution over its allowed tokens ``(n, width)`` (float64, 0 past the
        kind's tokens) and the most probable token's id ``(n,)``."""
        probs, chosen = [], []
        for start in range(0, hidden.shape[0], _HEAD_ROWS):
            h, k = hidden[start : start + _HEAD_ROWS], kinds[start : start + _HEAD_ROWS]
            logits = self.allowed(self._head(h), k, -torch.inf).double()
            probs.append(torch.softmax(logits, dim=-1))
            chosen.append(
                self._allowed[k].gather(1, logits.argmax(dim=-1, keepdim=True)).squeeze(1)
            )
        return torch.cat(probs), torch.cat(chosen)

    def slot_states(self, jobs: Sequence[Job]) -> tuple[torch.Tensor, torch.Tensor]:
        """One-pass mode's forward pass: the jobs' placeholder answers after their prompts,
        and the hidden state just before every slot (it predicts the slot), in job and
        template order: ``(slots, hidden)``, with each slot's kind ``(slots,)`` (an index
        into the allowed-token table). Gradients flow when called outside
        ``torch.inference_mode``: fine-tuning (:mod:`apa.finetune`) trains through it."""
        return self._slot_states([self._encode(job, "one-pass") for job in jobs])

    def _slot_states(self, encoded: Sequence[Encoded]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self._batch(encoded)
        inputs = self.backend.first_pass_inputs(self._text_model, batch)
        if any(e.job.alignment is not None for e in encoded):
            inputs["inputs_embeds"] = self._add_alignment(inputs["inputs_embeds"], batch, encoded)
        out = self._forward(
            len(encoded),
            **inputs,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        )
        rows, cols, kinds = [], [], []
        for i, (e, start) in enumerate(zip(encoded, batch.answer_starts, strict=True)):
            offsets = e.job.reference.slot_offsets
            rows += [i] * len(offsets)
            cols += [start + j - 1 for j in offsets]  # the output before a slot predicts it
            kinds += e.job.kinds
        where = torch.tensor([rows, cols], device=self._device)
        hidden = out.last_hidden_state[where[0], where[1]]
        return hidden, torch.tensor(kinds, device=self._device)

    def _add_alignment(
        self, embeds: torch.Tensor, batch: Batch, encoded: Sequence[Encoded]
    ) -> torch.Tensor:
        """``embeds`` ``(rows, length, hidden)`` with, for every aligned job, each canonical
        phone's audio (the mean of the audio embeddings its aligned span covers: at least
        one) added at the two places that read the phone's slots: the token before its score
        slot (the phone's name) and the score slot itself (before its pronounced slot).
        With ``+next``, the next phone's audio is also added one token before that name
        token (a token no slot is read from): a causal model then scores a phone having
        seen its right neighbour, which tells a substituted neighbour's sound that the
        aligner let into this phone's span from this phone's own. With ``+words``, each
        word's audio (the mean over the word's aligned span) is added at the tokens that
        read the word's score slots: how much of the word sounds wrong does not depend on
        where its phones' boundaries fell. With ``+wide``, a phone span shorter than
        :data:`WIDE_SPAN_S` is widened to it around its centre (clipped to the clip).
        Audio embeddings are spread evenly over the clip (25 per second for Qwen2-Audio,
        12.5 for Phi-4), so a span in seconds maps to embeddings by the clip's duration.
        Out of place: gradients reach the audio encoder through the additions too."""
        rows, length, hidden = embeds.shape
        flat = embeds.reshape(rows * length, hidden)
        sources: list[int] = []  # audio embeddings, by their row in ``flat``
        groups: list[int] = []  # the span (pooled row) each source belongs to
        counts: list[int] = []  # per span, its sources
        targets: list[int] = []  # rows of ``flat`` that get a pooled span added
        pooled_rows: list[int] = []  # per target, the span added there
        audio = (batch.input_ids == self._audio_id).cpu()
        parts = set(self.alignment.split("+"))
        for i, e in enumerate(encoded):
            alignment = e.job.alignment
            if alignment is None:
                continue
            columns = audio[i].nonzero().squeeze(1).tolist()
            n = len(columns)
            duration = len(e.samples) / e.job.item.audio.sample_rate
            at = i * length + batch.answer_starts[i]
            reads = e.job.reference.phone_reads
            spans: list[tuple[float, float, list[int]]] = []  # span, where it is added
            for k, (phone, read) in enumerate(zip(alignment.phones, reads, strict=True)):
                where = [at + read, at + read + 1]
                if "next" in parts and k > 0:  # also before the previous phone's name
                    where.append(at + reads[k - 1] - 1)
                start_s, end_s = phone.start_s, phone.end_s
                if "wide" in parts and end_s - start_s < WIDE_SPAN_S:
                    centre = (start_s + end_s) / 2
                    start_s, end_s = centre - WIDE_SPAN_S / 2, centre + WIDE_SPAN_S / 2
                spans.append((start_s, end_s, where))
            if "words" in parts:
                for word, word_reads in zip(
                    alignment.words, e.job.reference.word_reads, strict=True
                ):
                    spans.append((word.start_s, word.end_s, [at + r for r in word_reads]))
            for start_s, end_s, where in spans:
                first = min(n - 1, max(0, int(start_s * n / duration)))
                stop = max(first + 1, min(n, math.ceil(end_s * n / duration)))
                sources += [i * length + columns[c] for c in range(first, stop)]
                groups += [len(counts)] * (stop - first)
                targets += where
                pooled_rows += [len(counts)] * len(where)
                counts.append(stop - first)
        if not counts:
            return embeds
        device = embeds.device
        pooled = flat.new_zeros((len(counts), hidden)).index_add(
            0, torch.tensor(groups, device=device), flat[torch.tensor(sources, device=device)]
        ) / torch.tensor(counts, device=device, dtype=flat.dtype).unsqueeze(1)
        added = flat.index_add(
            0,
            torch.tensor(targets, device=device),
            pooled[torch.tensor(pooled_rows, device=device)],
        )
        return added.reshape(rows, length, hidden)

    def allowed(self, values: torch.Tensor, kinds: torch.Tensor, fill: float) -> torch.Tensor:
        """``values`` over the vocabulary ``(n, vocab)`` (logits, target probabilities) of
        slots of ``kinds`` ``(n,)``, narrowed to each slot's allowed tokens in
        :meth:`AnswerTemplate.allowed_tokens` order: ``(n, width)``, ``fill`` past the kind's
        tokens."""
        return values.gather(1, self._allowed[kinds]).masked_fill(~self._valid[kinds], fill)

    @property
    def head(self) -> Any:
        """The output head (``lm_head``; a peft wrapper's trainable copy when it has one)."""
        return self._head

    def _one_pass(self, encoded: Sequence[Encoded]) -> list[Read]:
        probs, chosen = self._read_slots(*self._slot_states(encoded))
        probs_all, chosen_all = probs.cpu().numpy(), chosen.cpu().numpy()
        reads, at = [], 0
        for e in encoded:
            n = len(e.job.kinds)
            reads.append(Read(tokens=chosen_all[at : at + n], probs=probs_all[at : at + n]))
            at += n
        return reads

    def _generate(self, encoded: Sequence[Encoded], feeds: Sequence[StepFeed]) -> list[Read]:
        jobs = [e.job for e in encoded]
        n_rows = len(jobs)
        steps = max(len(job.kinds) for job in jobs)
        kinds = np.zeros((n_rows, steps), dtype=np.int64)
        for i, job in enumerate(jobs):
            kinds[i, : len(job.kinds)] = job.kinds
        kinds = torch.from_numpy(kinds).to(self._device)
        feeds = [feed.to(self._device) for feed in feeds]
        batch = self._batch(encoded)
        out = self._forward(
            n_rows,
            **self.backend.first_pass_inputs(self._text_model, batch),
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=True,
        )
        mask = batch.attention_mask
        probs, chosen = self._read_slots(out.last_hidden_state[:, -1], kinds[:, 0])
        all_probs, all_chosen = [probs], [chosen]
        for k, feed in enumerate(feeds, start=1):
            # Each row still answering feeds its previous slot's token and the next chunk.
            ids = feed.ids.clone()
            ids[feed.value_rows, feed.value_cols] = chosen[feed.value_rows]
            mask = torch.cat([mask, feed.mask], dim=1)
            out = self._forward(
                feed.rows,
                input_ids=ids,
                attention_mask=mask,
                position_ids=feed.positions,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            probs, chosen = self._read_slots(out.last_hidden_state[:, -1], kinds[:, k])
            all_probs.append(probs)
            all_chosen.append(chosen)
        probs_all = torch.stack(all_probs, dim=1).cpu().numpy()  # (rows, steps, width)
        chosen_all = torch.stack(all_chosen, dim=1).cpu().numpy()
        return [
            Read(tokens=chosen_all[i, : len(job.kinds)], probs=probs_all[i, : len(job.kinds)])
            for i, job in enumerate(jobs)
        ]

    # -- reading -------------------------------------------------------------------------

    def _result(self, job: Job, read: Read) -> Assessment | ErrorRecord:
        """The assessment of one job, or the answer error with the answer text as ``raw``."""
        uid = job.item.utterance.id
        ids = list(job.chunks[0])
        for token, chunk in zip(read.tokens.tolist(), job.chunks[1:], strict=True):
            ids += [token, *chunk]
        with self._tokenizer_lock:
            raw = self.tokenizer.decode(
                ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
        probs = read.probs.tolist()
        widths = [_WIDTHS[k] for k in job.kinds]
        try:
            job.template.read_text(raw)
            assessment = parse_distributions(
                job.template,
                [p[:w] for p, w in zip(probs, widths, strict=True)],
                utterance_id=uid,
                reference_text=job.item.utterance.text,
                model=self.loaded.name,
                model_is_random=self.loaded.is_random,
                greedy=self.scores == "greedy",
            )
        except AnswerError as e:
            return e.record(uid).model_copy(update={"raw": raw})
        if self.alignment == "off":
            return assessment
        if job.alignment is None:
            return assessment.model_copy(update={"scoring_path": "plain"})
        # the alignment the model read is also the words' and phones' timings
        timed = with_timings(assessment, job.alignment.words)
        return timed.model_copy(update={"scoring_path": "aligned"})
