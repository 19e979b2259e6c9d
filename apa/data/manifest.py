"""Manifests: rows of utterances to score, in JSONL, CSV or Parquet, local or on S3.

A row has ``id``, ``audio`` and ``text``; optionally ``speaker``, ``age``, ``gender``,
``phones`` (per word: ``["W IY0", "K AO0 L"]`` or ``[["W", "IY0"], ["K", "AO0", "L"]]``) and
human scores in the ``scores.json`` shape (``accuracy``, ``fluency``, ``prosodic``,
``completeness``, ``total``, ``words``; see
:func:`~apa.data.speechocean762.assessment_from_upstream`).
In CSV, ``phones`` and ``words`` are JSON strings and an empty cell is a missing value.
Other columns are ignored. A relative ``audio`` resolves against the manifest's directory
(or S3 prefix).

Every row becomes one :class:`~apa.schema.Utterance` or one :class:`~apa.schema.ErrorRecord`:
a row with no usable id (a malformed JSON line, a CSV row with the wrong number of cells, an
empty id) is counted under a synthetic id ``<row N>`` (N: the line of a JSONL file, the data
row of a CSV or Parquet file, from 1); the rows sharing an id become one ``input.duplicate_id``
row for that id, since none of them can be told to be the right one. A line or cell that is
not valid UTF-8 is that row's ``input.malformed_row``.

A compressed manifest that does not decompress to its end (truncated by an interrupted copy
or upload, or corrupt) is refused as a whole with :class:`DamagedManifestError`: the rows
before the damage could be read, but not how many came after it, so scoring them would
score part of the input as if it were all of it.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import ValidationError

from apa import storage
from apa.data.scores_json import SCORE_KEYS, assessment_from_upstream, assessment_to_upstream
from apa.data.scores_json import validation_message as _validation_message
from apa.errors import ApaError, InputError
from apa.lexicon import Lexicon, with_canonical_phones
from apa.schema import ErrorRecord, Utterance

FORMATS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".csv": "csv",
    ".csv.gz": "csv",
    ".parquet": "parquet",
}
"""Manifest file endings and their formats (``.gz``: gzip-compressed)."""

Row = dict[str, Any]

_CHUNK = 1024 * 1024


class DamagedManifestError(ValueError):
    """A compressed manifest or sidecar that does not decompress to its end. A
    ``ValueError``, as every refusal of a whole input is, so ``apa score`` and the batch job
    stop with its message (exit 2) before scoring anything."""


@dataclass(frozen=True)
class Manifest:
    """A read manifest: ``len(utterances) + len(errors)`` is the number of distinct row ids
    (synthetic ``<row N>`` ids included)."""

    uri: str
    utterances: list[Utterance]
    errors: list[ErrorRecord]


def manifest_format(uri: str) -> str:
    """``"jsonl"``, ``"csv"`` or ``"parquet"`` from the file ending; ``ValueError`` otherwise.

    >>> manifest_format("s3://b/m.jsonl.gz"), manifest_format("/x/M.CSV")
    ('jsonl', 'csv')
    """
    lower = uri.lower()
    for ending, fmt in sorted(FORMATS.items(), key=lambda kv: -len(kv[0])):
        if lower.endswith(ending):
            return fmt
    raise ValueError(f"{uri}: unknown manifest format (use one of {', '.join(FORMATS)})")


def decompressed(uri: str, data: bytes) -> bytes:
    """``data`` as it is, or gunzipped when ``uri`` ends in ``.gz`` (every member of it).
    Raises :class:`DamagedManifestError` when the data is not gzip, is truncated or fails
    its checksum."""
    if not uri.lower().endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        damage = "truncated" if isinstance(e, EOFError) else "corrupt"
        lines = _lines_before_damage(data)
        where = f" after {lines:,} complete lines" if lines else ""
        raise DamagedManifestError(
            f"{uri}: {damage} gzip data ({e}){where}; refusing the whole file rather than "
            f"scoring only the rows before the damage: copy or compress it again"
        ) from None


def _lines_before_damage(data: bytes) -> int:
    """How many complete lines decompress before gzip data fails (for the message only):
    fed in pieces, so what precedes the damage is counted."""
    lines, rest = 0, data
    try:
        while rest:
            member = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer
            for start in range(0, len(rest), _CHUNK):
                lines += member.decompress(rest[start : start + _CHUNK]).count(b"\n")
                if member.eof:
                    rest = member.unused_data + rest[start + _CHUNK :]
                    break
            else:
                return lines  # ran out of data: truncated
    except zlib.error:
        pass
    return lines


def _jsonl_rows(lines: Iterable[bytes]) -> Iterator[tuple[int, Row | ApaError]]:
    """Numbered rows of JSONL ``lines`` (each without its ``\\n``)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        raw = line.decode("utf-8", errors="replace")[:2000]
        try:
            row = json.loads(line)
        except ValueError as e:
            message = f"line {number}: not valid JSON: {e}"
            yield number, InputError("malformed_row", message, raw=raw)
            continue
        if not isinstance(row, dict):
            yield (
                number,
                InputError(
                    "malformed_row",
                    f"line {number}: not a JSON object ({type(row).__name__})",
                    raw=raw,
                ),
            )
            continue
        yield number, row


def _csv_rows(stream: Any) -> Iterator[tuple[int, Row | ApaError]]:
    """Numbered rows of a CSV binary ``stream``, read a block at a time (pyarrow's streaming
    reader): every cell as bytes, decoded cell by cell, so invalid UTF-8 is one row's error,
    not the file's; a row with the wrong number of cells is its ``input.malformed_row``."""
    head = stream.read(_CHUNK)
    if not head.strip() and not (more := stream.read(_CHUNK)):
        return
    if not head.strip():
        head += more
    # the header as csv reads it (pyarrow needs the names to read every column as bytes)
    header = next(csv.reader(io.StringIO(head.decode("utf-8-sig", errors="replace"))), [])
    bad: dict[int, ApaError] = {}

    def invalid(row: pacsv.InvalidRow) -> str:
        number = (row.number or 0) - 1  # pyarrow counts the header as row 1
        bad[number] = InputError(
            "malformed_row",
            f"CSV row {number}: {row.actual_columns} cells for {row.expected_columns} columns",
            raw=row.text[:2000],
        )
        return "skip"

    reader = pacsv.open_csv(
        _Prefixed(head, stream),
        read_options=pacsv.ReadOptions(use_threads=False, block_size=_CHUNK),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.binary() for name in header},
            strings_can_be_null=False,
        ),
    )
    number = 0
    for batch in reader:
        for row in batch.to_pylist():
            number += 1
            while number in bad:
                yield number, bad.pop(number)
                number += 1
            yield number, _decoded_cells(number, row)
    yield from sorted(bad.items())


class _Prefixed(io.RawIOBase):
    """A binary stream that reads ``head`` and then the rest of ``stream`` (the bytes read
    ahead for the header, given back)."""

    def __init__(self, head: bytes, stream: Any) -> None:
        self._head, self._stream = memoryview(head), stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _decoded_cells(number: int, row: dict[str, Any]) -> Row | ApaError:
    """A CSV row of byte cells as text, or its ``input.malformed_row`` for invalid UTF-8."""
    out: Row = {}
    for name, value in row.items():
        try:
            out[name] = value.decode("utf-8") if isinstance(value, bytes) else value
        except UnicodeDecodeError as e:
            raw = b",".join(v for v in row.values() if isinstance(v, bytes))
            return InputError(
                "malformed_row",
                f"CSV row {number}: {name} is not valid UTF-8 text ({e.reason} at byte {e.start})",
                raw=raw.decode("utf-8", errors="replace")[:2000],
            )
    return out


def _parquet_rows(data: bytes) -> Iterator[tuple[int, Row | ApaError]]:
    yield from enumerate(pq.read_table(pa.BufferReader(data)).to_pylist(), start=1)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str | None:
    """A cell as text: strings stripped, integers written out, blanks ``None``."""
    if _blank(value):
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _json_cell(value: Any, column: str, code: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as e:
        raise InputError(code, f"{column}: not valid JSON: {e}", raw=value[:2000]) from None


def _phones(value: Any) -> list[list[str]] | None:
    if _blank(value):
        return None
    value = _json_cell(value, "phones", "invalid_field")
    if not isinstance(value, list):
        raise InputError("invalid_field", f"phones: expected a list per word, got {value!r}")
    phones = []
    for word in value:
        if isinstance(word, str):
            phones.append(word.split())
        elif isinstance(word, list | tuple):
            phones.append(list(word))
        else:
            raise InputError("invalid_field", f"phones: {word!r} is not a word's phones")
    return phones


def _human(row: Row, utt_id: str, text: str) -> Any:
    entry = {k: row[k] for k in SCORE_KEYS if k in row and not _blank(row[k])}
    if not entry:
        return None
    if "words" in entry:
        entry["words"] = _json_cell(entry["words"], "words", "invalid_scores")
    return assessment_from_upstream(utt_id, {**entry, "text": text})


def _utterance(row: Row, utt_id: str, base: str, lexicon: Lexicon | None) -> Utterance:
    text = row.get("text")
    if _blank(text) or not isinstance(text, str):
        raise InputError("missing_field", f"{utt_id}: no text")
    audio = _text(row.get("audio"))
    if audio is None:
        raise InputError("no_audio", f"{utt_id}: no audio")
    try:
        utt = Utterance(
            id=utt_id,
            text=text,
            audio=storage.resolve(base, audio),
            phones=_phones(row.get("phones")),
            speaker=_text(row.get("speaker")),
            age=None if _blank(row.get("age")) else row.get("age"),
            gender=_text(row.get("gender")),
            human=_human(row, utt_id, text),
        )
    except ValidationError as e:
        raise InputError("invalid_field", f"{utt_id}: {_validation_message(e)}") from None
    return with_canonical_phones(utt, lexicon)


def row_key(number: int, row: Row | ApaError) -> tuple[str, bool]:
    """The id row ``number`` counts under, and whether it is the row's own id (``False``:
    the synthetic ``<row N>`` of a row that could not be read or has no usable id; such a
    row is never a duplicate)."""
    utt_id = _text(row.get("id")) if isinstance(row, dict) else None
    return (utt_id, True) if utt_id is not None else (f"<row {number}>", False)


def row_record(
    number: int,
    row: Row | ApaError,
    base: str,
    lexicon: Lexicon | None = None,
    *,
    rows_of_id: Sequence[int] = (),
) -> Utterance | ErrorRecord | None:
    """What row ``number`` of a manifest counts as (see the module docstring): an
    utterance, or the error it is; relative audio resolves against ``base``.

    ``rows_of_id``: the numbers of every row with this row's id when there is more than one
    (a duplicate id). The first of them becomes the id's ``input.duplicate_id`` error, the
    others ``None`` (counted in it). The one rule for whole-file reads
    (:func:`rows_to_manifest`) and block-wise ones (:mod:`apa.batch.inputs`)."""
    utt_id, own = row_key(number, row)
    if isinstance(row, ApaError):
        return row.record(utt_id)
    if not own:
        message = f"row {number}: no id" if _blank(row.get("id")) else f"row {number}: bad id"
        return InputError("missing_field", message).record(utt_id)
    if len(rows_of_id) > 1:
        if rows_of_id[0] != number:
            return None
        where = ", ".join(map(str, rows_of_id))
        return InputError("duplicate_id", f"{utt_id}: on rows {where}").record(utt_id)
    try:
        return _utterance(row, utt_id, base, lexicon)
    except ApaError as e:
        return e.record(utt_id)


def rows_to_manifest(
    uri: str, rows: Iterable[tuple[int, Row | ApaError]], lexicon: Lexicon | None = None
) -> Manifest:
    """Numbered rows (or errors for rows that could not be read) as a :class:`Manifest`;
    relative audio resolves against the directory of ``uri``."""
    rows = list(rows)
    base = storage.parent(uri)
    lines: dict[str, list[int]] = {}
    for number, row in rows:
        utt_id, own = row_key(number, row)
        if own:
            lines.setdefault(utt_id, []).append(number)
    utterances: list[Utterance] = []
    errors: list[ErrorRecord] = []
    for number, row in rows:
        utt_id, own = row_key(number, row)
        record = row_record(number, row, base, lexicon, rows_of_id=lines[utt_id] if own else ())
        if isinstance(record, Utterance):
            utterances.append(record)
        elif record is not None:
            errors.append(record)
    return Manifest(uri=uri, utterances=utterances, errors=errors)


def read_manifest(uri: str | Path, lexicon: Lexicon | None = None) -> Manifest:
    """Read a manifest (local path or ``s3://`` URI; format by ending, see :data:`FORMATS`).

    With ``lexicon``, utterances without canonical phones (and without human phones) get them
    from it, and a word it lacks makes the row a ``lexicon.unknown_word`` error. A file that
    cannot be read at all raises (``FileNotFoundError``, ``OSError``, ``ValueError``).
    """
    uri = str(uri)
    return rows_to_manifest(uri, read_rows(uri), lexicon)


def read_rows(uri: str) -> Iterator[tuple[int, Row | ApaError]]:
    """The numbered raw rows of a manifest-format file (format by ending, ``.gz``
    decompressed): a dict per row, or the error that row is. Raises ``ValueError`` for an
    unknown ending or damaged compressed data (:class:`DamagedManifestError`), and
    ``FileNotFoundError``/``OSError`` when the file cannot be read."""
    fmt = manifest_format(uri)
    data = decompressed(uri, storage.read_bytes(uri))
    if fmt == "jsonl":
        return _jsonl_rows(data.split(b"\n"))
    if fmt == "csv":
        return _csv_rows(io.BytesIO(data))
    return _parquet_rows(data)


def stream_rows(uri: str) -> Iterator[tuple[int, Row | ApaError]]:
    """:func:`read_rows`, holding a few rows at a time rather than the file: JSONL line by
    line, CSV a block at a time (both gunzipped as they stream; damage raises
    :class:`DamagedManifestError` when it is reached, so read to the end before acting on
    any row), Parquet a row group at a time."""
    fmt = manifest_format(uri)
    fs, path = storage.filesystem(uri)
    if storage.is_s3(uri) and fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no object at {uri}")
    if fmt == "parquet":
        with fs.open_input_file(path) as f:
            number = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=4096):
                for row in batch.to_pylist():
                    number += 1
                    yield number, row
        return
    with fs.open_input_stream(path, compression=None) as raw:
        stream = gzip.GzipFile(fileobj=raw) if uri.lower().endswith(".gz") else raw
        rows = _jsonl_rows(_lines(stream)) if fmt == "jsonl" else _csv_rows(stream)
        number = 0
        try:
            for number, row in rows:  # noqa: B007 (number: for the message)
                yield number, row
        except (EOFError, OSError, zlib.error) as e:
            damage = "truncated" if isinstance(e, EOFError) else "corrupt"
            where = "lines" if fmt == "jsonl" else "rows"
            raise DamagedManifestError(
                f"{uri}: {damage} gzip data ({e}) after {number:,} {where}; refusing the "
                f"whole file rather than scoring only the rows before the damage: copy or "
                f"compress it again"
            ) from None


def _lines(stream: Any) -> Iterator[bytes]:
    """The lines of a binary stream without their ``\\n`` (as ``data.split(b"\\n")``)."""
    rest = b""
    while chunk := stream.read(_CHUNK):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    yield rest


def manifest_row(utt: Utterance) -> Row:
    """An utterance as a manifest row: phones as one string per word, human scores in the
    ``scores.json`` shape (its ``text`` left out: the row's text is the assessment's)."""
    row: Row = {
        "id": utt.id,
        "audio": utt.audio,
        "text": utt.text,
        "speaker": utt.speaker,
        "age": utt.age,
        "gender": utt.gender,
        "phones": None if utt.phones is None else [" ".join(p) for p in utt.phones],
    }
    if utt.human is not None:
        scores = assessment_to_upstream(utt.human)
        scores.pop("text")
        row.update(scores)
    return row


def write_manifest(utterances: Iterable[Utterance], uri: str | Path) -> None:
    """Write utterances as a JSONL manifest (``.jsonl`` or ``.jsonl.gz``), local or ``s3://``.
    Audio references are written as they are."""
    uri = str(uri)
    if manifest_format(uri) != "jsonl":
        raise ValueError(f"{uri}: write_manifest writes JSONL (.jsonl or .jsonl.gz)")
    data = "".join(json.dumps(manifest_row(u), ensure_ascii=False) + "\n" for u in utterances)
    payload = data.encode("utf-8")
    if uri.lower().endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    storage.write_bytes(uri, payload)
