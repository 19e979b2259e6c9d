"""In-process scoring: utterances in, one assessment or error record per input, in input order.

Work goes in windows: a window of utterances is prepared (phones, audio), its prepared ones
are sorted by audio length and cut into batches (so a batch holds clips of similar length and
pads little), scored, and the window's results are yielded back in input order. Memory is
bounded by the window, whatever the input size.

A scorer must return one result per input with the input's id; a batch whose scorer raises
is retried utterance by utterance, and an utterance that still raises becomes a
``model.failed`` error row, so one bad input cannot take a run down. Every assessment is
stamped with the scorer's name and ``model_is_random``, whatever the backend wrote.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence

from apa.audio import AudioConfig
from apa.lexicon import Lexicon
from apa.log import get_logger
from apa.prepare import prepare
from apa.schema import Assessment, ErrorRecord, Utterance
from apa.scorer import PreparedUtterance, Scorer, ScoreResult
from apa.text import DEFAULT_MAX_TEXT_CHARS

log = get_logger(__name__)

OnResult = Callable[[ScoreResult, float], None]
"""Called once per input with its result and its audio seconds (0 for errors)."""


class ScorerContractError(RuntimeError):
    """The scorer broke its contract (wrong number of results, wrong ids): a bug, not bad input."""


def length_batches(prepared: Sequence[PreparedUtterance], batch_size: int) -> list[list[int]]:
    """Indices of ``prepared`` cut into batches of similar audio length (longest first, so a
    memory problem shows on the first batch rather than the last).

    >>> from types import SimpleNamespace as NS
    >>> items = [NS(audio=NS(duration_s=d)) for d in (3.0, 1.0, 9.0, 2.0, 8.0)]
    >>> length_batches(items, 2)
    [[2, 4], [0, 3], [1]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(prepared)), key=lambda i: -prepared[i].audio.duration_s)
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


def score_prepared(
    scorer: Scorer, items: Sequence[PreparedUtterance | ErrorRecord], batch_size: int
) -> list[ScoreResult]:
    """Score a window of prepared items: error records pass through, the prepared ones go
    in :func:`length_batches` through :func:`score_batch`; results in input order."""
    results: list[ScoreResult | None] = [p if isinstance(p, ErrorRecord) else None for p in items]
    ready_at = [i for i, p in enumerate(items) if isinstance(p, PreparedUtterance)]
    ready = [items[i] for i in ready_at]
    for batch in length_batches(ready, batch_size):
        for j, result in zip(batch, score_batch(scorer, [ready[j] for j in batch]), strict=True):
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
    while chunk := list(itertools.islice(it, window)):
        prepared = [
            prepare(u, lexicon=lexicon, audio_config=audio_config, max_text_chars=max_text_chars)
            for u in chunk
        ]
        results = score_prepared(scorer, prepared, batch_size)
        for p, result in zip(prepared, results, strict=True):
            if on_result is not None:
                seconds = p.audio.duration_s if isinstance(result, Assessment) else 0.0
                on_result(result, seconds)
            yield result
