"""The batch scoring job: Ray Data streams audio through a pool of scorer actors into Parquet.

Run it in place (a local Ray is started when there is no cluster) or on a cluster::

    python -m ray_jobs.batch_score --demo
    python -m ray_jobs.batch_score --input s3://b/corpus.jsonl --output s3://b/scores/run1
    ray job submit --address http://HEAD:8265 -- python -m ray_jobs.batch_score --input ...

The pipeline is the core's stage functions (:mod:`apa.batch.rows`) wired into Ray Data::

    input rows            a manifest (apa.batch.inputs): one task indexes it on its disk
                          and writes the rows not yet committed as shards; one task per
                          shard turns them into input rows, in parallel;
                          a corpus directory or --texts input: the driver's read_utterances
      -> fetch               CPU tasks: audio bytes from a path or s3://
      -> decode_and_prepare  CPU tasks: decode, resample to 16 kHz, canonical phones
      -> ScorerActor         actor pool: load_scorer once per actor; two calls at once, the
                             LMM engine's host stages beside its device stage
      -> write               CPU tasks: one committed part set per batch (apa.batch.commits)
      -> driver              counts the commits, logs progress, writes summary.json

Nothing but commits (a few ids and counts per part set) comes back to the driver, so its
memory does not grow with the results, and for a manifest nothing per input reaches it
either: not the rows, not their ids (the output's commits are checked with their ids in a
SQLite file on local disk, :func:`apa.batch.commits.settle`). Every input row leaves the
writer either in ``utterances`` or in ``errors``; the driver checks that the commits account
for every row sent and fails the job if not. Rerunning into the same output resumes:
committed ids are skipped, uncommitted parts of a crashed run removed (see
:mod:`apa.batch.commits`).

Settings: :class:`apa.batch.settings.BatchSettings` (flags here, ``APA_BATCH_*`` and, for the
scorer, ``APA_*`` in the environment).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from apa import failpoints, storage
from apa.batch import rows as stages
from apa.batch.commits import Repairs, done_ids, missing_ids, recover, settle
from apa.batch.inputs import (
    INPUTS_DIR,
    Heartbeat,
    InputReport,
    new_key,
    pass_report,
    remove_shards,
    remove_stale_runs,
)
from apa.batch.settings import BatchSettings
from apa.batch.summary import BatchSummary, summarise_commits
from apa.cli_options import given, setting_flags
from apa.data.inputs import read_utterances
from apa.log import configure_logging, get_logger
from apa.models.errors import ModelLoadError
from apa.scoring.pipeline import concurrency_guard
from apa.scoring.settings import ScoringSettings
from apa.scoring.summary import SUMMARY_FILE, write_summary
from ray_jobs.allocators import (
    limit_malloc_arenas,
    purge_arrow_memory_promptly,
    return_free_heap_pages,
)
from ray_jobs.data_stats import bound_block_stats
from ray_jobs.runtime import forwarded_env

log = get_logger("ray_jobs.batch_score")

BLOCK_BYTES = 4 * 2**20
"""the job's Ray Data blocks (decoded audio, mostly): about 20 clips of a few seconds"""


class ScorerActor:
    """The scorer, loaded once per actor (:func:`apa.scoring.registry.load_scorer`); each
    call scores one batch of prepared rows (:func:`apa.batch.rows.score`)."""

    def __init__(self, scoring: ScoringSettings) -> None:
        configure_logging()
        from apa.scoring.registry import load_scorer

        started = time.perf_counter()
        self.batch_size = scoring.batch_size
        try:
            self.scorer = load_scorer(scoring)
        except ModelLoadError as e:
            # the driver gets a failed creation task's error as text only (ActorDiedError):
            # one line it reads back (_consume), the traceback below it
            raise RuntimeError(e.as_text()) from e
        self.guard = concurrency_guard(self.scorer)
        log.info(
            "scorer_loaded",
            **self.scorer.info.model_dump(),
            seconds=round(time.perf_counter() - started, 2),
            pid=os.getpid(),
        )

    def __call__(self, batch):
        with self.guard:  # two calls at once (see build_dataset)
            return stages.score(batch, self.scorer, batch_size=self.batch_size)


def start_index(
    settings: BatchSettings, shards_uri: str, key: bytes, *, limit: int | None, cutoff: int | None
):
    """Start indexing the manifest in one task on a worker (:func:`apa.batch.inputs.
    index_manifest`: the rows still to do become shards under ``shards_uri``); returns the
    reference to its :class:`~apa.batch.inputs.InputReport`. ``ray.get`` of it raises what
    refused the manifest (missing, unreadable, damaged) as that error.

    The task asks for no CPU: it reads while the pipeline starts (the scorer actors load
    their model meanwhile), and must not wait for a CPU the pipeline's tasks hold."""
    import ray

    from apa.batch.inputs import index_manifest

    env = {"env_vars": forwarded_env()} if settings.forward_env else None
    task = ray.remote(index_manifest).options(num_cpus=0, max_retries=1, runtime_env=env)
    return task.remote(
        settings.input_uri,
        settings.output_uri,
        shards_uri=shards_uri,
        key=key,
        min_rows_per_shard=settings.rows_per_read_block,
        limit=limit,
        cutoff=cutoff,
    )


def manifest_dataset(settings: BatchSettings, shards_uri: str, key: bytes, index):
    """The input rows of a manifest still to do, from the shards that the index task
    (``index``, :func:`start_index`) writes: :func:`lanes` tasks, each of which waits for
    the index and then expands its share of the shards (:func:`apa.batch.inputs.
    expand_lane`), one at a time. The driver holds one item per lane, whatever the input.

    The lanes ask for ``cpus_per_task`` like the fetch and decode tasks, so Ray Data fuses
    the three: a lane expands a shard, fetches and decodes it ``rows_per_read_block`` rows
    at a time (:func:`build_dataset`), then takes its next shard, as fast as the scorers
    take the rows. Their workers start, like the scorer actors, while the index reads.
    (A shard per block, re-cut into small blocks by Ray Data's ``repartition`` before the
    fetch, was tried: that stage asks for a whole CPU per task and ran ahead of the fetch
    unchecked, its tiny blocks never tripping the object store's backpressure; on 2 CPUs
    it starved the fetch and decode tasks, ~256 rows scored in 8 minutes.)"""
    import ray
    import ray.data

    from apa.batch.inputs import expand_lane

    n = lanes(settings)

    def expand(batch, *, index, **kwargs):
        report = ray.get(index)
        for lane in batch["lane"].to_pylist():
            yield from expand_lane(shards_uri, lane, n, report, **kwargs)

    env = {"env_vars": forwarded_env()} if settings.forward_env else None
    kwargs = {"index": index, "key": key, "base": storage.parent(settings.input_uri)}
    return ray.data.from_items(
        [{"lane": lane} for lane in range(n)], override_num_blocks=n
    ).map_batches(
        expand,
        fn_kwargs=kwargs,
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=settings.cpus_per_task,
        runtime_env=env,
    )


def lanes(settings: BatchSettings) -> int:
    """Tasks that read a manifest's shards: enough for every CPU of the cluster (as it is
    when the pass starts) to run one, and at least :data:`apa.batch.inputs.SHARDS_WANTED`."""
    import ray

    from apa.batch.inputs import SHARDS_WANTED

    cpus = ray.cluster_resources().get("CPU", 0)
    return max(SHARDS_WANTED, math.ceil(cpus / settings.cpus_per_task))


def build_dataset(source, settings: BatchSettings):
    """The job's Ray Data pipeline over a dataset of input rows (see the module docstring):
    :func:`manifest_dataset`, or ``ray.data.from_arrow`` of blocks built by the driver.

    Ray Data fuses a task stage into the next actor stage when their resources are equal;
    the read and decode tasks ask for ``cpus_per_task`` (default 0.5) so that they stay
    apart from the scorer actors (which ask for ``cpus_per_actor`` and ``num_gpus``) and run
    beside them, instead of inside them while the model (and its GPU) waits.

    A fetch and decode task works on ``rows_per_read_block`` rows at a time and passes its
    rows on in blocks of about :data:`BLOCK_BYTES` (Ray Data's default, 128 MiB, would hold
    back a shard's first ~800 decoded clips until they were all decoded, in one worker).

    Decoding runs far ahead of scoring; without a cap Ray Data lets decoded audio pile up to
    its share of the object store (30 % of RAM), so memory grew with the input (measured:
    2.3 GiB of worker RSS at 1k rows, 6.2 GiB at 10k). ``object_store_mib`` caps the
    job's object-store use, which backpressures the decode tasks instead."""
    import ray.data

    env = {"env_vars": forwarded_env()} if settings.forward_env else None
    common = {"batch_format": "pyarrow", "runtime_env": env}
    task = {**common, "num_cpus": settings.cpus_per_task}
    text_limit = {"max_text_chars": settings.scoring.max_text_chars}
    rows = settings.rows_per_read_block
    # the dataset's own copy of the DataContext: other datasets of the process keep theirs
    limits = source.context.execution_options.resource_limits
    source.context.execution_options.resource_limits = limits.copy(
        object_store_memory=settings.object_store_mib * 2**20
    )
    source.context.target_max_block_size = BLOCK_BYTES
    return (
        source.map_batches(stages.fetch, batch_size=rows, fn_kwargs=text_limit, **task)
        .map_batches(stages.decode_and_prepare, batch_size=rows, fn_kwargs=text_limit, **task)
        .map_batches(
            ScorerActor,
            fn_constructor_kwargs={"scoring": settings.scoring},
            batch_size=settings.rows_per_actor_call,
            compute=ray.data.ActorPoolStrategy(
                min_size=settings.min_actors,
                max_size=settings.max_actors,
                max_concurrent_calls_per_actor=2,
                enable_true_multi_threading=True,
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
    ``ValueError`` when the input as a whole cannot be read, :class:`ModelLoadError` when
    the scorers cannot load the model (nothing is committed), ``RuntimeError`` when inputs
    are still not committed after ``settings.max_passes`` passes (they are never dropped
    silently).

    A pass streams the inputs not yet done through the pipeline; afterwards the output is
    recovered (:func:`apa.batch.commits.recover`) and any input sent but not committed
    (a write lost to a concurrent run into the same output, or trimmed as its duplicate and
    then lost) goes through another pass. A manifest is read on workers, shard by shard
    (:func:`run_manifest_passes`); a Speechocean762 directory or a ``--texts`` sidecar
    input (small by nature) is read by the driver (:func:`run_in_memory_passes`).
    Ray Data's per-block statistics are bounded in the driver
    (:func:`ray_jobs.data_stats.bound_block_stats`), which otherwise grow with the rows."""
    started = time.perf_counter()
    bound_block_stats()
    out = settings.output_uri
    repairs = Repairs()
    streamed = settings.texts is None and not _is_local_dir(settings.input_uri)
    passes_run = run_manifest_passes if streamed else run_in_memory_passes
    sent, n_inputs, passes, tally = passes_run(settings, repairs)
    totals = settle(out, repairs)  # no id in memory: a few numbers per part set
    summary = summarise_commits(
        totals,
        processed=sent,
        wall_seconds=time.perf_counter() - started,
        output=out,
        audio_seconds_this_run=tally.audio_seconds,
        repairs=repairs,
        passes=passes,
        lm_forward_passes_per_utterance=tally.lm_forward_passes_per_utterance,
    )
    write_summary(out, summary)
    remaining = n_inputs - summary.inputs
    log.info("job_summary", **summary.model_dump(), remaining=remaining)
    return summary


def _is_local_dir(uri: str) -> bool:
    return not storage.is_s3(uri) and Path(uri).is_dir()


def run_manifest_passes(settings: BatchSettings, repairs: Repairs) -> tuple[int, int, int, Tally]:
    """The passes over a manifest: nothing per input in the driver's memory.

    Each pass indexes the manifest on a worker, which skips the ids committed in the output
    and writes the rest as shards under ``_inputs/<run>/pass-<n>`` in the output; the
    pipeline reads them (:func:`manifest_dataset`), and the shards are deleted after the pass
    (the whole ``_inputs/<run>`` when the run ends, however it ends). A pass is complete
    when the commits it counted hold as many ids as it sent and the recover after it
    repaired nothing; otherwise the next pass, with the first pass's ``cutoff`` in place of
    ``--limit``, sends exactly the rows still not committed. After ``max_passes`` a
    reader-only pass counts them. Returns (rows sent, inputs in the manifest, passes,
    tally)."""
    out = settings.output_uri
    settle(out, repairs)
    inputs_uri = storage.resolve(out, INPUTS_DIR)
    run = uuid.uuid4().hex[:12]
    run_uri = storage.resolve(inputs_uri, run)
    try:
        with Heartbeat(run_uri):
            if others := remove_stale_runs(inputs_uri, run, settings.stale_inputs_after_s):
                log.warning(
                    "input_shards_of_other_runs",
                    output=out,
                    runs=others[:5],
                    note="of runs still going (their heartbeat is recent): this run never "
                    "reads them",
                )
            return _manifest_passes(settings, repairs, run_uri)
    finally:
        remove_shards(run_uri)


def _manifest_passes(
    settings: BatchSettings, repairs: Repairs, run_uri: str
) -> tuple[int, int, int, Tally]:
    """:func:`run_manifest_passes`' passes, with their shards under ``run_uri``."""
    out = settings.output_uri
    key = new_key()
    tally, first, passes = Tally(), None, 0
    while True:
        passes += 1
        shards_uri = storage.resolve(run_uri, f"pass-{passes}")
        limit = settings.limit if first is None else None
        cutoff = None if first is None else first.cutoff
        index = start_index(settings, shards_uri, key, limit=limit, cutoff=cutoff)
        inputs = manifest_dataset(settings, shards_uri, key, index)
        try:
            this = _consume(build_dataset(inputs, settings), None, settings.progress_interval_s)
        except Exception:
            _index_report(index)  # the manifest's own error, when the index refused it
            raise
        report = pass_report(shards_uri, _index_report(index))
        remove_shards(shards_uri)
        if first is None:
            first = report
            log.info("inputs_read", source=settings.input_uri, output=out, **report.model_dump())
        elif report.sent:
            log.warning("pass_again", attempt=passes, missing=report.sent, output=out)
        tally.merge(this)
        repaired = (repairs.removed, repairs.trimmed)
        settle(out, repairs)
        if this.processed == report.sent and repaired == (repairs.removed, repairs.trimmed):
            break
        if passes == settings.max_passes:
            _fail_if_missing(settings, first, storage.resolve(run_uri, "check"), key)
            break
    return first.sent, first.inputs, passes, tally


def _index_report(index) -> InputReport:
    """The index task's report; raises what refused the manifest as that error
    (``FileNotFoundError``, ``OSError``, ``ValueError``), not as Ray's wrapper of it."""
    import ray

    try:
        return ray.get(index)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, FileNotFoundError | OSError | ValueError):
            raise e.cause from None
        raise


def _fail_if_missing(settings: BatchSettings, first: InputReport, shards_uri: str, key: bytes):
    """Count the rows of the first pass still not committed with a reader-only pass;
    ``RuntimeError`` naming a few when there are any."""
    index = start_index(settings, shards_uri, key, limit=None, cutoff=first.cutoff)
    examples: list[str] = []
    for batch in manifest_dataset(settings, shards_uri, key, index).iter_batches(
        batch_format="pyarrow", batch_size=None
    ):
        examples += batch.column("id").to_pylist()[: 5 - len(examples)]
    missing = pass_report(shards_uri, _index_report(index)).sent
    if missing:
        raise RuntimeError(
            f"{missing} of {first.sent} inputs still not committed after "
            f"{settings.max_passes} passes, e.g. {sorted(examples)}"
        )


def run_in_memory_passes(settings: BatchSettings, repairs: Repairs) -> tuple[int, int, int, Tally]:
    """The passes over a corpus directory or a ``--texts`` input, read by the driver: its
    rows and their ids are held in memory. Returns as :func:`run_manifest_passes`."""
    import ray.data

    out = settings.output_uri
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
    missing, passes = set(sent), 0
    while missing and passes < settings.max_passes:
        passes += 1
        todo = [row for row in rows if row["id"] in missing]
        if passes > 1:
            log.warning("pass_again", attempt=passes, missing=len(todo), output=out)
        blocks = list(stages.input_blocks(todo, settings.rows_per_read_block))
        dataset = build_dataset(ray.data.from_arrow(blocks), settings)
        del blocks  # in the object store now
        tally.merge(_consume(dataset, len(todo), settings.progress_interval_s))
        _, missing = missing_ids(out, sent, repairs)
    if missing:
        raise RuntimeError(
            f"{len(missing)} of {len(sent)} inputs still not committed after "
            f"{settings.max_passes} passes, e.g. {sorted(missing)[:5]}"
        )
    return len(sent), n_inputs, passes, tally


@dataclass
class Tally:
    """This run's counts, kept by the driver instead of the commits (whose ids would make
    the driver's memory grow with the input)."""

    processed: int = 0
    scored: int = 0
    audio_seconds: float = 0.0
    part_sets: int = 0
    lm_forward_passes: int = 0
    lm_utterances: int = 0
    """utterances that reached a language model (0 for a scorer without one)"""

    def add(
        self,
        processed: int,
        scored: int,
        audio_seconds: float,
        lm_forward_passes: int | None = None,
        lm_utterances: int | None = None,
    ) -> None:
        """Count one committed part set (a row of :data:`apa.batch.rows.COMMIT_SCHEMA`;
        its LM counts are null for a scorer without a language model)."""
        self.processed += processed
        self.scored += scored
        self.audio_seconds += audio_seconds
        self.part_sets += 1
        self.lm_forward_passes += lm_forward_passes or 0
        self.lm_utterances += lm_utterances or 0

    def merge(self, other: Tally) -> None:
        self.processed += other.processed
        self.scored += other.scored
        self.audio_seconds += other.audio_seconds
        self.part_sets += other.part_sets
        self.lm_forward_passes += other.lm_forward_passes
        self.lm_utterances += other.lm_utterances

    @property
    def lm_forward_passes_per_utterance(self) -> float | None:
        """This run's LM forward passes per utterance that reached the model; ``None``
        when none did (no language model)."""
        return self.lm_forward_passes / self.lm_utterances if self.lm_utterances else None


def _consume(dataset, total: int | None, interval_s: float) -> Tally:
    """Drive the pipeline, counting the commits; log progress every ``interval_s``
    (``total``: the rows sent, when known before the pass). A scorer that cannot load its
    model fails the pipeline; that failure is raised as the :class:`ModelLoadError` itself,
    not as Ray's wrappers of it."""
    tally = Tally()
    started = last = time.perf_counter()
    try:
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            columns = [batch.column(c).to_pylist() for c in stages.COMMIT_SCHEMA.names[1:]]
            for counts in zip(*columns, strict=True):
                tally.add(*counts)
                failpoints.hit("batch.driver.after_commit_counted")
            now = time.perf_counter()
            if now - last >= interval_s or tally.processed == total:
                last = now
                return_free_heap_pages()
                log.info(
                    "progress",
                    done=tally.processed,
                    total=total,
                    scored=tally.scored,
                    errors=tally.processed - tally.scored,
                    audio_hours=round(tally.audio_seconds / 3600, 4),
                    utterances_per_second=round(tally.processed / (now - started), 2),
                )
    except Exception as e:
        if (cause := ModelLoadError.behind(e)) is not None:
            raise cause from None
        raise
    return tally


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


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
    # before Ray starts its threads and processes (ray_jobs/allocators.py: memory flat)
    arenas_limited = limit_malloc_arenas()
    arrow_purge_set = purge_arrow_memory_promptly()
    configure_logging()
    log.debug(
        "allocators",
        arenas_limited=arenas_limited,
        arenas=os.environ["MALLOC_ARENA_MAX"],
        arrow_purge_set=arrow_purge_set,
        arrow_purge_delay_ms=os.environ["MIMALLOC_PURGE_DELAY"],
    )
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
    # `ray job stop` (and a benchmark's terminate) send SIGTERM: leave through Python, so
    # that the run's clean-up (its input shards in the output) runs
    signal.signal(signal.SIGTERM, _terminated)
    try:
        summary = run_batch(settings)
    except ModelLoadError as e:
        log.error("model_load_failed", reason=e.reason, message=e.message)
        typer.echo(f"error: cannot load the model ({e.reason}): {e.message}", err=True)
        raise typer.Exit(code=2) from None
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
