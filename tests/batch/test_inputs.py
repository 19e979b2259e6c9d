"""The batch job's manifest reader without Ray (:mod:`apa.batch.inputs`): indexed and written
as shards, then shard by shard, it yields exactly the input rows the whole-file read gives
(bad rows, duplicates, synthetic ids), minus the ids committed in the output, and
``limit``/``cutoff`` make a later pass send only what an earlier one left uncommitted."""

from __future__ import annotations

import gzip
import os
import pickle
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apa.batch import rows as stages
from apa.batch.commits import commit_part_set
from apa.batch.inputs import (
    HEARTBEAT,
    Heartbeat,
    InputIndex,
    InputReport,
    expand_lane,
    expand_shard,
    index_manifest,
    input_runs,
    new_key,
    pass_report,
    remove_shards,
    remove_stale_runs,
)
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


def _blocks(manifest: str, out: Path, **kwargs) -> tuple[list[dict], InputReport]:
    """Index, then expand every shard in order: the rows one pass sends, and its report."""
    shards_uri, key = str(out / "_inputs" / "run" / "pass-1"), new_key()
    kwargs.setdefault("rows_per_shard", 2)
    index = index_manifest(manifest, str(out), shards_uri=shards_uri, key=key, **kwargs)
    base = str(Path(manifest).parent)
    blocks = [
        expand_shard(shards_uri, shard, key=key, base=base, cutoff=index.cutoff)
        for shard in range(index.shards)
    ]
    assert all(b.schema == stages.INPUT_SCHEMA and b.num_rows <= 2 for b in blocks)
    report = pass_report(shards_uri, index)
    remove_shards(shards_uri)
    assert not (out / "_inputs" / "run" / "pass-1").exists()
    rows = pa.concat_tables(blocks).to_pylist() if blocks else []
    # what the expanders counted is what they sent
    assert report.sent == len(rows)
    assert report.sent_utterances == sum(r["utterance"] is not None for r in rows)
    return rows, report


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


@pytest.mark.parametrize("limit", [2, 3, 4])
def test_a_limit_reached_in_a_later_shard_holds_in_every_shard(
    manifest: str, tmp_path: Path, limit: int
) -> None:
    """The index finds the row where the limit is reached (shard by shard, two rows each);
    every expander, before or after that shard, keeps the errors and drops the utterances
    past it: the first ``limit`` utterances of the whole-file read and all its errors."""
    rows, report = _blocks(manifest, tmp_path / "out", limit=limit)
    whole = _whole_file_rows(manifest)
    utterances = [r for r in whole if r["utterance"]]
    expected = [r for r in whole if r["error"]] + utterances[:limit]
    assert _by_id(rows) == _by_id(expected)
    assert report.sent_utterances == min(limit, len(utterances))
    assert report.cutoff == (None if limit > len(utterances) else {2: 3, 3: 9}[limit])


def test_lanes_take_every_shard_once(manifest: str, tmp_path: Path) -> None:
    """A fixed number of lanes (tasks) share any number of shards between them."""
    out = tmp_path / "out"
    shards_uri, key = str(out / "_inputs" / "run" / "pass-1"), new_key()
    index = index_manifest(manifest, str(out), shards_uri=shards_uri, key=key, rows_per_shard=1)
    assert index.shards == 9 and input_runs(str(out / "_inputs")) == ["run"]
    lanes = [
        pa.concat_tables(expand_lane(shards_uri, lane, 4, index, key=key, base=str(tmp_path)))
        for lane in range(4)
    ]
    rows = [r for table in lanes for r in table.to_pylist()]
    assert _by_id(rows) == _by_id(_whole_file_rows(manifest))
    # lanes take shards 0,4,8 / 1,5 / 2,6 / 3,7; shard 6, the duplicate's later row, sends
    # nothing (its first row reports it)
    assert [t.num_rows for t in lanes] == [3, 2, 1, 2]
    assert pass_report(shards_uri, index).sent == len(rows) == 8
    remove_shards(str(out / "_inputs" / "run"))
    assert input_runs(str(out / "_inputs")) == []
    remove_shards(str(out / "_inputs" / "run"))  # gone already: nothing to do


def test_a_shard_the_pass_did_not_write_is_never_unpickled(manifest: str, tmp_path: Path) -> None:
    """Shards carry an HMAC under the pass's key: another run's (a stale one's) key, a shard
    changed on disk, or a shard moved to another name fails before anything is unpickled."""
    out = tmp_path / "out"
    shards_uri, key = str(out / "_inputs" / "run" / "pass-1"), new_key()
    index = index_manifest(manifest, str(out), shards_uri=shards_uri, key=key, rows_per_shard=5)
    assert index.shards == 2
    expand = {"base": str(tmp_path), "cutoff": None}
    with pytest.raises(ValueError, match="not a shard of this pass"):
        expand_shard(shards_uri, 0, key=new_key(), **expand)
    first = Path(shards_uri) / "shard-000000.pickle"
    second = Path(shards_uri) / "shard-000001.pickle"
    data = first.read_bytes()
    first.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ValueError, match="not a shard of this pass"):
        expand_shard(shards_uri, 0, key=key, **expand)
    first.write_bytes(second.read_bytes())  # a whole, valid shard under another name
    with pytest.raises(ValueError, match="not a shard of this pass"):
        expand_shard(shards_uri, 0, key=key, **expand)
    assert expand_shard(shards_uri, 1, key=key, **expand).num_rows == 3


def test_a_truncated_gzip_manifest_yields_nothing(tmp_path: Path) -> None:
    data = gzip.compress(("\n".join(LINES) + "\n").encode() * 50)
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    shards = tmp_path / "out" / "_inputs" / "run"
    with pytest.raises(DamagedManifestError, match="truncated"):
        index_manifest(str(path), str(tmp_path / "out"), shards_uri=str(shards), key=new_key())
    assert not shards.exists()  # not one shard written


def _csv_blocks() -> bytes:
    """A CSV of several of the reader's 1 MiB blocks: a byte-order mark, rows with the wrong
    number of cells, invalid UTF-8 and quoted line breaks scattered over the blocks."""
    lines = [b"\xef\xbb\xbfid,audio,text"]
    for i in range(80_000):
        if i % 9_001 == 5:
            lines.append(f"u{i},a.wav".encode())  # a cell short
        elif i % 7_919 == 3:
            lines.append(f'u{i},a.wav,"two\nlines"'.encode())
        elif i % 13_003 == 11:
            lines.append(f"u{i},a.wav,we \xff call".encode("latin-1"))
        else:
            lines.append(f"u{i},audio/{i}.wav,we call you".encode())
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize("ending", [".jsonl", ".jsonl.gz", ".parquet", ".csv", ".csv.gz"])
def test_streamed_rows_are_the_whole_file_rows(tmp_path: Path, ending: str) -> None:
    path = tmp_path / f"m{ending}"
    if ending == ".parquet":
        rows = [{"id": f"u{i}", "audio": "a.wav", "text": "we"} for i in range(10_000)]
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3000)
    elif ending.startswith(".csv"):
        data = _csv_blocks()
        assert len(data) > 2 * 1024 * 1024
        path.write_bytes(gzip.compress(data) if ending.endswith(".gz") else data)
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
    assert pickle.loads(pending[0][2]) == {"id": "u1"}


def test_a_csv_manifest_streams_a_block_at_a_time(tmp_path: Path) -> None:
    """A CSV of millions of rows is read a block at a time: Arrow's memory while the rows
    stream stays a fraction of the file (read whole, the table alone was the file's size)."""
    path = tmp_path / "m.csv"
    with path.open("wb") as f:
        f.write(b"id,audio,text\n")
        for i in range(200_000):
            f.write(f"utt-{i:08d},audio/speaker-{i % 97}/{i:08d}.wav,we call it a day\n".encode())
    size = path.stat().st_size
    assert size > 10 * 1024 * 1024
    peak = rows = 0
    for number, row in stream_rows(str(path)):
        rows += 1
        assert row["id"] == f"utt-{number - 1:08d}"
        if number % 5_000 == 0:
            peak = max(peak, pa.total_allocated_bytes())
    assert rows == 200_000
    assert peak < size / 4, (peak, size)


def test_a_truncated_gzip_csv_is_refused_while_it_streams(tmp_path: Path) -> None:
    data = gzip.compress(_csv_blocks())
    path = tmp_path / "m.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedManifestError, match=r"truncated gzip data .* after [\d,]+ rows"):
        list(stream_rows(str(path)))


def _age(path: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def test_a_heartbeat_beats_until_the_run_ends(tmp_path: Path) -> None:
    beat = tmp_path / "_inputs" / "run" / HEARTBEAT
    with Heartbeat(str(tmp_path / "_inputs" / "run"), interval_s=0.05):
        assert beat.is_file()  # written before the run does anything
        _age(beat, 3600)
        deadline = time.monotonic() + 5
        while beat.stat().st_mtime < time.time() - 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert beat.stat().st_mtime > time.time() - 60  # beaten again
    _age(beat, 3600)
    time.sleep(0.2)
    assert beat.stat().st_mtime < time.time() - 60  # and never after


def test_only_the_shards_of_runs_whose_heartbeat_stopped_are_removed(tmp_path: Path) -> None:
    inputs = tmp_path / "_inputs"
    shard = "pass-1/shard-000000.pkl"
    for run in ("own", "beating", "stopped", "killed_before_a_beat", "starting"):
        (inputs / run / "pass-1").mkdir(parents=True)
    Heartbeat(str(inputs / "own")).beat()
    for run in ("beating", "stopped"):
        Heartbeat(str(inputs / run)).beat()
        (inputs / run / shard).write_bytes(b"x")
        _age(inputs / run / shard, 7200)  # shards are old in a long run; the beat decides
    _age(inputs / "stopped" / HEARTBEAT, 1000)
    (inputs / "killed_before_a_beat" / shard).write_bytes(b"x")
    _age(inputs / "killed_before_a_beat" / shard, 1000)

    live = remove_stale_runs(str(inputs), "own", stale_after_s=900)

    assert live == ["beating", "starting"]  # "starting": no file yet, so no age
    assert sorted(p.name for p in inputs.iterdir()) == ["beating", "own", "starting"]


def test_stale_runs_on_s3_are_aged_by_the_storage_clock(s3) -> None:
    client, bucket = s3
    inputs = f"s3://{bucket}/out/_inputs"
    for run in ("stopped", "beating"):
        client.put_object(
            Bucket=bucket, Key=f"out/_inputs/{run}/pass-1/shard-000000.pkl", Body=b"x"
        )
    Heartbeat(f"{inputs}/stopped").beat()
    time.sleep(2.1)  # S3 keeps modification times to the second
    Heartbeat(f"{inputs}/own").beat()
    Heartbeat(f"{inputs}/beating").beat()

    assert remove_stale_runs(inputs, "own", stale_after_s=1) == ["beating"]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert not any("/stopped/" in k for k in keys)
    assert any("/beating/pass-1/" in k for k in keys)
