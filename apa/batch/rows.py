"""The batch job's stages as plain functions over Arrow tables, one row per input.

Ray Data moves Arrow blocks between stages; these functions take and return
``pyarrow.Table`` batches with the schemas below, so the same code runs under Ray Data,
in a test, or in a loop. The row schema, stage by stage:

==========  ================================================================================
stage       columns
==========  ================================================================================
input       ``id``, ``utterance`` (Utterance JSON) or ``error`` (ErrorRecord JSON)
fetch       + ``audio_bytes``: the encoded audio, read from a path or ``s3://``
prepare     − ``audio_bytes``, + ``samples`` (float32 bytes), ``sample_rate``, ``source_*``;
            ``utterance`` now carries its canonical phones (lexicon)
score       ``id``, ``result`` (Assessment or ErrorRecord JSON), ``is_error``,
            ``audio_seconds``, ``scorer`` (ScorerInfo JSON)
write       one row per written part set: ``commit`` (:class:`~apa.batch.commits.Commit` JSON)
==========  ================================================================================

A failure of one input at any stage (unreadable audio, undecodable audio, a word missing
from the lexicon, a model failure) sets its ``error`` and the row travels on to the writer,
which puts it in the ``errors`` table: rows are never dropped and every stage returns as
many rows as it got, so inputs = scored + errors holds by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from apa import failpoints
from apa.audio import Audio, AudioConfig, decode_audio, read_audio_bytes
from apa.batch.commits import Commit, commit_part_set
from apa.errors import ApaError, AudioError, InputError
from apa.lexicon import Lexicon
from apa.prepare import check_text_length, prepare
from apa.schema import Assessment, ErrorRecord, Utterance
from apa.scorer import PreparedUtterance, Scorer, ScorerInfo
from apa.scoring.pipeline import score_prepared
from apa.text import DEFAULT_MAX_TEXT_CHARS

_str = pa.string()
INPUT_SCHEMA = pa.schema([("id", _str), ("utterance", _str), ("error", _str)])
# 64-bit offsets: a block of large audio objects may pass 2 GiB in all, which the 32-bit
# ``binary`` type refuses with ArrowCapacityError (and would take the whole job down).
FETCHED_SCHEMA = INPUT_SCHEMA.append(pa.field("audio_bytes", pa.large_binary()))
PREPARED_SCHEMA = pa.schema(
    [
        ("id", _str),
        ("utterance", _str),
        ("error", _str),
        ("samples", pa.large_binary()),
        ("sample_rate", pa.int32()),
        ("source_sample_rate", pa.int32()),
        ("source_channels", pa.int32()),
        ("source_format", _str),
    ]
)
SCORED_SCHEMA = pa.schema(
    [
        ("id", _str),
        ("result", _str),
        ("is_error", pa.bool_()),
        ("audio_seconds", pa.float64()),
        ("scorer", _str),
        ("lm_forward_passes", pa.int64()),
        ("lm_utterances", pa.int64()),
    ]
)
"""``lm_forward_passes`` and ``lm_utterances``: the LM forward passes and the utterances that
reached the model in the call that scored the row, on the call's first row (0 on the
others, null for a scorer without a language model), so that any grouping of the rows sums
to the calls' totals."""
COMMIT_SCHEMA = pa.schema(
    [
        ("key", _str),
        ("processed", pa.int64()),
        ("scored", pa.int64()),
        ("audio_seconds", pa.float64()),
        ("lm_forward_passes", pa.int64()),
        ("lm_utterances", pa.int64()),
    ]
)
"""What the write stage hands on per committed part set: its key and counts, not its ids.
The driver only counts, so parsing a commit with every id there (Python objects for every
row of the corpus, freed at once) was work for nothing."""


def input_rows(
    utterances: Iterable[Utterance], errors: Iterable[ErrorRecord], *, skip: set[str]
) -> Iterable[dict]:
    """Input rows of the job: the read errors, then the utterances, minus ids in ``skip``
    (already committed by an earlier run)."""
    for e in errors:
        if e.utterance_id not in skip:
            yield {"id": e.utterance_id, "utterance": None, "error": e.model_dump_json()}
    for u in utterances:
        if u.id not in skip:
            yield {"id": u.id, "utterance": u.model_dump_json(), "error": None}


def input_blocks(rows: Iterable[dict], rows_per_block: int) -> Iterable[pa.Table]:
    """Input rows cut into Arrow blocks of ``rows_per_block`` rows (the unit Ray Data
    streams through the read and decode tasks)."""
    block: list[dict] = []
    for row in rows:
        block.append(row)
        if len(block) == rows_per_block:
            yield pa.Table.from_pylist(block, schema=INPUT_SCHEMA)
            block = []
    if block:
        yield pa.Table.from_pylist(block, schema=INPUT_SCHEMA)


def fetch(
    batch: pa.Table,
    *,
    audio_config: AudioConfig | None = None,
    max_text_chars: int | None = DEFAULT_MAX_TEXT_CHARS,
) -> pa.Table:
    """Read each row's encoded audio bytes (local path or ``s3://``), once its reference text
    has passed the length limit (a text over it is ``input.text_too_long`` and its audio is
    never read). The reader checks the
    size before reading and reads through a capped stream (:func:`apa.audio.
    read_audio_bytes`), so a huge, endless or non-regular source costs nothing; any failure
    becomes the row's error (``audio.not_found``, ``audio.unreadable``, ``audio.too_large``,
    ...), never the task's."""
    config = audio_config if audio_config is not None else AudioConfig()
    out = []
    for row in batch.to_pylist():
        row["audio_bytes"] = None
        if row["error"] is None:
            utt = Utterance.model_validate_json(row["utterance"])
            try:
                check_text_length(utt.text, max_text_chars)
                if utt.audio is None:  # as apa.prepare.prepare says it
                    raise InputError("no_audio", f"{utt.id}: no audio reference")
                row["audio_bytes"] = read_audio_bytes(utt.audio, config)
            except ApaError as e:
                row["error"] = e.record(utt.id).model_dump_json()
        out.append(row)
    return pa.Table.from_pylist(out, schema=FETCHED_SCHEMA)


def decode_and_prepare(
    batch: pa.Table,
    *,
    audio_config: AudioConfig | None = None,
    lexicon: Lexicon | None = None,
    max_text_chars: int | None = DEFAULT_MAX_TEXT_CHARS,
) -> pa.Table:
    """Decode and resample each row's audio to 16 kHz mono and fill its canonical phones
    (:func:`apa.prepare.prepare` with CMUdict as the fallback lexicon, as ``apa
    score`` does); failures become the row's error."""
    lexicon = lexicon if lexicon is not None else Lexicon.cmudict()
    out = []
    for row in batch.to_pylist():
        audio_bytes = row.pop("audio_bytes")
        prepared: PreparedUtterance | ErrorRecord | None = None
        if row["error"] is None:
            utt = Utterance.model_validate_json(row["utterance"])
            try:
                audio = decode_audio(audio_bytes, audio_config)
            except AudioError as e:
                prepared = e.record(utt.id)
            else:
                prepared = prepare(utt, lexicon=lexicon, audio=audio, max_text_chars=max_text_chars)
        if isinstance(prepared, ErrorRecord):
            row["error"] = prepared.model_dump_json()
        if isinstance(prepared, PreparedUtterance):
            a = prepared.audio
            row |= {
                "utterance": prepared.utterance.model_dump_json(),
                "samples": np.ascontiguousarray(a.samples, dtype=np.float32).tobytes(),
                "sample_rate": a.sample_rate,
                "source_sample_rate": a.source_sample_rate,
                "source_channels": a.source_channels,
                "source_format": a.source_format,
            }
        out.append(row)
    return pa.Table.from_pylist(out, schema=PREPARED_SCHEMA)


def _prepared(row: dict) -> PreparedUtterance:
    audio = Audio(
        samples=np.frombuffer(row["samples"], dtype=np.float32),
        sample_rate=row["sample_rate"],
        source_sample_rate=row["source_sample_rate"],
        source_channels=row["source_channels"],
        source_format=row["source_format"],
    )
    return PreparedUtterance(utterance=Utterance.model_validate_json(row["utterance"]), audio=audio)


def score(batch: pa.Table, scorer: Scorer, *, batch_size: int) -> pa.Table:
    """Score the prepared rows of ``batch``, cut into model calls of ``batch_size`` clips of
    similar cost (:func:`apa.scoring.pipeline.score_prepared`: batches by the scorer's
    token cost, a staged scorer's stages overlapped, the contract checked, a failing batch
    retried one by one, results stamped).
    Rows that already carry an error pass through; output rows keep the input order."""
    rows = batch.to_pylist()
    items = [
        ErrorRecord.model_validate_json(r["error"]) if r["error"] is not None else _prepared(r)
        for r in rows
    ]
    counts = getattr(scorer, "thread_counts", None)  # an LMM engine's; see SCORED_SCHEMA
    before = counts() if counts is not None else (0, 0)
    results = score_prepared(scorer, items, batch_size)
    failpoints.hit("batch.score.after_scoring")  # the actor dies with its batch scored
    info = scorer.info.model_dump_json()
    lm = None if counts is None else [a - b for a, b in zip(counts(), before, strict=True)]
    out = []
    for i, (row, item, result) in enumerate(zip(rows, items, results, strict=True)):
        is_error = isinstance(result, ErrorRecord)
        out.append(
            {
                "id": row["id"],
                "result": result.model_dump_json(),
                "is_error": is_error,
                "audio_seconds": 0.0 if is_error else item.audio.duration_s,
                "scorer": info,
                "lm_forward_passes": None if lm is None else lm[0] if i == 0 else 0,
                "lm_utterances": None if lm is None else lm[1] if i == 0 else 0,
            }
        )
    return pa.Table.from_pylist(out, schema=SCORED_SCHEMA)


def write(batch: pa.Table, *, out: str) -> pa.Table:
    """Write a batch of scored rows as one committed part set
    (:func:`apa.batch.commits.commit_part_set`); returns its key and counts as a one-row
    table (:data:`COMMIT_SCHEMA`)."""
    if batch.num_rows == 0:
        return pa.Table.from_pylist([], schema=COMMIT_SCHEMA)
    commit = commit_scored(batch.to_pylist(), out=out)
    row = {
        "key": commit.key,
        "processed": len(commit.scored) + len(commit.errors),
        "scored": len(commit.scored),
        "audio_seconds": commit.audio_seconds,
        # pyarrow's sum: null when every row's is (no language model)
        "lm_forward_passes": pc.sum(batch.column("lm_forward_passes")).as_py(),
        "lm_utterances": pc.sum(batch.column("lm_utterances")).as_py(),
    }
    return pa.Table.from_pylist([row], schema=COMMIT_SCHEMA)


def commit_scored(rows: Sequence[dict], *, out: str) -> Commit:
    """Scored rows (the ``score`` schema, as dicts) as one committed part set."""
    assessments = [Assessment.model_validate_json(r["result"]) for r in rows if not r["is_error"]]
    errors = [ErrorRecord.model_validate_json(r["result"]) for r in rows if r["is_error"]]
    scorer = next((r["scorer"] for r in rows if r["scorer"]), None)
    return commit_part_set(
        out,
        assessments,
        errors,
        audio_seconds=sum(r["audio_seconds"] for r in rows),
        scorer=ScorerInfo.model_validate_json(scorer) if scorer else None,
    )
