"""Score tables written as committed part sets: crash-safe, resumable, idempotent, and safe
under task retries and concurrent writers.

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

Writing one part set (:func:`write_steps`, one storage operation per step):

1. each table part is written whole (:func:`apa.storage.write_bytes`) under a pending name,
   ``<table>/_pending-<key>.parquet``; Parquet readers skip names starting with ``_``;
2. the commit ``_commits/<key>.json`` is written whole: from here on the part set counts;
3. each pending part is moved to ``<table>/part-<key>.parquet`` (a rename locally, a
   server-side copy on S3: either way the final object appears whole). If the pending part
   is gone (another run's :func:`recover` removed it before the commit existed) the writer
   writes the final part from the bytes it still holds; then it checks that its commit
   survived and withdraws the parts if not (the task fails and is retried).

**The key is the part set's content address** (:func:`part_set_key`: a hash of its sorted
ids), not a random name. A task that Ray retries after it died at any step (even just after
step 2) rewrites the same names with the same rows: a retry can never commit its ids twice.

:func:`recover` runs at the start and at the end of every run and brings the directory to
a consistent state whatever happened before, in this order (:func:`settle` does the same
without holding the output in memory: it lists the files, the commits and their ids into a
SQLite file on local disk and returns totals instead of the commits):

- commits named in another commit's ``supersedes`` are deleted (an interrupted trim, below);
- a commit whose parts are gone (neither pending nor final) is deleted: its ids are not
  done and are scored again;
- committed parts still pending are published (step 3 for a run that died after step 2);
- parts (and half-written ``.partial-`` files) whose key has no commit are deleted: a run
  died between its tables and its commit, and those ids are not done either. Parts are
  listed *before* commits are read, so a concurrent writer's part whose commit appears in
  between is kept;
- **ids committed more than once** (only two runs writing into the same output at once, or
  Ray cutting a re-executed stage into other batches, can do that) are made unique again:
  each id belongs to the first commit, in key order, that holds it; every later commit
  holding one is *trimmed*: its rows minus the duplicated ids are written as a new part set
  (key derived from the old key and the ids kept, so two runs trimming at once write the
  same thing) whose commit ``supersedes`` the old one, and then the old one is deleted. A
  crash anywhere in a trim is finished by the first bullet or redone from scratch.

Hence a reader never sees rows of an uncommitted part set, a resumed run neither loses nor
duplicates rows, rerunning a finished job changes nothing, and after the last of several
concurrent runs has finished (each ends with :func:`recover` and scores what is still
missing, see :func:`missing_ids`) every input id is in the tables exactly once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from apa import failpoints, storage
from apa.log import get_logger
from apa.schema import Assessment, ErrorRecord
from apa.scorer import ScorerInfo
from apa.tables import TABLES, assessments_to_tables, errors_to_table

log = get_logger(__name__)

COMMITS_DIR = "_commits"
PENDING_PREFIX = "_pending-"
PART_PREFIX = "part-"
_PREFIXES = (PENDING_PREFIX, PART_PREFIX)
MAX_RECOVER_ROUNDS = 8
"""rounds of :func:`recover` (each trims the duplicates it sees) before it gives up"""


class Commit(BaseModel):
    """What one committed part set holds: the ids it scored, the ids it recorded as errors
    (with their reasons), the audio seconds it scored, and the rows of each table part."""

    # ids are read once: pydantic's cache of parsed strings would only hold (up to 16,384
    # of) them in the reading process
    model_config = ConfigDict(frozen=True, extra="forbid", cache_strings="keys")

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
    supersedes: list[str] = []
    """keys of commits this one replaces (a trim of duplicated ids); they are deleted"""

    @property
    def ids(self) -> list[str]:
        return [*self.scored, *self.errors]


class RecoverError(RuntimeError):
    """The output directory did not settle (concurrent writers kept changing it)."""


def part_set_key(ids: Iterable[str], *, salt: str = "") -> str:
    """The content address of a part set: the same ids (and salt) give the same key.

    >>> part_set_key(["b", "a"]) == part_set_key(["a", "b"]) != part_set_key(["a"])
    True
    >>> len(part_set_key(["a"]))
    32
    """
    digest = hashlib.sha256(salt.encode())
    for i in sorted(ids):
        digest.update(b"\x00" + i.encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class PartSet:
    """One part set in memory, ready to write: its commit and each table part's bytes."""

    commit: Commit
    parts: dict[str, bytes] = field(repr=False)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def build_part_set(
    assessments: Sequence[Assessment],
    errors: Sequence[ErrorRecord],
    *,
    audio_seconds: float,
    scorer: ScorerInfo | None,
) -> PartSet:
    """The part set of these results (keyed by :func:`part_set_key` of their ids)."""
    ids = [a.utterance_id for a in assessments] + [e.utterance_id for e in errors]
    if len(set(ids)) != len(ids):
        raise ValueError(f"a part set holds an id twice: {sorted(ids)[:10]}")
    tables = assessments_to_tables(assessments) | {"errors": errors_to_table(errors)}
    parts = {name: _parquet_bytes(t) for name, t in tables.items() if t.num_rows}
    commit = Commit(
        key=part_set_key(ids),
        scored=[a.utterance_id for a in assessments],
        errors={e.utterance_id: e.reason for e in errors},
        audio_seconds=round(audio_seconds, 3),
        rows={name: tables[name].num_rows for name in parts},
        scorer=scorer,
    )
    return PartSet(commit=commit, parts=parts)


def commit_part_set(
    out: str,
    assessments: Sequence[Assessment],
    errors: Sequence[ErrorRecord],
    *,
    audio_seconds: float,
    scorer: ScorerInfo | None,
) -> Commit:
    """Write one part set of results into ``out`` by the protocol above; returns its commit.

    Between steps sit the failpoints ``batch.commit.after_<step>`` (``after_pending``,
    ``after_commit``, ``after_publish``) that fault-injection tests arm."""
    part_set = build_part_set(assessments, errors, audio_seconds=audio_seconds, scorer=scorer)
    for step in write_steps(out, part_set):
        failpoints.hit(f"batch.commit.after_{step}")
    return part_set.commit


def _part_uri(out: str, table: str, prefix: str, key: str) -> str:
    return storage.resolve(storage.resolve(out, table), f"{prefix}{key}.parquet")


def _commit_uri(out: str, key: str) -> str:
    return storage.resolve(storage.resolve(out, COMMITS_DIR), f"{key}.json")


def write_steps(out: str, part_set: PartSet) -> Iterator[str]:
    """Write ``part_set`` into ``out``, one storage operation per step; yields the step
    just done (``"pending"`` after each part, ``"commit"``, ``"publish"`` after each move).
    Tests drive these steps interleaved with other writers and with :func:`recover`, and
    stop them anywhere to play a crash."""
    commit = part_set.commit
    for name, data in part_set.parts.items():
        storage.write_bytes(_part_uri(out, name, PENDING_PREFIX, commit.key), data)
        yield "pending"
    storage.write_bytes(_commit_uri(out, commit.key), commit.model_dump_json().encode())
    yield "commit"
    for name, data in part_set.parts.items():
        _publish_part(out, commit.key, name, data)
        yield "publish"
    if not storage.exists(_commit_uri(out, commit.key)):
        # A concurrent recover removed the commit meanwhile: it trimmed the part set (its
        # ids now live in a replacement) or found its parts gone (it had removed the pending
        # parts as uncommitted just before the commit appeared). The parts just published
        # belong to no commit: withdraw them. Ids no commit holds fail the task, for Ray to
        # retry it.
        _delete_parts(out, commit)
        lost = set(commit.ids)
        for other in iter_commits(out):
            lost.difference_update(other.ids)
        if lost:
            raise RuntimeError(
                f"part set {commit.key} lost its commit to a concurrent recover "
                f"({len(lost)} ids not committed)"
            )


def _publish_part(out: str, key: str, table: str, data: bytes | None) -> bool:
    """Move one committed part from its pending to its final name (idempotent). Without a
    pending part, the final one is written from ``data`` when given. Returns whether the
    final part exists afterwards."""
    pending = _part_uri(out, table, PENDING_PREFIX, key)
    final = _part_uri(out, table, PART_PREFIX, key)
    fs, src = storage.filesystem(pending)
    if fs.get_file_info(src).type == pafs.FileType.File:
        try:
            fs.move(src, storage.filesystem(final)[1])
            return True
        except FileNotFoundError:
            pass  # moved by a concurrent publisher of the same part set
    if storage.exists(final):
        return True
    if data is not None:
        storage.write_bytes(final, data)
        return True
    return False


def _list(directory: str) -> Iterator[tuple[pafs.FileSystem, pafs.FileInfo]]:
    fs, path = storage.filesystem(directory)
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=False)
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.File:
            yield fs, info


def read_commits(out: str) -> list[Commit]:
    """Every commit in ``out`` (none for a new or empty directory), in key order. A commit
    deleted between the listing and the read (a concurrent recover) is left out."""
    return sorted(iter_commits(out), key=lambda c: c.key)


def iter_commits(out: str) -> Iterator[Commit]:
    """:func:`read_commits` one at a time, in listing order: a reader of millions of ids
    (the job's done set, :mod:`apa.batch.inputs`) holds one commit at a time."""
    for fs, info in _list(storage.resolve(out, COMMITS_DIR)):
        if info.base_name.endswith(".json") and ".partial-" not in info.base_name:
            try:
                with fs.open_input_stream(info.path, compression=None) as stream:
                    data = stream.read()
            except FileNotFoundError:
                continue
            yield Commit.model_validate_json(data)


def _delete(uri: str) -> bool:
    fs, path = storage.filesystem(uri)
    try:
        fs.delete_file(path)
        return True
    except FileNotFoundError:
        return False


def _delete_parts(out: str, commit: Commit | _Entry) -> None:
    for table in commit.rows:
        for prefix in (PENDING_PREFIX, PART_PREFIX):
            _delete(_part_uri(out, table, prefix, commit.key))


def _delete_commit(out: str, commit: Commit | _Entry) -> None:
    """Commit first, then parts: a crash in between leaves uncommitted parts, which the next
    recover removes."""
    _delete(_commit_uri(out, commit.key))
    _delete_parts(out, commit)


def _has_parts(out: str, commit: Commit | _Entry, listed: Callable[[str, str], bool]) -> bool:
    """Whether every part of ``commit`` exists, pending or final. ``listed(table, file
    name)`` says whether the listing made before the commits were read had it: a part it
    lacks may have been written since (a concurrent writer), so only those are looked up one
    by one."""
    return all(
        any(listed(t, f"{prefix}{commit.key}.parquet") for prefix in _PREFIXES)
        or any(storage.exists(_part_uri(out, t, prefix, commit.key)) for prefix in _PREFIXES)
        for t in commit.rows
    )


def _read_commit(out: str, key: str) -> Commit | None:
    """The commit ``key`` of ``out``; ``None`` when it is gone (a concurrent recover)."""
    fs, path = storage.filesystem(_commit_uri(out, key))
    try:
        with fs.open_input_stream(path, compression=None) as stream:
            return Commit.model_validate_json(stream.read())
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class _Entry:
    """What a recover round keeps of one commit: no ids (those go to a :class:`_RoundIndex`
    on disk), only what is needed to repair the output and to add up the totals."""

    key: str
    rows: dict[str, int]
    supersedes: tuple[str, ...]
    ids: int
    scored: int
    reasons: dict[str, int]
    audio_seconds: float
    has_scorer: bool

    @classmethod
    def of(cls, commit: Commit) -> _Entry:
        reasons: dict[str, int] = {}
        for reason in commit.errors.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        return cls(
            key=commit.key,
            rows=dict(commit.rows),
            supersedes=tuple(commit.supersedes),
            ids=len(commit.ids),
            scored=len(commit.scored),
            reasons=reasons,
            audio_seconds=commit.audio_seconds,
            has_scorer=commit.scorer is not None,
        )

    @classmethod
    def from_json(cls, text: str) -> _Entry:
        fields = json.loads(text)
        return cls(**{**fields, "supersedes": tuple(fields["supersedes"])})


@dataclass
class CommitTotals:
    """What the commits of an output add up to (:func:`settle`): counts, no ids."""

    commits: int = 0
    """live commits (part sets)"""
    scored: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    """error reason -> ids recorded with it"""
    audio_seconds: float = 0.0
    scorer: ScorerInfo | None = None
    """the scorer of the last commit (in key order) that has one"""

    def add(self, entry: _Entry) -> None:
        self.commits += 1
        self.scored += entry.scored
        self.audio_seconds += entry.audio_seconds
        for reason, n in entry.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n

    @property
    def errors(self) -> int:
        return sum(self.reasons.values())

    @property
    def inputs(self) -> int:
        return self.scored + self.errors


class _RoundIndex:
    """What one recover round knows of an output, in a SQLite file on local disk, so that the
    driver's memory does not grow with the output: the files listed, each commit's
    :class:`_Entry` (and which are live), the keys other commits supersede, and every
    commit's ids (to find the ids committed twice)."""

    PAGE = 256
    """commits read back at a time (:meth:`entries`)"""
    CACHE_KIB = 512
    """SQLite's page cache for the file (its default is 2,000 KiB): the operating system
    caches the file too, and on the 500k-row output of ``benchmarks/batch_memory.py`` the
    round's memory peak in a fresh process went +4.9 -> +2.7 MiB, its time 1.0 -> 1.3-1.5 s"""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(str(path))
        self.db.execute(f"PRAGMA cache_size = -{self.CACHE_KIB}")
        self.db.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            CREATE TABLE files (directory TEXT NOT NULL, name TEXT NOT NULL, key TEXT,
                                stray INTEGER NOT NULL, PRIMARY KEY (directory, name));
            CREATE TABLE commits (key TEXT PRIMARY KEY, entry TEXT NOT NULL,
                                  live INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE superseded (key TEXT PRIMARY KEY) WITHOUT ROWID;
            CREATE TABLE ids (id TEXT NOT NULL, key TEXT NOT NULL);
            """
        )

    def add_files(self, directory: str, names: Iterable[str]) -> None:
        """Files of ``directory`` (a table's or the commits'), by name: a part's key is
        kept, and a half-written ``.partial-`` file is marked stray."""
        self.db.executemany(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
            (
                (
                    directory,
                    name,
                    _key_of(name) if directory != COMMITS_DIR else None,
                    ".partial-" in name,
                )
                for name in names
            ),
        )

    def listed(self, directory: str, name: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM files WHERE directory = ? AND name = ?", (directory, name)
        ).fetchone()
        return row is not None

    def add_commit(self, commit: Commit) -> None:
        entry = _Entry.of(commit)
        self.db.execute(
            "INSERT OR REPLACE INTO commits (key, entry) VALUES (?, ?)",
            (entry.key, json.dumps(dataclasses.asdict(entry))),
        )
        self.db.executemany(
            "INSERT OR IGNORE INTO superseded VALUES (?)", ((k,) for k in entry.supersedes)
        )
        self.db.executemany("INSERT INTO ids VALUES (?, ?)", ((i, entry.key) for i in commit.ids))

    def entries(self) -> Iterator[_Entry]:
        """Every commit's entry in key order, :data:`PAGE` at a time (so the caller may
        change the index between two)."""
        after = ""
        while True:
            page = self.db.execute(
                "SELECT key, entry FROM commits WHERE key > ? ORDER BY key LIMIT ?",
                (after, self.PAGE),
            ).fetchall()
            for _, entry in page:
                yield _Entry.from_json(entry)
            if len(page) < self.PAGE:
                return
            after = page[-1][0]

    def superseded(self, key: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM superseded WHERE key = ?", (key,)).fetchone() is not None
        )

    def set_live(self, key: str) -> None:
        self.db.execute("UPDATE commits SET live = 1 WHERE key = ?", (key,))

    def drop(self, key: str) -> None:
        """Forget the ids of commit ``key`` (deleted)."""
        self.db.execute("DELETE FROM ids WHERE key = ?", (key,))

    def unowned(self) -> Iterator[tuple[str, str]]:
        """(directory, name) of every listed file no live commit owns: a part whose key has
        no live commit, and every stray ``.partial-`` file."""
        yield from self.db.execute(
            """
            SELECT directory, name FROM files
                WHERE stray OR (key IS NOT NULL
                                AND key NOT IN (SELECT key FROM commits WHERE live))
            """
        )

    def duplicated(self) -> Iterator[tuple[str, set[str]]]:
        """Each commit holding ids that a commit earlier in key order holds too, with
        those ids, in key order (each id belongs to the first commit that holds it)."""
        self.db.executescript(
            """
            CREATE INDEX IF NOT EXISTS ids_id ON ids (id, key);
            DROP TABLE IF EXISTS owners;
            CREATE TEMP TABLE owners AS SELECT id, min(key) AS key FROM ids
                GROUP BY id HAVING count(*) > 1;
            """
        )
        rows = self.db.execute(
            """
            SELECT ids.key, ids.id FROM ids JOIN owners ON ids.id = owners.id
                WHERE ids.key != owners.key ORDER BY ids.key
            """
        )
        key, drop = None, set()
        for k, i in rows:
            if k != key and key is not None:
                yield key, drop
                drop = set()
            key = k
            drop.add(i)
        if key is not None:
            yield key, drop

    def close(self) -> None:
        self.db.close()


@dataclass
class Repairs:
    """What :func:`recover` had to repair (counts add up over the calls given the same one)."""

    removed: int = 0
    """uncommitted parts, stray partial files, superseded or part-less commits deleted"""
    trimmed: int = 0
    """commits trimmed because they held ids an earlier commit holds"""


def recover(out: str, repairs: Repairs | None = None) -> list[Commit]:
    """Bring ``out`` to a consistent committed state (see the module docstring) and return
    its commits, whose ids are done, each id in exactly one; what it repaired is added to
    ``repairs``. Raises :class:`RecoverError` when the directory keeps changing under it
    for :data:`MAX_RECOVER_ROUNDS` rounds. The commits (hence every id) are returned in
    memory: a caller of millions of ids wants :func:`settle`."""
    settle(out, repairs)
    return read_commits(out)


def settle(out: str, repairs: Repairs | None = None) -> CommitTotals:
    """:func:`recover` without holding the output in memory: each round writes what it lists
    and reads (files, commits, ids) into a SQLite file on local disk (about 70 bytes an id,
    deleted at the end of the round) and keeps only running totals, so the caller's memory
    does not grow with the output's ids or part sets. Returns what the commits add up to."""
    repairs = repairs if repairs is not None else Repairs()
    for _ in range(MAX_RECOVER_ROUNDS):
        totals, removed, trimmed = _recover_round(out)
        repairs.removed += removed
        repairs.trimmed += trimmed
        if not trimmed:
            return totals
    raise RecoverError(f"{out}: still changing after {MAX_RECOVER_ROUNDS} recover rounds")


def _recover_round(out: str) -> tuple[CommitTotals, int, int]:
    """One pass of :func:`settle`; returns the totals of the live commits, how many files it
    removed and how many commits it trimmed (a trim calls for another pass). What it knows
    of the output is on local disk (:class:`_RoundIndex`), not in memory."""
    totals, removed, trimmed = CommitTotals(), 0, 0
    last_scored_by: str | None = None  # the last live commit, in key order, with a scorer
    with tempfile.TemporaryDirectory(prefix="apa-recover-") as scratch:
        index = _RoundIndex(Path(scratch) / "round.sqlite")
        try:
            for directory in (*TABLES, COMMITS_DIR):
                listing = _list(storage.resolve(out, directory))
                index.add_files(directory, (info.base_name for _, info in listing))
            for commit in iter_commits(out):
                index.add_commit(commit)
            for entry in index.entries():
                superseded = index.superseded(entry.key)
                if superseded or not _has_parts(out, entry, index.listed):
                    if not superseded:
                        log.warning(
                            "commit_without_parts", output=out, key=entry.key, ids=entry.ids
                        )
                    _delete_commit(out, entry)
                    index.drop(entry.key)
                    removed += 1
                    continue
                index.set_live(entry.key)
                for table in entry.rows:
                    if index.listed(table, f"{PENDING_PREFIX}{entry.key}.parquet"):
                        _publish_part(out, entry.key, table, None)
                totals.add(entry)
                if entry.has_scorer:
                    last_scored_by = entry.key
            for directory, name in index.unowned():
                removed += _delete(storage.resolve(storage.resolve(out, directory), name))
            for key, drop in index.duplicated():
                commit = _read_commit(out, key)
                if commit is not None:  # else: deleted under us; the next round sees it
                    _trim(out, commit, drop)
                trimmed += 1
        finally:
            index.close()
    if totals.commits or removed or trimmed:
        log.info(
            "output_recovered",
            output=out,
            commits=totals.commits,
            removed=removed,
            trimmed=trimmed,
        )
    commit = _read_commit(out, last_scored_by) if last_scored_by is not None else None
    totals.scorer = commit.scorer if commit is not None else None
    return totals, removed, trimmed


def _read_part(out: str, table: str, key: str) -> pa.Table | None:
    for prefix in (PART_PREFIX, PENDING_PREFIX):
        fs, path = storage.filesystem(_part_uri(out, table, prefix, key))
        try:
            with fs.open_input_file(path) as f:
                return pq.read_table(f)
        except FileNotFoundError:
            continue
    return None


def _trim(out: str, commit: Commit, drop: set[str]) -> None:
    """Replace ``commit`` by a part set without the ids in ``drop`` (see the module
    docstring); a part set left with no id is just deleted."""
    keep_ids = [i for i in commit.ids if i not in drop]
    log.warning(
        "duplicate_ids_trimmed", output=out, key=commit.key, dropped=len(drop), kept=len(keep_ids)
    )
    if not keep_ids:
        _delete_commit(out, commit)
        return
    parts: dict[str, bytes] = {}
    rows: dict[str, int] = {}
    for table in commit.rows:
        part = _read_part(out, table, commit.key)
        if part is None:  # deleted under us by a concurrent recover: the next round sees it
            return
        kept = part.filter(pc.is_in(part.column("utterance_id"), pa.array(keep_ids)))
        if kept.num_rows:
            parts[table], rows[table] = _parquet_bytes(kept), kept.num_rows
    kept_errors = {i: r for i, r in commit.errors.items() if i not in drop}
    scored = [i for i in commit.scored if i not in drop]
    dropped_share = 1 - len(scored) / len(commit.scored) if commit.scored else 0.0
    replacement = Commit(
        key=part_set_key(keep_ids, salt=f"trim:{commit.key}"),
        scored=scored,
        errors=kept_errors,
        # audio time is not kept per id: share it out by the scored ids kept
        audio_seconds=round(commit.audio_seconds * (1 - dropped_share), 3),
        rows=rows,
        scorer=commit.scorer,
        supersedes=[commit.key],
    )
    for _ in write_steps(out, PartSet(commit=replacement, parts=parts)):
        pass
    _delete_commit(out, commit)


def _key_of(name: str) -> str | None:
    """``part-<key>.parquet`` or ``_pending-<key>.parquet`` -> ``<key>``; ``None`` for names
    this protocol does not write (left alone)."""
    for prefix in (PART_PREFIX, PENDING_PREFIX):
        if name.startswith(prefix) and name.endswith(".parquet"):
            return name[len(prefix) : -len(".parquet")]
    return None


def done_ids(commits: Iterable[Commit]) -> set[str]:
    return {i for c in commits for i in c.ids}


def missing_ids(
    out: str, sent: Iterable[str], repairs: Repairs | None = None
) -> tuple[list[Commit], set[str]]:
    """After a run: :func:`recover` ``out``, then the ids of ``sent`` that no commit holds
    (lost to a task that died for good or to a concurrent run's recover); the run scores
    them again. Returns the commits too."""
    commits = recover(out, repairs)
    return commits, set(sent) - done_ids(commits)
