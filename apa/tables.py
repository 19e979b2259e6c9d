"""Assessments as flat score tables, and back.

Scoring writes four Parquet tables, one row per unit, keyed by utterance id and index:

============  ==========================================================================
table         columns
============  ==========================================================================
utterances    utterance_id, text, accuracy, fluency, prosody, completeness, total,
              model, model_is_random, scoring_path
words         utterance_id, word_index, word, accuracy, stress, total, start, end
phones        utterance_id, word_index, phone_index, phone, accuracy, pronounced, error,
              start, end
errors        utterance_id, stage, reason, message, raw
============  ==========================================================================

``scoring_path`` says which path of an alignment-informed LMM scorer scored the utterance
(``aligned``, or ``plain`` where the aligner failed); null for other scorers.

In ``phones``, ``phone`` is the canonical phone and ``pronounced`` what was said where it
differs. A row with ``error == "insertion"`` is a phone said that the word does not have:
``phone`` is null, ``pronounced`` names it and ``phone_index`` is the canonical phone it
came before (= the word's phone count when it came last). Filter those rows out to get one
row per canonical phone.

Predictions can be read back from a table directory (local or ``s3://``; each table a
Parquet file ``<name>.parquet`` or a directory of Parquet parts ``<name>/``), from the
``utterances`` table's own path, or from JSON lines holding one assessment each.
"""

from __future__ import annotations

import gzip
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from apa import storage
from apa.schema import (
    SENTENCE_ASPECTS,
    WORD_ASPECTS,
    Assessment,
    ErrorRecord,
    InsertedPhone,
    PhoneAssessment,
    SentenceScores,
    WordAssessment,
)

TABLES = ("utterances", "words", "phones", "errors")

_score = pa.float64()
SCHEMAS: dict[str, pa.Schema] = {
    "utterances": pa.schema(
        [("utterance_id", pa.string()), ("text", pa.string())]
        + [(aspect, _score) for aspect in SENTENCE_ASPECTS]
        + [("model", pa.string()), ("model_is_random", pa.bool_())]
        + [("scoring_path", pa.string())]
    ),
    "words": pa.schema(
        [("utterance_id", pa.string()), ("word_index", pa.int32()), ("word", pa.string())]
        + [(aspect, _score) for aspect in WORD_ASPECTS]
        + [("start", pa.float64()), ("end", pa.float64())]
    ),
    "phones": pa.schema(
        [
            ("utterance_id", pa.string()),
            ("word_index", pa.int32()),
            ("phone_index", pa.int32()),
            ("phone", pa.string()),
            ("accuracy", _score),
            ("pronounced", pa.string()),
            ("error", pa.string()),
            ("start", pa.float64()),
            ("end", pa.float64()),
        ]
    ),
    "errors": pa.schema(
        [
            ("utterance_id", pa.string()),
            ("stage", pa.string()),
            ("reason", pa.string()),
            ("message", pa.string()),
            ("raw", pa.string()),
        ]
    ),
}


def assessments_to_tables(assessments: Iterable[Assessment]) -> dict[str, pa.Table]:
    """The ``utterances``, ``words`` and ``phones`` tables of some assessments."""
    utterances: list[dict] = []
    words: list[dict] = []
    phones: list[dict] = []
    for a in assessments:
        utterances.append(
            {
                "utterance_id": a.utterance_id,
                "text": a.text,
                **a.sentence.model_dump(),
                "model": a.model,
                "model_is_random": a.model_is_random,
                "scoring_path": a.scoring_path,
            }
        )
        for wi, word in enumerate(a.words):
            words.append(
                {
                    "utterance_id": a.utterance_id,
                    "word_index": wi,
                    "word": word.text,
                    **{aspect: getattr(word, aspect) for aspect in WORD_ASPECTS},
                    "start": word.start,
                    "end": word.end,
                }
            )
            for pi, phone in enumerate(word.phones):
                phones.append(
                    {"utterance_id": a.utterance_id, "word_index": wi, "phone_index": pi}
                    | phone.model_dump()
                )
            for inserted in word.insertions:
                phones.append(
                    {
                        "utterance_id": a.utterance_id,
                        "word_index": wi,
                        "phone_index": inserted.position,
                        "phone": None,
                        "accuracy": None,
                        "pronounced": inserted.phone,
                        "error": "insertion",
                        "start": None,
                        "end": None,
                    }
                )
    return {
        "utterances": pa.Table.from_pylist(utterances, schema=SCHEMAS["utterances"]),
        "words": pa.Table.from_pylist(words, schema=SCHEMAS["words"]),
        "phones": pa.Table.from_pylist(phones, schema=SCHEMAS["phones"]),
    }


def errors_to_table(errors: Iterable[ErrorRecord]) -> pa.Table:
    return pa.Table.from_pylist([e.model_dump() for e in errors], schema=SCHEMAS["errors"])


def tables_to_assessments(
    utterances: pa.Table, words: pa.Table | None = None, phones: pa.Table | None = None
) -> list[Assessment]:
    """Rebuild assessments from their tables (the inverse of :func:`assessments_to_tables`).

    Rows may come in any order; words and phones are placed by their indices. Raises
    ``ValueError`` when indices have gaps or repeats, and pydantic's ``ValidationError``
    (naming the field) when a value is out of range.
    """
    phones_of: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for row in phones.to_pylist() if phones is not None else ():
        phones_of[(row["utterance_id"], row["word_index"])].append(row)
    words_of: dict[str, list[dict]] = defaultdict(list)
    for row in words.to_pylist() if words is not None else ():
        words_of[row["utterance_id"]].append(row)

    assessments = []
    for row in utterances.to_pylist():
        uid = row["utterance_id"]
        word_rows = sorted(words_of.pop(uid, []), key=lambda r: r["word_index"])
        _check_indices(uid, [r["word_index"] for r in word_rows], "word_index")
        built_words = [
            _word_from_rows(uid, wr, phones_of.pop((uid, wr["word_index"]), [])) for wr in word_rows
        ]
        assessments.append(
            Assessment(
                utterance_id=uid,
                text=row["text"],
                sentence=SentenceScores(**{a: row[a] for a in SENTENCE_ASPECTS}),
                words=built_words,
                model=row.get("model"),
                model_is_random=bool(row.get("model_is_random")),
                scoring_path=row.get("scoring_path"),
            )
        )
    orphans = sorted(words_of) + sorted({uid for uid, _ in phones_of})
    if orphans:
        raise ValueError(f"rows for utterances not in the utterances table: {orphans[:5]}")
    return assessments


def _check_indices(uid: str, indices: list[int], column: str) -> None:
    if indices != list(range(len(indices))):
        raise ValueError(f"utterance {uid!r}: {column} values {indices} are not 0..n-1")


def _word_from_rows(uid: str, word: dict, phone_rows: list[dict]) -> WordAssessment:
    canonical = sorted(
        (r for r in phone_rows if r["error"] != "insertion"), key=lambda r: r["phone_index"]
    )
    _check_indices(uid, [r["phone_index"] for r in canonical], "phone_index")
    fields = ("phone", "accuracy", "pronounced", "error", "start", "end")
    return WordAssessment(
        text=word["word"],
        **{aspect: word[aspect] for aspect in WORD_ASPECTS},
        phones=[PhoneAssessment(**{f: r[f] for f in fields}) for r in canonical],
        insertions=[
            InsertedPhone(position=r["phone_index"], phone=r["pronounced"])
            for r in phone_rows
            if r["error"] == "insertion"
        ],
        start=word["start"],
        end=word["end"],
    )


def write_tables(
    out_dir: str, assessments: Sequence[Assessment], errors: Sequence[ErrorRecord] = ()
) -> dict[str, str]:
    """Write the four tables as ``<out_dir>/<table>.parquet`` (local or ``s3://``).

    Each file is written whole or not at all. Returns the URI of each table.
    """
    tables = assessments_to_tables(assessments) | {"errors": errors_to_table(errors)}
    written = {}
    for name, table in tables.items():
        uri = storage.resolve(out_dir, f"{name}.parquet")
        sink = io.BytesIO()
        pq.write_table(table, sink)
        storage.write_bytes(uri, sink.getvalue())
        written[name] = uri
    return written


def read_table(uri: str) -> pa.Table:
    """A Parquet table from a file or a directory of parts, local or ``s3://``."""
    fs, path = storage.filesystem(uri)
    return pq.read_table(path, filesystem=fs)


def _table_location(directory: str, name: str) -> str | None:
    for candidate in (f"{name}.parquet", name):
        uri = storage.resolve(directory, candidate)
        if storage.exists(uri):
            return uri
    return None


def read_assessments(uri: str) -> list[Assessment]:
    """Assessments from a table directory, an ``utterances`` table path, or JSON lines.

    JSON lines (``.jsonl``, ``.jsonl.gz``, ``.json``) hold one :class:`Assessment` per line.
    """
    lowered = uri.rstrip("/").lower()
    if lowered.endswith((".jsonl", ".jsonl.gz", ".json")):
        data = storage.read_bytes(uri)
        if lowered.endswith(".gz"):
            data = gzip.decompress(data)
        return [
            Assessment.model_validate(json.loads(line))
            for line in data.decode("utf-8").splitlines()
            if line.strip()
        ]
    fs, path = storage.filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no predictions at {uri}")
    if info.type == pafs.FileType.Directory and _table_location(uri, "utterances"):
        directory = uri
    else:  # the utterances table itself; its siblings hold words and phones
        directory = storage.parent(uri)
        if not uri.rstrip("/").split("/")[-1].startswith("utterances"):
            raise ValueError(
                f"{uri}: expected a table directory, an 'utterances' table or a .jsonl file"
            )
    utterances_uri = _table_location(directory, "utterances")
    if utterances_uri is None:
        raise FileNotFoundError(f"no utterances table in {directory}")
    words_uri = _table_location(directory, "words")
    phones_uri = _table_location(directory, "phones")
    return tables_to_assessments(
        read_table(utterances_uri),
        read_table(words_uri) if words_uri else None,
        read_table(phones_uri) if phones_uri else None,
    )


def write_assessments_jsonl(assessments: Iterable[Assessment], uri: str) -> None:
    """One assessment per line, as JSON; ``.gz`` compresses."""
    text = "".join(a.model_dump_json() + "\n" for a in assessments).encode("utf-8")
    storage.write_bytes(uri, gzip.compress(text) if uri.endswith(".gz") else text)
