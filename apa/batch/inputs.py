"""The batch job's input rows from a manifest, read block by block: neither the driver nor
any worker holds the manifest, its ids, or the ids already done.

One reader (:func:`manifest_blocks`, a Ray Data stage on a worker) streams the manifest
(:func:`apa.data.manifest.stream_rows`) into an :class:`InputIndex`, a SQLite file on that
worker's local disk, together with the ids already committed in the output (streamed from
the commits, :func:`apa.batch.commits.iter_commits`). Then it yields the rows still to do,
in manifest order, as blocks of :data:`apa.batch.rows.INPUT_SCHEMA`, each row made what it
counts as by :func:`apa.data.manifest.row_record` (the rule ``read_manifest`` applies):

- a row that cannot be read, or has no usable id, is an error under ``<row N>``;
- rows sharing an id are one ``input.duplicate_id`` error for that id (SQL over the index
  finds them: the whole file has to be read first, since the last row may repeat the first);
- an id committed in the output (an earlier run's) is skipped;
- with ``limit``, utterances past the first ``limit`` still to do are left out (errors all
  go); the row where the limit was reached is reported as ``cutoff``, so that a later pass
  of the same run (``cutoff`` instead of ``limit``) sends exactly this pass's rows that are
  still not committed, and no new ones.

Reading the whole file before the first row goes out also keeps a damaged (truncated gzip)
manifest from being scored in part. What the reader counted (:class:`InputReport`) is
written as JSON to ``report_uri`` once it is done, for the driver: it is all the driver
learns of the inputs.
"""

from __future__ import annotations

import pickle
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel

from apa import storage
from apa.batch.commits import iter_commits
from apa.batch.rows import INPUT_SCHEMA
from apa.data.manifest import row_key, row_record, stream_rows
from apa.errors import ApaError
from apa.log import get_logger
from apa.schema import Utterance

log = get_logger(__name__)

REPORTS_DIR = "_inputs"
"""where in the output a reader writes its :class:`InputReport` (the driver reads and deletes
it); like every name starting with ``_``, no table reader looks there"""

_INSERT_ROWS = 10_000
"""rows per SQLite insert (one transaction for the whole file)"""


class InputReport(BaseModel):
    """What one reader pass found: ``inputs`` distinct input ids in the manifest (synthetic
    ``<row N>`` ids included, duplicates counted once), ``already_done`` of them committed
    before the pass, ``sent`` rows yielded (``sent_utterances`` of them utterances)."""

    rows: int = 0
    inputs: int = 0
    already_done: int = 0
    sent: int = 0
    sent_utterances: int = 0
    cutoff: int | None = None
    """the manifest row at which ``limit`` was reached (``None``: not reached)"""


class InputIndex:
    """A manifest's rows and a set of done ids in a SQLite file (``path``): memory stays a
    few MiB (SQLite's page cache) whatever the number of rows; the disk holds about the
    manifest's size again.

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

    def pending(self) -> Iterator[tuple[int, str, dict | ApaError, list[int]]]:
        """The rows whose id is not done, in manifest order: (number, id, row, the numbers
        of every row with its id when it has more than one, else ``[]``)."""
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
                yield number, key, pickle.loads(row), rows_of_id


def manifest_blocks(
    uri: str,
    out: str,
    *,
    report_uri: str,
    rows_per_block: int,
    limit: int | None = None,
    cutoff: int | None = None,
) -> Iterator[pa.Table]:
    """The input rows of the manifest ``uri`` still to do in ``out`` (see the module
    docstring), in blocks of ``rows_per_block``; the :class:`InputReport` goes to
    ``report_uri`` after the last block. Raises (before yielding anything) what
    :func:`apa.data.manifest.stream_rows` raises for a file that cannot be read whole."""
    report = InputReport()
    base = storage.parent(uri)
    with tempfile.TemporaryDirectory(prefix="apa-inputs-") as scratch:
        index = InputIndex(Path(scratch) / "index.sqlite")
        try:
            index.add_done(i for c in iter_commits(out) for i in c.ids)
            report.rows = index.add_rows(stream_rows(uri))
            report.inputs, report.already_done = index.counts()
            log.info(
                "manifest_indexed",
                source=uri,
                **report.model_dump(include={"rows", "inputs", "already_done"}),
            )
            block: list[dict] = []
            for number, key, row, rows_of_id in index.pending():
                record = row_record(number, row, base, rows_of_id=rows_of_id)
                if record is None:  # a later row of a duplicated id: counted in the first
                    continue
                if isinstance(record, Utterance):
                    if report.cutoff is not None or (cutoff is not None and number > cutoff):
                        continue
                    block.append({"id": key, "utterance": record.model_dump_json(), "error": None})
                    report.sent_utterances += 1
                    if limit is not None and report.sent_utterances == limit:
                        report.cutoff = number
                else:
                    block.append({"id": key, "utterance": None, "error": record.model_dump_json()})
                report.sent += 1
                if len(block) == rows_per_block:
                    yield pa.Table.from_pylist(block, schema=INPUT_SCHEMA)
                    block = []
            if block:
                yield pa.Table.from_pylist(block, schema=INPUT_SCHEMA)
        finally:
            index.close()
    report.cutoff = report.cutoff if report.cutoff is not None else cutoff
    storage.write_bytes(report_uri, report.model_dump_json().encode())


def read_report(report_uri: str) -> InputReport:
    return InputReport.model_validate_json(storage.read_bytes(report_uri))
