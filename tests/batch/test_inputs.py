"""The batch job's manifest reader without Ray (:mod:`apa.batch.inputs`): block by block it
yields exactly the input rows the whole-file read gives (bad rows, duplicates, synthetic
ids), minus the ids committed in the output, and ``limit``/``cutoff`` make a later pass send
only what an earlier one left uncommitted."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apa.batch import rows as stages
from apa.batch.commits import commit_part_set
from apa.batch.inputs import InputIndex, manifest_blocks, read_report
from apa.data.manifest import DamagedManifestError, read_manifest, read_rows, stream_rows
from apa.schema import ErrorRecord

LINES = [
    '{"id": "a", "audio": "a.wav", "text": "we call"}',
    "not json",
    '{"id": "b", "audio": "b.wav", "text": "we call"}',
    '{"id": "dup", "audio": "d.wav", "text": "we call"}',
    "",
    '{"audio": "x.wav", "text": "no id"}',
    '{"id": "c", "audio": "c.wav", "text": ""}',
    '{"id": "dup", "audio": "d2.wav", "text": "again"}',
    '{"id": "e", "audio": "e.wav", "text": "we call"}',
    "[1, 2]",
]


@pytest.fixture
def manifest(tmp_path: Path) -> str:
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(LINES) + "\n")
    return str(path)


def _blocks(manifest: str, out: Path, **kwargs) -> tuple[list[dict], dict]:
    report = str(out / "_inputs" / "r.json")
    kwargs.setdefault("rows_per_block", 2)
    blocks = list(manifest_blocks(manifest, str(out), report_uri=report, **kwargs))
    assert all(b.schema == stages.INPUT_SCHEMA and b.num_rows <= 2 for b in blocks)
    return pa.concat_tables(blocks).to_pylist() if blocks else [], read_report(report)


def _whole_file_rows(manifest: str) -> list[dict]:
    m = read_manifest(manifest)
    return list(stages.input_rows(m.utterances, m.errors, skip=set()))


def _by_id(rows: list[dict]) -> dict[str, dict]:
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows)  # each input once
    return by_id


def test_blocks_hold_what_the_whole_file_read_holds(manifest: str, tmp_path: Path) -> None:
    rows, report = _blocks(manifest, tmp_path / "out")
    assert _by_id(rows) == _by_id(_whole_file_rows(manifest))
    assert [r["id"] for r in rows] == [
        "a",
        "<row 2>",
        "b",
        "dup",
        "<row 6>",
        "c",
        "e",
        "<row 10>",
    ]  # fmt: skip  (manifest order; the duplicate at its first row)
    dup = ErrorRecord.model_validate_json(_by_id(rows)["dup"]["error"])
    assert (dup.reason, dup.message) == ("input.duplicate_id", "dup: on rows 4, 8")
    assert (report.rows, report.inputs, report.already_done) == (9, 8, 0)
    assert (report.sent, report.sent_utterances, report.cutoff) == (8, 3, None)


def test_committed_ids_are_skipped(manifest: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    errors = [
        ErrorRecord(utterance_id=i, stage="input", reason="input.x", message="m") for i in "ab"
    ]
    commit_part_set(str(out), [], errors + [errors[0].model_copy(update={"utterance_id": "dup"})],
                    audio_seconds=0, scorer=None)  # fmt: skip
    rows, report = _blocks(manifest, out)
    assert {r["id"] for r in rows} == {"<row 2>", "<row 6>", "c", "e", "<row 10>"}
    assert (report.inputs, report.already_done, report.sent) == (8, 3, 5)


def test_limit_then_cutoff_resend_only_the_first_pass_rows(manifest: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rows, first = _blocks(manifest, out, limit=1)
    # the first utterance and every error, wherever it is
    assert [r["id"] for r in rows if r["utterance"]] == ["a"]
    assert first.cutoff == 1 and first.sent == 1 + 5
    # nothing committed: a later pass with the cutoff sends the same rows, no new utterance
    again, second = _blocks(manifest, out, cutoff=first.cutoff)
    assert again == rows and second.cutoff == 1
    # once "a" is committed, only the errors are left of the first pass
    commit_part_set(str(out), [], [ErrorRecord(utterance_id="a", stage="input", reason="input.x",
                    message="m")], audio_seconds=0, scorer=None)  # fmt: skip
    rest, _ = _blocks(manifest, out, cutoff=first.cutoff)
    assert rest == [r for r in rows if r["id"] != "a"]


def test_a_truncated_gzip_manifest_yields_nothing(tmp_path: Path) -> None:
    data = gzip.compress(("\n".join(LINES) + "\n").encode() * 50)
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedManifestError, match="truncated"):
        next(manifest_blocks(str(path), str(tmp_path / "out"), report_uri=str(tmp_path / "r"),
                             rows_per_block=1))  # fmt: skip


@pytest.mark.parametrize("ending", [".jsonl", ".jsonl.gz", ".parquet"])
def test_streamed_rows_are_the_whole_file_rows(tmp_path: Path, ending: str) -> None:
    path = tmp_path / f"m{ending}"
    if ending == ".parquet":
        rows = [{"id": f"u{i}", "audio": "a.wav", "text": "we"} for i in range(10_000)]
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3000)
    else:
        data = ("\n".join(LINES) + "\n").encode()
        path.write_bytes(gzip.compress(data) if ending.endswith(".gz") else data)
    assert [(n, str(r)) for n, r in stream_rows(str(path))] == [
        (n, str(r)) for n, r in read_rows(str(path))
    ]


def test_the_index_finds_duplicates_and_done_ids_on_disk(tmp_path: Path) -> None:
    index = InputIndex(tmp_path / "index.sqlite")
    n = 50_000
    index.add_done(f"u{i}" for i in range(0, n, 2))
    index.add_rows((i + 1, {"id": f"u{i % (n - 1)}"}) for i in range(n))  # u0 twice
    assert index.counts() == (n - 1, n // 2)
    pending = list(index.pending())
    assert len(pending) == n // 2 - 1  # the odd ids (u0, duplicated, is done)
    assert all(int(key[1:]) % 2 == 1 and dup == [] for _, key, _, dup in pending)
    index.close()
    assert (tmp_path / "index.sqlite").stat().st_size > 0
    assert json.loads(json.dumps(pending[0][2])) == {"id": "u1"}
