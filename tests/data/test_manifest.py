"""Manifests in JSONL, CSV and Parquet, local and on S3 (moto on loopback)."""

from __future__ import annotations

import copy
import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apa.data.manifest import manifest_row, read_manifest, write_manifest
from apa.data.scores_json import assessment_from_upstream
from apa.data.speechocean762 import prepare_speechocean762
from apa.lexicon import Lexicon

SCORES: dict[str, Any] = {
    "accuracy": 8,
    "completeness": 10.0,
    "fluency": 9,
    "prosodic": 7,
    "total": 8,
    "words": [
        {"accuracy": 10, "stress": 10, "total": 10, "text": "WE", "phones": "W IY0",
         "phones-accuracy": [2.0, 2.0]},
        {"accuracy": 5, "stress": 10, "total": 5, "text": "CALL", "phones": "K AO0 L",
         "phones-accuracy": [2.0, 0.2, 1.8],
         "mispronunciations": [{"canonical-phone": "AO0", "index": 1, "pronounced-phone": "AA"}]},
    ],
}  # fmt: skip

ROWS: list[dict[str, Any]] = [
    {"id": "000010011", "audio": "wav/a.flac", "text": "We call.", "speaker": "0001",
     "age": 6, "gender": "m", "phones": ["W IY0", "K AO0 L"]},
    {"id": "u2", "audio": "/abs/b.flac", "text": "WE CALL"},
    {"id": "u3", "audio": "s3://other/c.flac", "text": "WE CALL", **SCORES},
]  # fmt: skip


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _csv(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    return out.getvalue()


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows]), path)


def _check_rows(manifest, base: str) -> None:
    assert manifest.errors == []
    first, second, third = manifest.utterances
    assert (first.id, first.text, first.speaker, first.age, first.gender) == (
        "000010011", "We call.", "0001", 6, "m",
    )  # fmt: skip
    assert first.audio == f"{base}/wav/a.flac"
    assert first.phones == [["W", "IY0"], ["K", "AO0", "L"]]
    assert first.human is None
    assert (second.audio, second.phones, second.human) == ("/abs/b.flac", None, None)
    assert third.audio == "s3://other/c.flac"
    assert third.human == assessment_from_upstream("u3", {**SCORES, "text": "WE CALL"})
    assert third.human.words[1].phones[1].pronounced == "AA"
    assert third.phones == [["W", "IY0"], ["K", "AO0", "L"]]  # the phones the raters scored


def test_jsonl_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(_jsonl(ROWS))
    manifest = read_manifest(path)
    assert manifest.uri == str(path)
    _check_rows(manifest, str(tmp_path))


def test_gzipped_jsonl_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(gzip.compress(_jsonl(ROWS).encode()))
    _check_rows(read_manifest(str(path)), str(tmp_path))


def test_csv_manifest_keeps_ids_as_text(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(_csv(ROWS))
    _check_rows(read_manifest(path), str(tmp_path))


def test_parquet_manifest(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "m.parquet"
    path.parent.mkdir()
    rows = copy.deepcopy(ROWS)
    rows[0]["phones"] = [["W", "IY0"], ["K", "AO0", "L"]]  # nested lists work too
    for word in rows[2]["words"]:
        word.setdefault("mispronunciations", [])
    _write_parquet(rows, path)
    assert pa.types.is_list(pq.read_schema(path).field("words").type)  # nested, not JSON
    _check_rows(read_manifest(path), str(tmp_path / "sub"))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_manifest_without_scores_and_the_lexicon_fills_phones(tmp_path: Path, suffix: str) -> None:
    rows = [
        {"id": "a", "audio": "a.wav", "text": "we call it"},
        {"id": "b", "audio": "b.wav", "text": "we call a xylophone"},
        {"id": "c", "audio": "c.wav", "text": "we call qzxwv"},
    ]
    path = tmp_path / f"m{suffix}"
    if suffix == ".parquet":
        _write_parquet(rows, path)
    else:
        path.write_text(_jsonl(rows) if suffix == ".jsonl" else _csv(rows))
    lexicon = Lexicon({"WE": [["W", "IY0"]], "CALL": [["K", "AO0", "L"]], "IT": [["IH0", "T"]]})
    manifest = read_manifest(path, lexicon.with_fallback(Lexicon.cmudict()))
    a, b = manifest.utterances
    assert a.phones == [["W", "IY0"], ["K", "AO0", "L"], ["IH0", "T"]]
    assert b.phones[3] == ["Z", "AY1", "L", "AH0", "F", "OW2", "N"]
    assert all(u.human is None and u.audio == str(tmp_path / f"{u.id}.wav") for u in (a, b))
    (error,) = manifest.errors
    assert (error.utterance_id, error.stage) == ("c", "lexicon")
    assert error.reason == "lexicon.unknown_word"
    assert "'QZXWV'" in error.message
    assert read_manifest(path).utterances[0].phones is None  # no lexicon: no phones guessed


def _ids(manifest) -> list[str]:
    return [u.id for u in manifest.utterances] + [e.utterance_id for e in manifest.errors]


def test_one_malformed_json_line_is_one_error_row(tmp_path: Path) -> None:
    lines = _jsonl(ROWS).splitlines()
    lines.insert(1, '{"id": "broken", "audio": "x.wav", "text": ')
    lines.insert(3, "")
    lines.insert(4, '["not", "an", "object"]')
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    manifest = read_manifest(path)
    assert [u.id for u in manifest.utterances] == ["000010011", "u2", "u3"]
    assert [(e.utterance_id, e.reason) for e in manifest.errors] == [
        ("<row 2>", "input.malformed_row"),
        ("<row 5>", "input.malformed_row"),
    ]
    assert manifest.errors[0].raw.startswith('{"id": "broken"')


def test_bad_rows_become_errors_and_counts_add_up(tmp_path: Path) -> None:
    rows = [
        {"id": "ok", "audio": "a.wav", "text": "we"},
        {"id": "dup", "audio": "b.wav", "text": "we"},
        {"id": "no-text", "audio": "c.wav", "text": "  "},
        {"id": "dup", "audio": "d.wav", "text": "call"},
        {"id": "", "audio": "e.wav", "text": "we"},
        {"audio": "f.wav", "text": "we"},
        {"id": "no-audio", "text": "we"},
        {"id": "bad-age", "audio": "g.wav", "text": "we", "age": "old"},
        {"id": "bad-scores", "audio": "h.wav", "text": "we call", **SCORES, "fluency": 12},
        {"id": "partial-scores", "audio": "i.wav", "text": "we", "accuracy": 7},
        {"id": "bad-phones", "audio": "j.wav", "text": "we call", "phones": ["W IY0"]},
        {"id": "ok2", "audio": "k.wav", "text": "call"},
        {"id": "dup", "audio": "l.wav", "text": "we"},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text(_jsonl(rows))
    manifest = read_manifest(path)
    assert [u.id for u in manifest.utterances] == ["ok", "ok2"]
    reasons = {e.utterance_id: e.reason for e in manifest.errors}
    assert reasons == {
        "dup": "input.duplicate_id",
        "no-text": "input.missing_field",
        "<row 5>": "input.missing_field",
        "<row 6>": "input.missing_field",
        "no-audio": "input.no_audio",
        "bad-age": "input.invalid_field",
        "bad-scores": "input.invalid_scores",
        "partial-scores": "input.invalid_scores",
        "bad-phones": "input.invalid_field",
    }
    messages = {e.utterance_id: e.message for e in manifest.errors}
    assert "rows 2, 4, 13" in messages["dup"]
    assert "sentence.fluency" in messages["bad-scores"]
    assert "sentence.fluency: Field required" in messages["partial-scores"]
    assert "age" in messages["bad-age"]
    distinct_ids = {r.get("id") or f"<row {n}>" for n, r in enumerate(rows, 1)}
    assert len(_ids(manifest)) == len(set(_ids(manifest))) == len(distinct_ids) == 11
    assert set(_ids(manifest)) == distinct_ids


def test_a_csv_row_with_the_wrong_number_of_cells_is_one_error_row(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        'id,audio,text\n'
        'a,a.wav,"WE\nCALL"\n'
        'b,b.wav\n'
        'c,c.wav,WE,extra\n'
        '000010011,d.wav,WE\n'
        ',e.wav,WE\n'
    )  # fmt: skip
    manifest = read_manifest(path)
    assert [(u.id, u.words) for u in manifest.utterances] == [
        ("a", ["WE", "CALL"]),
        ("000010011", ["WE"]),
    ]
    assert [(e.utterance_id, e.reason) for e in manifest.errors] == [
        ("<row 2>", "input.malformed_row"),
        ("<row 3>", "input.malformed_row"),
        ("<row 5>", "input.missing_field"),
    ]
    assert manifest.errors[1].raw == "c,c.wav,WE,extra"


def test_csv_scores_with_a_bad_words_cell(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    rows = [{**ROWS[2], "id": "broken"}, {**ROWS[2], "id": "fine"}]
    text = _csv(rows)
    assert text.count('"[{""accuracy"": 10') == 2
    path.write_text(text.replace('"[{""accuracy"": 10', '"[{""accuracy"" 10', 1))
    manifest = read_manifest(path)
    assert [u.id for u in manifest.utterances] == ["fine"]
    assert manifest.utterances[0].human is not None
    (error,) = manifest.errors
    assert (error.utterance_id, error.reason) == ("broken", "input.invalid_scores")
    assert "words: not valid JSON" in error.message


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown manifest format"):
        read_manifest(tmp_path / "m.tsv")
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "none.jsonl")


def test_manifest_on_s3_resolves_relative_audio_to_s3(s3) -> None:
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="sets/a/m.jsonl", Body=_jsonl(ROWS).encode())
    client.put_object(Bucket=bucket, Key="sets/a/m.csv", Body=_csv(ROWS).encode())
    for name in ("m.jsonl", "m.csv"):
        manifest = read_manifest(f"s3://{bucket}/sets/a/{name}")
        _check_rows(manifest, f"s3://{bucket}/sets/a")
        assert manifest.utterances[0].audio == f"s3://{bucket}/sets/a/wav/a.flac"


def test_prepared_corpus_round_trips_through_a_manifest(tmp_path: Path, sample_dir: Path) -> None:
    corpus = prepare_speechocean762(sample_dir)
    path = tmp_path / "out" / "speechocean762.jsonl"
    write_manifest(corpus.utterances, path)
    back = read_manifest(path)
    assert back.errors == [] and back.utterances == corpus.utterances
    assert len(path.read_text().splitlines()) == 200


def test_human_scores_round_trip_through_manifests(tmp_path: Path, s3) -> None:
    manifest = read_manifest(_write(tmp_path / "m.jsonl", _jsonl(ROWS)))
    assert json.loads(json.dumps(manifest_row(manifest.utterances[2])))["prosodic"] == 7
    for uri in (str(tmp_path / "copy.jsonl.gz"), f"s3://{s3[1]}/out/copy.jsonl"):
        write_manifest(manifest.utterances, uri)
        assert read_manifest(uri).utterances == manifest.utterances
    assert gzip.decompress((tmp_path / "copy.jsonl.gz").read_bytes()).count(b"\n") == 3
    with pytest.raises(ValueError, match="JSONL"):
        write_manifest(manifest.utterances, tmp_path / "copy.csv")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _many_rows(n: int) -> list[dict[str, Any]]:
    return [{"id": f"u{i}", "audio": f"{i}.wav", "text": "WE CALL"} for i in range(n)]


def _damaged_gzip(damage: str, text: str) -> bytes:
    data = gzip.compress(text.encode(), mtime=0)
    if damage == "truncated":
        return data[: len(data) // 2]
    if damage == "checksum":  # the CRC32 in the 8-byte trailer
        return data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:]
    if damage == "not_gzip":
        return text.encode()
    if damage == "corrupt_stream":
        return data[:12] + b"\xff" * 16 + data[28:]
    raise AssertionError(damage)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("truncated", ["truncated gzip data", "end-of-stream marker"]),
        ("checksum", ["corrupt gzip data (CRC check failed); refusing"]),
        ("not_gzip", ["corrupt gzip data (Not a gzipped file"]),
        ("corrupt_stream", ["corrupt gzip data", "while decompressing"]),
    ],
)
@pytest.mark.parametrize("suffix", [".jsonl.gz", ".csv.gz"])
def test_damaged_gzip_manifest_is_refused_as_a_whole(
    tmp_path: Path, damage: str, words: list[str], suffix: str
) -> None:
    """Never a bare EOFError (``apa score`` printed only "Aborted."), never a prefix scored
    as if it were the whole input: a ValueError naming the file and the damage."""
    from apa.data.manifest import DamagedManifestError

    rows = _many_rows(2000)
    path = tmp_path / f"m{suffix}"
    path.write_bytes(_damaged_gzip(damage, _jsonl(rows) if "jsonl" in suffix else _csv(rows)))
    with pytest.raises(DamagedManifestError) as info:
        read_manifest(path)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert str(path) in message and "refusing the whole file" in message
    for word in words:
        assert word in message, message


def test_truncated_gzip_manifest_says_how_far_it_reads(tmp_path: Path) -> None:
    from apa.data.manifest import DamagedManifestError

    text = _jsonl(_many_rows(5000))
    data = gzip.compress(text.encode(), mtime=0)
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(DamagedManifestError, match=r"after [\d,]+ complete lines") as info:
        read_manifest(path)
    lines = int(str(info.value).split("after ")[1].split(" complete")[0].replace(",", ""))
    assert 0 < lines < 5000


def test_multi_member_gzip_manifest_is_read_whole(tmp_path: Path) -> None:
    """``cat a.jsonl.gz b.jsonl.gz`` is valid gzip: every member is read."""
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(
        gzip.compress(_jsonl(ROWS[:1]).encode()) + gzip.compress(_jsonl(ROWS[1:]).encode())
    )
    _check_rows(read_manifest(path), str(tmp_path))


def test_invalid_utf8_is_one_error_row_in_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_bytes(
        b'{"id": "bad", "audio": "a.wav", "text": "WE \xff CALL"}\n'
        b'{"id": "good", "audio": "b.wav", "text": "WE CALL"}\n'
    )
    csv_path = tmp_path / "m.csv"
    csv_path.write_bytes(b"id,audio,text\nbad,a.wav,WE \xff CALL\ngood,b.wav,WE CALL\n")
    for path, where in ((jsonl, "line 1"), (csv_path, "CSV row 1: text")):
        manifest = read_manifest(path)
        assert [u.id for u in manifest.utterances] == ["good"]
        (error,) = manifest.errors
        assert (error.utterance_id, error.reason) == ("<row 1>", "input.malformed_row")
        assert where in error.message and "utf-8" in error.message.lower()
        assert "WE \ufffd CALL" in error.raw
