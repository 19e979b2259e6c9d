"""Score tables written as committed part sets: crash-safe, resumable, idempotent.

An output directory (local or ``s3://``) of the batch job::

    utterances/part-<key>.parquet    one part per part set and table (tables with rows only)
    words/part-<key>.parquet
    phones/part-<key>.parquet
    errors/part-<key>.parquet
    _commits/<key>.json              the part set's commit: its ids, error reasons, audio time
    summary.json                     written when a run has finished

Each table is a directory of Parquet parts with the :data:`apa.tables.SCHEMAS`, so
:func:`apa.tables.read_table` and :func:`apa.tables.read_assessments` (hence ``apa evaluate
--pred <out>``) read it as they read the output of ``apa score``.

The protocol for one part set (one writer batch, key ``uuid4().hex``):

1. each table part is written whole (:func:`apa.storage.write_bytes`) under a pending name,
   ``<table>/_pending-<key>.parquet``; Parquet readers skip names starting with ``_``;
2. the commit ``_commits/<key>.json`` is written whole: from here on the part set counts;
3. each pending part is moved to ``<table>/part-<key>.parquet`` (a rename locally, a
   server-side copy on S3: either way the final object appears whole).

:func:`recover` runs at the start of every run. It finishes step 3 for committed part sets a
crash interrupted, and deletes parts (and half-written ``.partial-`` files) whose key has no
commit (the commit is the only record of what is done): those come from a run that died
between a part set's tables and its commit, and their utterances are not counted as done,
so they are scored again. Hence a reader never sees
rows of an uncommitted part set, a resumed run neither loses nor duplicates rows, and
rerunning a finished job changes nothing. Keys are random rather than derived from the
batch's ids because Ray Data does not cut batches the same way twice.
"""

from __future__ import annotations

import io
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from apa import storage
from apa.log import get_logger
from apa.schema import Assessment, ErrorRecord
from apa.scoring.scorer import ScorerInfo
from apa.tables import TABLES, assessments_to_tables, errors_to_table

log = get_logger(__name__)

COMMITS_DIR = "_commits"
PENDING_PREFIX = "_pending-"
PART_PREFIX = "part-"


class Commit(BaseModel):
    """What one committed part set holds: the ids it scored, the ids it recorded as errors
    (with their reasons), the audio seconds it scored, and the rows of each table part."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    scored: list[str]
    errors: dict[str, str]
    """utterance id -> error reason"""
    audio_seconds: float
    rows: dict[str, int]
    """table -> rows in its part (tables without rows have no part)"""
    scorer: ScorerInfo | None = None
    """the scorer that produced the assessments; ``None`` when every row was an error
    that never reached it"""

    @property
    def ids(self) -> list[str]:
        return [*self.scored, *self.errors]


def _table_uri(out: str, table: str, name: str) -> str:
    return storage.resolve(storage.resolve(out, table), name)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def commit_part_set(
    out: str,
    assessments: Sequence[Assessment],
    errors: Sequence[ErrorRecord],
    *,
    audio_seconds: float,
    scorer: ScorerInfo | None,
) -> Commit:
    """Write one part set of results into ``out`` by the protocol above; returns its commit."""
    ids = [a.utterance_id for a in assessments] + [e.utterance_id for e in errors]
    if len(set(ids)) != len(ids):
        raise ValueError(f"a part set holds an id twice: {sorted(ids)[:10]}")
    key = uuid.uuid4().hex
    tables = assessments_to_tables(assessments) | {"errors": errors_to_table(errors)}
    written = {name: t.num_rows for name, t in tables.items() if t.num_rows}
    for name in written:
        parquet = _parquet_bytes(tables[name])
        storage.write_bytes(_table_uri(out, name, f"{PENDING_PREFIX}{key}.parquet"), parquet)
    commit = Commit(
        key=key,
        scored=[a.utterance_id for a in assessments],
        errors={e.utterance_id: e.reason for e in errors},
        audio_seconds=round(audio_seconds, 3),
        rows=written,
        scorer=scorer,
    )
    storage.write_bytes(
        storage.resolve(storage.resolve(out, COMMITS_DIR), f"{key}.json"),
        commit.model_dump_json().encode(),
    )
    _publish(out, commit)
    return commit


def _publish(out: str, commit: Commit) -> None:
    """Move a committed part set's pending parts to their final names (idempotent)."""
    for name in commit.rows:
        pending = _table_uri(out, name, f"{PENDING_PREFIX}{commit.key}.parquet")
        if storage.exists(pending):
            final = _table_uri(out, name, f"{PART_PREFIX}{commit.key}.parquet")
            fs, src = storage.filesystem(pending)
            fs.move(src, storage.filesystem(final)[1])


def _list(directory: str) -> Iterator[tuple[pafs.FileSystem, pafs.FileInfo]]:
    fs, path = storage.filesystem(directory)
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=False)
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.File:
            yield fs, info


def read_commits(out: str) -> list[Commit]:
    """Every commit in ``out`` (none for a new or empty directory)."""
    commits = []
    for fs, info in _list(storage.resolve(out, COMMITS_DIR)):
        if info.base_name.endswith(".json"):
            with fs.open_input_stream(info.path, compression=None) as stream:
                commits.append(Commit.model_validate_json(stream.read()))
    return commits


def recover(out: str) -> list[Commit]:
    """Bring ``out`` to a committed state before a run (see the module docstring): publish
    committed parts a crash left pending, delete uncommitted ones and stray partial files.
    Returns the commits, whose ids are done. Raises ``ValueError`` when two commits claim
    the same id (a directory written by something else than this protocol)."""
    commits = read_commits(out)
    keys = {c.key for c in commits}
    removed = 0
    for c in commits:
        _publish(out, c)
    for table in TABLES:
        for fs, info in _list(storage.resolve(out, table)):
            key = _key_of(info.base_name)
            if ".partial-" in info.base_name or (key is not None and key not in keys):
                fs.delete_file(info.path)
                removed += 1
    for fs, info in _list(storage.resolve(out, COMMITS_DIR)):
        if ".partial-" in info.base_name:
            fs.delete_file(info.path)
            removed += 1
    done = Counter(i for c in commits for i in c.ids)
    twice = sorted(i for i, n in done.items() if n > 1)
    if twice:
        raise ValueError(f"{out}: ids committed more than once: {twice[:10]}")
    if commits or removed:
        log.info("output_recovered", output=out, commits=len(commits), removed_uncommitted=removed)
    return commits


def _key_of(name: str) -> str | None:
    """``part-<key>.parquet`` or ``_pending-<key>.parquet`` -> ``<key>``; ``None`` for names
    this protocol does not write (left alone)."""
    for prefix in (PART_PREFIX, PENDING_PREFIX):
        if name.startswith(prefix) and name.endswith(".parquet"):
            return name[len(prefix) : -len(".parquet")]
    return None


def done_ids(commits: Iterable[Commit]) -> set[str]:
    return {i for c in commits for i in c.ids}
