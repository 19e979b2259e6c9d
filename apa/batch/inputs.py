"""The batch job's input rows from a manifest, read on workers: neither the driver nor any
worker holds the manifest, its ids, or the ids already done, and scoring starts seconds
after the file has been read, however long it is.

A pass over a manifest has two steps:

1. **Index** (:func:`index_manifest`, one task): the manifest is streamed
   (:func:`apa.data.manifest.stream_rows`) into an :class:`InputIndex`, a SQLite file on
   that worker's local disk, together with the ids already committed in the output
   (streamed from the commits, :func:`apa.batch.commits.iter_commits`). The rows still to
   do are then written, raw and in manifest order, as *shards* of ``rows_per_shard`` rows
   under ``shards_uri`` (in the output's ``_inputs/``, which no table reader looks at).
   Reading the whole file first finds duplicated ids (the last row may repeat the first)
   and keeps a damaged (truncated gzip) manifest from being scored in part.
2. **Expand** (:func:`expand_shard`, one task per shard, in parallel): each shard's rows
   become rows of :data:`apa.batch.rows.INPUT_SCHEMA`, each made what it counts as by
   :func:`apa.data.manifest.row_record` (the rule ``read_manifest`` applies):

   - a row that cannot be read, or has no usable id, is an error under ``<row N>``;
   - rows sharing an id are one ``input.duplicate_id`` error for that id (the index
     gives every such row the numbers of all of them; the first one reports);
   - an id committed in the output (an earlier run's) was left out by the index;
   - with ``limit``, utterances past the first ``limit`` still to do are left out (errors
     all go): the index finds the row where the limit is reached (it reads the rows up to
     there one by one) and reports it as ``cutoff``; the expanders drop utterances after
     it. A later pass of the same run gives ``cutoff`` instead of ``limit``, so it sends
     exactly this pass's rows that are still not committed, and no new ones.

   Each expander writes what it sent (:class:`ShardCounts`) beside its shard;
   :func:`pass_report` adds them up into the pass's :class:`InputReport` for the driver,
   which learns nothing else of the inputs.

The per-row work (a row's utterance, its JSON: ~20 µs) runs in the expanders, so the pass
costs the index's single read of the file (~11 µs a row) plus one shard's expansion before
the first rows flow. Shards are pickles of the index's rows; each carries an HMAC-SHA256
under a key that only the pass's tasks are given (:func:`new_key`), so an expander never
unpickles a file that the pass did not write (a stale shard of another run, or anything put
there by someone who can write into the output). :func:`remove_shards` deletes a pass's
shards. A running job beats a :class:`Heartbeat` under its run's folder; a later run deletes
the shards of runs whose heartbeat has stopped (:func:`remove_stale_runs`: a run killed
outright, which could not delete its own).
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import BaseModel

from apa import storage
from apa.batch.commits import iter_commits
from apa.batch.rows import INPUT_SCHEMA
from apa.data.manifest import row_key, row_record, stream_rows
from apa.errors import ApaError
from apa.log import get_logger
from apa.schema import Utterance

log = get_logger(__name__)

INPUTS_DIR = "_inputs"
"""where in the output a run writes its passes' shards (and removes them); like every name
starting with ``_``, no table reader looks there"""

ROWS_PER_SHARD = 4096
"""most manifest rows per shard (~0.1 s of expanding, ~150 bytes a row on disk)"""

SHARDS_WANTED = 64
"""fewer rows per shard (down to the caller's floor) when the pending rows would fill fewer
shards: a shard is one task's work, so a small input is still spread over many tasks"""

_INSERT_ROWS = 10_000
"""rows per SQLite insert (one transaction for the whole file)"""

_MAC_BYTES = hashlib.sha256().digest_size


class InputReport(BaseModel):
    """What one pass over a manifest found: ``inputs`` distinct input ids in the manifest
    (synthetic ``<row N>`` ids included, duplicates counted once), ``already_done`` of them
    committed before the pass, ``shards`` written, and (once the shards are expanded,
    :func:`pass_report`) ``sent`` rows sent on (``sent_utterances`` of them utterances)."""

    rows: int = 0
    inputs: int = 0
    already_done: int = 0
    shards: int = 0
    sent: int = 0
    sent_utterances: int = 0
    cutoff: int | None = None
    """the manifest row at which ``limit`` was reached (``None``: not reached)"""


class ShardCounts(BaseModel):
    """What one expander sent of its shard."""

    sent: int = 0
    sent_utterances: int = 0


class InputIndex:
    """A manifest's rows and a set of done ids in a SQLite file (``path``): memory stays a
    few MiB (SQLite's page cache) whatever the number of rows; the disk holds about the
    manifest's size again. Rows are kept pickled, as :meth:`pending` gives them.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     index = InputIndex(f"{d}/index.sqlite")
    ...     index.add_done(["b"])
    ...     index.add_rows([(1, {"id": "a"}), (2, {"id": "b"}), (3, {"id": "a"}), (4, {})])
    ...     print(index.counts(), [(n, key, dup) for n, key, _, dup in index.pending()])
    ...     index.close()
    4
    (3, 1) [(1, 'a', [1, 3]), (3, 'a', [1, 3]), (4, '<row 4>', [])]
    """

    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(str(path))
        self.db.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            CREATE TABLE IF NOT EXISTS rows (number INTEGER PRIMARY KEY, key TEXT NOT NULL,
                own INTEGER NOT NULL, row BLOB NOT NULL);
            CREATE TABLE IF NOT EXISTS done (key TEXT PRIMARY KEY) WITHOUT ROWID;
            """
        )

    def close(self) -> None:
        self.db.close()

    def add_done(self, ids: Iterable[str]) -> None:
        """Mark ids done (committed): :meth:`pending` leaves them out."""
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO done VALUES (?)", ((i,) for i in ids))

    def add_rows(self, rows: Iterable[tuple[int, dict | ApaError]]) -> int:
        """Store a manifest's numbered rows (:func:`apa.data.manifest.stream_rows`) in one
        transaction, so a file that fails halfway leaves nothing; returns how many."""
        count = 0
        chunk: list[tuple] = []
        with self.db:
            for number, row in rows:
                key, own = row_key(number, row)
                chunk.append((number, key, own, pickle.dumps(row)))
                if len(chunk) == _INSERT_ROWS:
                    self.db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?)", chunk)
                    count += len(chunk)
                    chunk = []
            self.db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?)", chunk)
            count += len(chunk)
            self.db.executescript(
                """
                CREATE INDEX IF NOT EXISTS rows_key ON rows (key);
                CREATE TABLE dups AS SELECT key, group_concat(number) AS numbers FROM rows
                    WHERE own GROUP BY key HAVING count(*) > 1;
                CREATE UNIQUE INDEX dups_key ON dups (key);
                """
            )
        return count

    def counts(self) -> tuple[int, int]:
        """(distinct input ids, how many of them are done)."""
        inputs = self.db.execute("SELECT count(DISTINCT key) FROM rows").fetchone()[0]
        done = self.db.execute(
            "SELECT count(*) FROM done WHERE key IN (SELECT key FROM rows)"
        ).fetchone()[0]
        return inputs, done

    def pending_rows(self) -> int:
        """How many rows :meth:`pending` gives."""
        return self.db.execute(
            "SELECT count(*) FROM rows WHERE key NOT IN (SELECT key FROM done)"
        ).fetchone()[0]

    def pending(self) -> Iterator[tuple[int, str, bytes, list[int]]]:
        """The rows whose id is not done, in manifest order: (number, id, the row pickled,
        the numbers of every row with its id when it has more than one, else ``[]``)."""
        cursor = self.db.execute(
            """
            SELECT rows.number, rows.key, rows.row, dups.numbers FROM rows
                LEFT JOIN dups ON rows.own AND dups.key = rows.key
                WHERE rows.key NOT IN (SELECT key FROM done) ORDER BY rows.number
            """
        )
        while chunk := cursor.fetchmany(1000):
            for number, key, row, numbers in chunk:
                rows_of_id = sorted(map(int, numbers.split(","))) if numbers else []
                yield number, key, row, rows_of_id


def shard_rows(pending: int, floor: int = 1) -> int:
    """Rows per shard for ``pending`` rows: :data:`SHARDS_WANTED` shards of them, within
    ``floor`` and :data:`ROWS_PER_SHARD`.

    >>> shard_rows(1_000_000, 16), shard_rows(10_000, 16), shard_rows(30, 16)
    (4096, 157, 16)
    """
    return min(ROWS_PER_SHARD, max(floor, -(-pending // SHARDS_WANTED)))


def new_key() -> bytes:
    """A fresh key for one run's shards (given to its index and expand tasks only)."""
    return secrets.token_bytes(32)


def index_manifest(
    uri: str,
    out: str,
    *,
    shards_uri: str,
    key: bytes,
    rows_per_shard: int | None = None,
    min_rows_per_shard: int = 1,
    limit: int | None = None,
    cutoff: int | None = None,
) -> InputReport:
    """Index the manifest ``uri`` and write the rows still to do in ``out`` as shards under
    ``shards_uri`` (see the module docstring); returns the report so far (``sent`` comes
    from the expanders: :func:`pass_report`). Raises (before writing any shard) what
    :func:`apa.data.manifest.stream_rows` raises for a file that cannot be read whole.

    ``rows_per_shard``: fixed; by default :func:`shard_rows` of the pending rows, at least
    ``min_rows_per_shard``."""
    report = InputReport()
    base = storage.parent(uri)
    utterances = 0
    with tempfile.TemporaryDirectory(prefix="apa-inputs-") as scratch:
        index = InputIndex(Path(scratch) / "index.sqlite")
        try:
            index.add_done(i for c in iter_commits(out) for i in c.ids)
            report.rows = index.add_rows(stream_rows(uri))
            report.inputs, report.already_done = index.counts()
            if rows_per_shard is None:
                rows_per_shard = shard_rows(index.pending_rows(), min_rows_per_shard)
            shard: list[tuple[int, str, bytes, list[int]]] = []
            for pending in index.pending():
                shard.append(pending)
                if limit is not None and report.cutoff is None:
                    number, _, row, rows_of_id = pending
                    record = row_record(number, pickle.loads(row), base, rows_of_id=rows_of_id)
                    utterances += isinstance(record, Utterance)
                    if utterances == limit:
                        report.cutoff = number
                if len(shard) == rows_per_shard:
                    _write_shard(shards_uri, report.shards, shard, key)
                    report.shards, shard = report.shards + 1, []
            if shard:
                _write_shard(shards_uri, report.shards, shard, key)
                report.shards += 1
        finally:
            index.close()
    report.cutoff = report.cutoff if report.cutoff is not None else cutoff
    log.info(
        "manifest_indexed",
        source=uri,
        **report.model_dump(include={"rows", "inputs", "already_done", "shards", "cutoff"}),
    )
    return report


def expand_shard(
    shards_uri: str, shard: int, *, key: bytes, base: str, cutoff: int | None
) -> pa.Table:
    """Shard number ``shard`` of ``shards_uri`` as input rows (see the module docstring);
    relative audio resolves against ``base`` (the manifest's directory). Writes what it
    sent beside the shard (:func:`pass_report` reads it). ``ValueError`` for a shard that
    fails its key check."""
    rows: list[dict] = []
    counts = ShardCounts()
    for number, input_id, row, rows_of_id in _read_shard(shards_uri, shard, key):
        record = row_record(number, pickle.loads(row), base, rows_of_id=rows_of_id)
        if record is None:  # a later row of a duplicated id: counted in the first
            continue
        if isinstance(record, Utterance):
            if cutoff is not None and number > cutoff:
                continue
            rows.append({"id": input_id, "utterance": record.model_dump_json(), "error": None})
            counts.sent_utterances += 1
        else:
            rows.append({"id": input_id, "utterance": None, "error": record.model_dump_json()})
    counts.sent = len(rows)
    storage.write_bytes(_shard_uri(shards_uri, shard, "json"), counts.model_dump_json().encode())
    return pa.Table.from_pylist(rows, schema=INPUT_SCHEMA)


def expand_lane(
    shards_uri: str, lane: int, lanes: int, index: InputReport, *, key: bytes, base: str
) -> Iterator[pa.Table]:
    """Lane ``lane`` of ``lanes``: shards ``lane``, ``lane + lanes``, ... of the pass that
    ``index`` reports, each expanded (:func:`expand_shard`) only when the one before has
    been taken. A fixed number of lanes (one task each) spreads any number of shards."""
    for shard in range(lane, index.shards, lanes):
        yield expand_shard(shards_uri, shard, key=key, base=base, cutoff=index.cutoff)


def pass_report(shards_uri: str, index: InputReport) -> InputReport:
    """The pass's report: the index's, with what every expander sent added up (one small
    read per shard). ``FileNotFoundError`` if a shard was never expanded."""
    report = index.model_copy()
    for shard in range(index.shards):
        uri = _shard_uri(shards_uri, shard, "json")
        counts = ShardCounts.model_validate_json(storage.read_bytes(uri))
        report.sent += counts.sent
        report.sent_utterances += counts.sent_utterances
    return report


def remove_shards(uri: str) -> None:
    """Delete ``uri`` (a pass's shards, or a run's) and everything under it, if there."""
    fs, path = storage.filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        try:
            fs.delete_dir(path)
        except FileNotFoundError:
            pass


HEARTBEAT = "heartbeat"
"""the file under ``_inputs/<run>`` that a running job rewrites every
:data:`HEARTBEAT_S` seconds (:class:`Heartbeat`)"""

HEARTBEAT_S = 30.0


class Heartbeat:
    """Rewrites ``<run_uri>/heartbeat`` every ``interval_s`` from a daemon thread while the
    run lives (a context manager), so that another run into the same output can tell this
    run's shards from those of a run killed outright (:func:`remove_stale_runs`). A failed
    write is logged and tried again at the next beat: the heartbeat never stops the job."""

    def __init__(self, run_uri: str, interval_s: float = HEARTBEAT_S) -> None:
        self.uri = storage.resolve(run_uri, HEARTBEAT)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_on, name="apa-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def beat(self) -> None:
        try:
            storage.write_bytes(self.uri, f"{time.time():.3f}\n".encode())
        except OSError as e:
            log.warning("heartbeat_failed", uri=self.uri, error=str(e))

    def _beat_on(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()


def remove_stale_runs(inputs_uri: str, own_run: str, stale_after_s: float) -> list[str]:
    """Delete the shards of other runs under ``inputs_uri`` whose last sign of life is older
    than ``stale_after_s``: their heartbeat's modification time or, for a run killed before
    its first beat, its newest file's. Ages are measured on the storage's own clock, against
    the modification time of ``own_run``'s heartbeat (written first), so a driver's skewed
    clock cannot make a live run look dead. Returns the runs left (alive, by that measure)."""
    fs, path = storage.filesystem(inputs_uri)
    now = fs.get_file_info(f"{path}/{own_run}/{HEARTBEAT}").mtime
    live: list[str] = []
    for run in input_runs(inputs_uri):
        if run == own_run:
            continue
        run_path = f"{path}/{run}"
        beat = fs.get_file_info(f"{run_path}/{HEARTBEAT}")
        if beat.type == pafs.FileType.File:
            last = beat.mtime
        else:
            selector = pafs.FileSelector(run_path, allow_not_found=True, recursive=True)
            files = fs.get_file_info(selector)
            times = [i.mtime for i in files if i.type == pafs.FileType.File and i.mtime]
            last = max(times, default=None)
        age = None if now is None or last is None else (now - last).total_seconds()
        if age is not None and age > stale_after_s:
            remove_shards(storage.resolve(inputs_uri, run))
            log.warning("stale_input_shards_removed", run=run, age_s=round(age), uri=inputs_uri)
        else:
            live.append(run)
    return live


def input_runs(inputs_uri: str) -> list[str]:
    """The runs that have shards under ``inputs_uri`` (the output's ``_inputs``), by name."""
    fs, path = storage.filesystem(inputs_uri)
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=False)
    return sorted(
        i.base_name for i in fs.get_file_info(selector) if i.type == pafs.FileType.Directory
    )


def _shard_uri(shards_uri: str, shard: int, ending: str) -> str:
    return storage.resolve(shards_uri, f"shard-{shard:06d}.{ending}")


def _mac(key: bytes, uri: str, payload: bytes) -> bytes:
    return hmac.new(key, uri.encode() + b"\x00" + payload, hashlib.sha256).digest()


def _write_shard(shards_uri: str, shard: int, rows: list[tuple], key: bytes) -> None:
    uri = _shard_uri(shards_uri, shard, "pickle")
    payload = pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)
    storage.write_bytes(uri, _mac(key, uri, payload) + payload)


def _read_shard(shards_uri: str, shard: int, key: bytes) -> list[tuple]:
    uri = _shard_uri(shards_uri, shard, "pickle")
    data = storage.read_bytes(uri)
    mac, payload = data[:_MAC_BYTES], data[_MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(key, uri, payload)):
        raise ValueError(f"{uri}: not a shard of this pass (its key check fails)")
    return pickle.loads(payload)
