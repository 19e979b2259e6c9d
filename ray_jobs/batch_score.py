"""The batch scoring job: Ray Data streams audio through a pool of scorer actors into Parquet.

Run it in place (a local Ray is started when there is no cluster) or on a cluster::

    python -m ray_jobs.batch_score --demo
    python -m ray_jobs.batch_score --input s3://b/corpus.jsonl --output s3://b/scores/run1
    ray job submit --address http://HEAD:8265 -- python -m ray_jobs.batch_score --input ...

The pipeline is the core's stage functions (:mod:`apa.batch.rows`) wired into Ray Data::

    input rows (driver: read_utterances, minus ids already committed)
      -> fetch               CPU tasks: audio bytes from a path or s3://
      -> decode_and_prepare  CPU tasks: decode, resample to 16 kHz, canonical phones
      -> ScorerActor         actor pool: load_scorer once per actor, score_batch per call
      -> write               CPU tasks: one committed part set per batch (apa.batch.commits)
      -> driver              counts the commits, logs progress, writes summary.json

Nothing but commits (a few ids and counts per part set) comes back to the driver, so its
memory does not grow with the results. Every input row leaves the writer either in
``utterances`` or in ``errors``; the driver checks that the commits account for every row it
sent and fails the job if not. Rerunning into the same output resumes: committed ids are
skipped, uncommitted parts of a crashed run removed (see :mod:`apa.batch.commits`).

Settings: :class:`apa.batch.settings.BatchSettings` (flags here, ``APA_BATCH_*`` and, for the
scorer, ``APA_*`` in the environment).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import typer
from pydantic import ValidationError

from apa import failpoints, storage
from apa.batch import rows as stages
from apa.batch.commits import Commit, Repairs, done_ids, missing_ids, recover
from apa.batch.settings import BatchSettings
from apa.batch.summary import BatchSummary, summarise_commits
from apa.cli_options import given, setting_flags
from apa.data.inputs import read_utterances
from apa.log import configure_logging, get_logger
from apa.scoring.settings import ScoringSettings
from apa.scoring.summary import SUMMARY_FILE, write_summary
from ray_jobs.runtime import forwarded_env

log = get_logger("ray_jobs.batch_score")


class ScorerActor:
    """The scorer, loaded once per actor (:func:`apa.scoring.registry.load_scorer`); each
    call scores one batch of prepared rows (:func:`apa.batch.rows.score`)."""

    def __init__(self, scoring: ScoringSettings) -> None:
        configure_logging()
        from apa.scoring.registry import load_scorer

        started = time.perf_counter()
        self.batch_size = scoring.batch_size
        self.scorer = load_scorer(scoring)
        log.info(
            "scorer_loaded",
            **self.scorer.info.model_dump(),
            seconds=round(time.perf_counter() - started, 2),
            pid=os.getpid(),
        )

    def __call__(self, batch):
        return stages.score(batch, self.scorer, batch_size=self.batch_size)


def build_dataset(blocks: list, settings: BatchSettings):
    """The job's Ray Data pipeline over input blocks (see the module docstring).

    Ray Data fuses a task stage into the next actor stage when their resources are equal;
    the read and decode tasks ask for ``cpus_per_task`` (default 0.5) so that they stay
    apart from the scorer actors (which ask for ``cpus_per_actor`` and ``num_gpus``) and run
    beside them, instead of inside them while the model (and its GPU) waits.

    Decoding runs far ahead of scoring; without a cap Ray Data lets decoded audio pile up to
    its share of the object store (30 % of RAM), so memory grew with the input (measured:
    2.3 GiB of worker RSS at 1k rows, 6.2 GiB at 10k). ``object_store_mib`` caps the
    job's object-store use, which backpressures the decode tasks instead."""
    import ray.data

    env = {"env_vars": forwarded_env()} if settings.forward_env else None
    common = {"batch_format": "pyarrow", "runtime_env": env}
    task = {**common, "num_cpus": settings.cpus_per_task}
    text_limit = {"max_text_chars": settings.scoring.max_text_chars}
    source = ray.data.from_arrow(blocks)
    # the dataset's own copy of the DataContext: other datasets of the process keep theirs
    limits = source.context.execution_options.resource_limits
    source.context.execution_options.resource_limits = limits.copy(
        object_store_memory=settings.object_store_mib * 2**20
    )
    return (
        source.map_batches(stages.fetch, batch_size=None, fn_kwargs=text_limit, **task)
        .map_batches(stages.decode_and_prepare, batch_size=None, fn_kwargs=text_limit, **task)
        .map_batches(
            ScorerActor,
            fn_constructor_kwargs={"scoring": settings.scoring},
            batch_size=settings.rows_per_actor_call,
            compute=ray.data.ActorPoolStrategy(
                min_size=settings.min_actors, max_size=settings.max_actors
            ),
            num_gpus=settings.num_gpus,
            num_cpus=settings.cpus_per_actor,
            **common,
        )
        .map_batches(
            stages.write,
            fn_kwargs={"out": settings.output_uri},
            batch_size=settings.rows_per_part,
            **task,
        )
    )


def run_batch(settings: BatchSettings) -> BatchSummary:
    """Run the job on the connected Ray cluster; returns the summary (also written as
    ``summary.json`` into the output and logged). Raises ``FileNotFoundError``/``OSError``/
    ``ValueError`` when the input as a whole cannot be read, ``RuntimeError`` when inputs
    are still not committed after ``settings.max_passes`` passes (they are never dropped
    silently).

    A pass streams the inputs not yet done through the pipeline; afterwards the output is
    recovered (:func:`apa.batch.commits.missing_ids`) and any input sent but not committed
    (a write lost to a concurrent run into the same output, or trimmed as its duplicate and
    then lost) goes through another pass."""
    started = time.perf_counter()
    out = settings.output_uri
    repairs = Repairs()
    done = done_ids(recover(out, repairs))
    source = read_utterances(settings.input_uri, texts=settings.texts)
    n_inputs = source.n_inputs
    utterances = [u for u in source.utterances if u.id not in done]
    if settings.limit is not None:  # the first N utterances not yet done; errors all go
        utterances = utterances[: settings.limit]
    rows = list(stages.input_rows(utterances, source.errors, skip=done))
    del source, utterances  # the rows hold all the driver needs
    log.info(
        "inputs_read",
        source=settings.input_uri,
        inputs=n_inputs,
        already_done=len(done),
        to_process=len(rows),
        output=out,
    )
    sent = {row["id"] for row in rows}
    tally = Tally()
    missing, commits, passes = set(sent), None, 0
    while missing and passes < settings.max_passes:
        passes += 1
        todo = [row for row in rows if row["id"] in missing]
        if passes > 1:
            log.warning("pass_again", attempt=passes, missing=len(todo), output=out)
        blocks = list(stages.input_blocks(todo, settings.rows_per_read_block))
        dataset = build_dataset(blocks, settings)  # the blocks go to the object store
        del blocks
        tally.merge(_consume(dataset, len(todo), settings.progress_interval_s))
        commits, missing = missing_ids(out, sent, repairs)
    if commits is None:
        commits = recover(out, repairs)
    if missing:
        raise RuntimeError(
            f"{len(missing)} of {len(sent)} inputs still not committed after "
            f"{settings.max_passes} passes, e.g. {sorted(missing)[:5]}"
        )
    summary = summarise_commits(
        commits,
        processed=len(sent),
        wall_seconds=time.perf_counter() - started,
        output=out,
        audio_seconds_this_run=tally.audio_seconds,
        repairs=repairs,
        passes=passes,
    )
    write_summary(out, summary)
    remaining = n_inputs - summary.inputs
    log.info("job_summary", **summary.model_dump(), remaining=remaining)
    return summary


@dataclass
class Tally:
    """This run's counts, kept by the driver instead of the commits (whose ids would make
    the driver's memory grow with the input)."""

    processed: int = 0
    scored: int = 0
    audio_seconds: float = 0.0
    part_sets: int = 0

    def add(self, commit: Commit) -> None:
        self.processed += len(commit.ids)
        self.scored += len(commit.scored)
        self.audio_seconds += commit.audio_seconds
        self.part_sets += 1

    def merge(self, other: Tally) -> None:
        self.processed += other.processed
        self.scored += other.scored
        self.audio_seconds += other.audio_seconds
        self.part_sets += other.part_sets


def _consume(dataset, total: int, interval_s: float) -> Tally:
    """Drive the pipeline, counting the commits; log progress every ``interval_s``."""
    tally = Tally()
    started = last = time.perf_counter()
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        for text in batch.column("commit").to_pylist():
            tally.add(Commit.model_validate_json(text))
            failpoints.hit("batch.driver.after_commit_counted")
        now = time.perf_counter()
        if now - last >= interval_s or tally.processed == total:
            last = now
            log.info(
                "progress",
                done=tally.processed,
                total=total,
                scored=tally.scored,
                errors=tally.processed - tally.scored,
                audio_hours=round(tally.audio_seconds / 3600, 4),
                utterances_per_second=round(tally.processed / (now - started), 2),
            )
    return tally


app = typer.Typer(
    name="batch_score",
    help="Score a corpus on Ray: Parquet utterances/words/phones/errors tables + summary.json.",
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
@setting_flags(BatchSettings, ScoringSettings, skip={"scoring"})
def main(*, flags: dict[str, Any]) -> None:
    """Score utterances with a Ray Data pipeline into Parquet tables (resumable)."""
    configure_logging()
    try:
        scoring = ScoringSettings(**given(ScoringSettings, flags))
        settings = BatchSettings(scoring=scoring, **given(BatchSettings, flags))
    except ValidationError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from None
    if settings.demo and settings.input is None:
        from apa.synth.demo import make_demo_corpus

        manifest = make_demo_corpus(storage.parent(settings.input_uri))
        log.info("demo_corpus_written", manifest=str(manifest))
    import ray

    if not ray.is_initialized():
        ray.init(address=settings.address, log_to_driver=True)
    try:
        summary = run_batch(settings)
    except (FileNotFoundError, OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from None
    out = settings.output_uri
    tables = ", ".join(
        storage.resolve(out, t) + "/" for t in ("utterances", "words", "phones", "errors")
    )
    typer.echo(json.dumps(summary.model_dump(), indent=2))
    typer.echo(
        f"{summary.scored} scored, {summary.errors} errors of {summary.inputs} inputs "
        f"in {summary.wall_seconds:.1f} s. Tables: {tables}; summary: "
        f"{storage.resolve(out, SUMMARY_FILE)}",
        file=sys.stdout,
    )


if __name__ == "__main__":
    app()
