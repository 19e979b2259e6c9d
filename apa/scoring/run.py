"""``apa score``: read utterances, score them in-process, write the tables and a summary."""

from __future__ import annotations

import time

from apa.data.inputs import read_utterances
from apa.lexicon import Lexicon
from apa.log import get_logger
from apa.schema import Assessment, ErrorRecord
from apa.scoring.pipeline import score_utterances
from apa.scoring.registry import load_scorer
from apa.scoring.settings import ScoringSettings
from apa.scoring.summary import RunSummary, summarise, write_summary
from apa.tables import write_tables

log = get_logger(__name__)

PROGRESS_LOG_SECONDS = 10.0


def run_scoring(
    input_uri: str,
    output_uri: str,
    settings: ScoringSettings,
    *,
    limit: int | None = None,
    progress: bool = False,
) -> RunSummary:
    """Score every input and write ``utterances``/``words``/``phones``/``errors`` Parquet
    tables and ``summary.json`` into ``output_uri``. Inputs = scored + errors, always.

    The input is read before the model is loaded, so an input that cannot be read as a
    whole (``FileNotFoundError``/``OSError``/``ValueError``) fails fast."""
    source = read_utterances(input_uri)
    started = time.perf_counter()
    scorer = load_scorer(settings)
    log.info(
        "scorer_loaded", **scorer.info.model_dump(), seconds=round(time.perf_counter() - started, 2)
    )
    utterances = source.utterances
    read_errors = source.errors
    if limit is not None:  # the first N readable utterances; read errors are all reported
        utterances = utterances[:limit]
    total = len(utterances) + len(read_errors)
    log.info("inputs_read", source=input_uri, utterances=len(utterances), errors=len(read_errors))

    assessments: list[Assessment] = []
    errors: list[ErrorRecord] = list(read_errors)
    audio_seconds = 0.0
    scoring_started = time.perf_counter()
    last_log = scoring_started

    def on_result(result: Assessment | ErrorRecord, seconds: float) -> None:
        nonlocal audio_seconds, last_log
        audio_seconds += seconds
        now = time.perf_counter()
        if now - last_log >= PROGRESS_LOG_SECONDS:
            last_log = now
            log.info(
                "progress",
                done=len(assessments) + len(errors) + 1,
                total=total,
                audio_seconds=round(audio_seconds, 1),
            )

    stream = score_utterances(
        utterances,
        scorer,
        batch_size=settings.batch_size,
        lexicon=Lexicon.cmudict(),
        max_text_chars=settings.max_text_chars,
        on_result=on_result,
    )
    for result in _with_progress(stream, len(utterances), enabled=progress):
        (assessments if isinstance(result, Assessment) else errors).append(result)
    wall = time.perf_counter() - scoring_started

    write_tables(output_uri, assessments, errors)
    summary = summarise(
        scorer.info,
        assessments,
        errors,
        audio_seconds=audio_seconds,
        wall_seconds=wall,
        # LMM scorers count their forward passes; others have no such attribute.
        lm_forward_passes_per_utterance=getattr(scorer, "forward_passes_per_utterance", None),
    )
    write_summary(output_uri, summary)
    log.info("scored", **summary.model_dump(exclude={"scorer"}), output=output_uri)
    return summary


def _with_progress(stream, total: int, *, enabled: bool):
    if not enabled:
        yield from stream
        return
    from rich.progress import Progress

    with Progress(transient=False) as bar:
        task = bar.add_task("scoring", total=total)
        for item in stream:
            bar.advance(task)
            yield item
