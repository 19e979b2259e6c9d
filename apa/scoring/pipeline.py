"""In-process scoring: utterances in, one assessment or error record per input, in input order.

Work goes in windows: a window of utterances is prepared (phones, audio), its prepared ones
are cut into batches of similar cost (so a batch pads little), scored, and the window's
results are yielded back in input order. The next window is prepared in a helper thread
while one is scored, so the model does not wait for audio to be read and decoded between
windows. Memory is bounded by two windows, whatever the input size.

A staged scorer (:class:`~apa.scorer.StagedScorer`, the LMM engine) has the batches of a
window overlapped (:func:`score_batches`): while batch ``k`` is on the device, batch ``k+1``
is encoded and batch ``k-1`` decoded in a helper thread, so the device does not wait for
host work between batches.

A scorer must return one result per input with the input's id; a batch whose scorer raises
is retried utterance by utterance, and an utterance that still raises becomes a
``model.failed`` error row, so one bad input cannot take a run down. Every assessment is
stamped with the scorer's name and ``model_is_random``, whatever the backend wrote.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from apa.audio import AudioConfig
from apa.lexicon import Lexicon
from apa.log import get_logger
from apa.prepare import prepare
from apa.schema import Assessment, ErrorRecord, Utterance
from apa.scorer import PreparedUtterance, Scorer, ScoreResult, StagedScorer
from apa.text import DEFAULT_MAX_TEXT_CHARS

log = get_logger(__name__)

OnResult = Callable[[ScoreResult, float], None]
"""Called once per input with its result and its audio seconds (0 for errors)."""


class ScorerContractError(RuntimeError):
    """The scorer broke its contract (wrong number of results, wrong ids): a bug, not bad input."""


def length_batches(
    prepared: Sequence[PreparedUtterance],
    batch_size: int,
    cost: Callable[[PreparedUtterance], float] | None = None,
) -> list[list[int]]:
    """Indices of ``prepared`` cut into batches of similar ``cost`` (default: audio length),
    the largest first, so a memory problem shows on the first batch rather than the last.

    >>> from types import SimpleNamespace as NS
    >>> items = [NS(audio=NS(duration_s=d)) for d in (3.0, 1.0, 9.0, 2.0, 8.0)]
    >>> length_batches(items, 2)
    [[2, 4], [0, 3], [1]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    size = cost or (lambda item: item.audio.duration_s)
    costs = [size(item) for item in prepared]
    order = sorted(range(len(prepared)), key=lambda i: -costs[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def score_batch(scorer: Scorer, batch: Sequence[PreparedUtterance]) -> list[ScoreResult]:
    """``scorer.score`` with the contract checked, failures isolated, results stamped."""
    try:
        results = scorer.score(batch)
    except Exception as e:  # noqa: BLE001 - isolate whatever the backend raised
        if len(batch) > 1:
            log.warning("batch_failed_retrying_singly", size=len(batch), error=repr(e))
            return [r for item in batch for r in score_batch(scorer, [item])]
        uid = batch[0].utterance.id
        log.error("utterance_failed", utterance_id=uid, error=repr(e))
        return [
            ErrorRecord(
                utterance_id=uid,
                stage="model",
                reason="model.failed",
                message=f"{type(e).__name__}: {e}",
            )
        ]
    return checked_results(scorer, batch, results)


def checked_results(
    scorer: Scorer, batch: Sequence[PreparedUtterance], results: Sequence[ScoreResult]
) -> list[ScoreResult]:
    """``results`` of ``batch`` with the contract checked and the assessments stamped."""
    expected = [item.utterance.id for item in batch]
    got = [r.utterance_id for r in results]
    if got != expected:
        raise ScorerContractError(f"scorer returned results for {got}, expected {expected}")
    info = scorer.info
    return [
        r.model_copy(update={"model": info.name, "model_is_random": info.model_is_random})
        if isinstance(r, Assessment)
        else r
        for r in results
    ]


def concurrency_guard(scorer: Scorer) -> AbstractContextManager[Any]:
    """What a caller that scores batches from several threads at once holds around each
    call: nothing for a staged scorer (its device stage serialises itself, and its host
    stages are meant to run beside it), a lock for any other scorer (not known to be
    thread-safe: the GOP aligner's decoder is not)."""
    return nullcontext() if isinstance(scorer, StagedScorer) else threading.Lock()


def score_batches(
    scorer: Scorer, batches: Sequence[Sequence[PreparedUtterance]]
) -> Iterator[list[ScoreResult]]:
    """Each batch's results (as :func:`score_batch` gives them), in order. A staged scorer's
    host stages run in a helper thread beside its device stage: ``encode`` of the next batch
    and ``decode`` of the previous one overlap ``run`` of the current one. A batch whose
    stages raise goes through :func:`score_batch` again (which isolates the failure)."""
    if not isinstance(scorer, StagedScorer) or len(batches) < 2:
        for batch in batches:
            yield score_batch(scorer, batch)
        return
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="apa-host") as host:
        encoding = host.submit(scorer.encode, batches[0])
        decoding: tuple[int, Future[list[ScoreResult]] | None] | None = None
        for k in range(len(batches)):
            current = encoding
            if k + 1 < len(batches):
                encoding = host.submit(scorer.encode, batches[k + 1])
            decoded = _run_stage(scorer, current, host)
            if decoding is not None:
                yield _finish(scorer, batches[decoding[0]], decoding[1])
            decoding = (k, decoded)
        assert decoding is not None
        yield _finish(scorer, batches[decoding[0]], decoding[1])


def _run_stage(
    scorer: StagedScorer, encoding: Future[list[Any]], host: ThreadPoolExecutor
) -> Future[list[ScoreResult]] | None:
    """The device stage of an encoded batch, then its decoding submitted to ``host``:
    the future of its results with the errors of ``encode`` in place, or ``None`` when a
    stage raised (the batch is then scored again by :func:`score_batch`)."""
    try:
        encoded = encoding.result()
        ready = [e for e in encoded if not isinstance(e, ErrorRecord)]
        outputs = scorer.run(ready) if ready else []
    except Exception as e:  # noqa: BLE001 - score_batch isolates it again, item by item
        log.warning("staged_batch_failed", error=repr(e))
        return None

    def decode() -> list[ScoreResult]:
        done = iter(scorer.decode(ready, outputs) if ready else [])
        return [e if isinstance(e, ErrorRecord) else next(done) for e in encoded]

    return host.submit(decode)


def _finish(
    scorer: Scorer,
    batch: Sequence[PreparedUtterance],
    decoded: Future[list[ScoreResult]] | None,
) -> list[ScoreResult]:
    if decoded is not None:
        try:
            return checked_results(scorer, batch, decoded.result())
        except ScorerContractError:
            raise
        except Exception as e:  # noqa: BLE001 - as in _run_stage
            log.warning("staged_batch_failed", error=repr(e))
    return score_batch(scorer, batch)


def score_prepared(
    scorer: Scorer, items: Sequence[PreparedUtterance | ErrorRecord], batch_size: int
) -> list[ScoreResult]:
    """Score a window of prepared items: error records pass through, the prepared ones go
    in :func:`length_batches` (of similar device cost for a staged scorer: the LMM engine's
    rows are padded to the batch's longest token sequence, which depends on the reference
    text as much as on the audio) through :func:`score_batches`; results in input order."""
    results: list[ScoreResult | None] = [p if isinstance(p, ErrorRecord) else None for p in items]
    ready_at = [i for i, p in enumerate(items) if isinstance(p, PreparedUtterance)]
    ready = [items[i] for i in ready_at]
    cost = scorer.cost if isinstance(scorer, StagedScorer) else None
    batches = length_batches(ready, batch_size, cost)
    scored = score_batches(scorer, [[ready[j] for j in batch] for batch in batches])
    for batch, batch_results in zip(batches, scored, strict=True):
        for j, result in zip(batch, batch_results, strict=True):
            results[ready_at[j]] = result
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def score_utterances(
    utterances: Iterable[Utterance],
    scorer: Scorer,
    *,
    batch_size: int = 8,
    window: int | None = None,
    lexicon: Lexicon | None = None,
    audio_config: AudioConfig | None = None,
    max_text_chars: int | None = DEFAULT_MAX_TEXT_CHARS,
    on_result: OnResult | None = None,
) -> Iterator[ScoreResult]:
    """Score ``utterances`` lazily; yields one result per input, in input order (see
    :func:`~apa.prepare.prepare` for ``lexicon``, ``audio_config``,
    ``max_text_chars``)."""
    window = window or max(batch_size * 8, 32)
    it = iter(utterances)

    def prepared(chunk: list[Utterance]) -> list[PreparedUtterance | ErrorRecord]:
        return [
            prepare(u, lexicon=lexicon, audio_config=audio_config, max_text_chars=max_text_chars)
            for u in chunk
        ]

    # The next window is read and decoded in a helper thread while this one is scored.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="apa-prepare") as helper:
        chunk = list(itertools.islice(it, window))
        pending = helper.submit(prepared, chunk) if chunk else None
        while pending is not None:
            items = pending.result()
            chunk = list(itertools.islice(it, window))
            pending = helper.submit(prepared, chunk) if chunk else None
            results = score_prepared(scorer, items, batch_size)
            for p, result in zip(items, results, strict=True):
                if on_result is not None:
                    seconds = p.audio.duration_s if isinstance(result, Assessment) else 0.0
                    on_result(result, seconds)
                yield result
