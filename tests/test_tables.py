import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apa import tables
from apa.schema import Assessment, ErrorRecord
from apa.testing.strategies import assessments


def _unique_ids(items: list[Assessment]) -> list[Assessment]:
    return [a.model_copy(update={"utterance_id": f"u{i}"}) for i, a in enumerate(items)]


@settings(max_examples=60, deadline=None)
@given(st.lists(assessments(allow_none=True), max_size=4))
def test_tables_roundtrip_any_valid_assessments(items: list[Assessment]) -> None:
    items = _unique_ids(items)
    t = tables.assessments_to_tables(items)
    assert t["utterances"].num_rows == len(items)
    assert t["words"].num_rows == sum(len(a.words) for a in items)
    assert tables.tables_to_assessments(t["utterances"], t["words"], t["phones"]) == items


def test_rows_in_any_order_are_placed_by_index() -> None:
    a = _unique_ids([_fixed()])[0]
    t = tables.assessments_to_tables([a])
    shuffled = {k: v.take(pa.array(list(reversed(range(v.num_rows))))) for k, v in t.items()}
    assert tables.tables_to_assessments(**shuffled) == [a]


def test_gaps_in_indices_are_refused() -> None:
    t = tables.assessments_to_tables([_fixed()])
    words = t["words"].slice(1)  # drop word 0
    with pytest.raises(ValueError, match="word_index values"):
        tables.tables_to_assessments(t["utterances"], words, None)


def test_orphan_rows_are_refused() -> None:
    t = tables.assessments_to_tables([_fixed()])
    with pytest.raises(ValueError, match="not in the utterances table"):
        tables.tables_to_assessments(t["utterances"].slice(0, 0), t["words"], t["phones"])


def test_insertion_rows_keep_one_row_per_canonical_phone_apart() -> None:
    t = tables.assessments_to_tables([_fixed()])
    phones = t["phones"].to_pylist()
    inserted = [r for r in phones if r["error"] == "insertion"]
    assert inserted == [
        {
            "utterance_id": "000010011",
            "word_index": 1,
            "phone_index": 3,
            "phone": None,
            "accuracy": None,
            "pronounced": "L",
            "error": "insertion",
            "start": None,
            "end": None,
        }
    ]


@pytest.mark.parametrize("form", ["dir", "utterances_file", "jsonl", "jsonl.gz"])
def test_read_assessments_in_every_form(tmp_path: Path, form: str) -> None:
    items = [_fixed()]
    if form.startswith("jsonl"):
        uri = str(tmp_path / f"pred.{form}")
        tables.write_assessments_jsonl(items, uri)
    else:
        written = tables.write_tables(str(tmp_path / "out"), items, [_error()])
        uri = str(tmp_path / "out") if form == "dir" else written["utterances"]
        assert tables.read_table(written["errors"]).to_pylist()[0]["reason"] == "audio.silent"
    assert tables.read_assessments(uri) == items


def test_read_assessments_from_partitioned_tables_on_s3(s3) -> None:
    client, bucket = s3
    items = _unique_ids([_fixed(), _fixed()])
    t = tables.assessments_to_tables(items)
    for name in ("utterances", "words", "phones"):
        half = t[name].num_rows // 2
        parts = (t[name].slice(0, half), t[name].slice(half))  # as a streaming job writes them
        for i, part in enumerate(parts):
            sink = io.BytesIO()
            pq.write_table(part, sink)
            client.put_object(
                Bucket=bucket, Key=f"run/{name}/part-{i}.parquet", Body=sink.getvalue()
            )
    got = tables.read_assessments(f"s3://{bucket}/run")
    assert sorted(got, key=lambda a: a.utterance_id) == items


def test_missing_predictions_are_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no predictions"):
        tables.read_assessments(str(tmp_path / "nothing"))
    (tmp_path / "other.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="expected a table directory"):
        tables.read_assessments(str(tmp_path / "other.parquet"))


def _error() -> ErrorRecord:
    return ErrorRecord(
        utterance_id="x", stage="audio", reason="audio.silent", message="peak -80 dBFS"
    )


def _fixed() -> Assessment:
    return Assessment.model_validate(
        {
            "utterance_id": "000010011",
            "text": "WE CALL",
            "sentence": dict(accuracy=8, fluency=9, prosody=None, completeness=10, total=8),
            "words": [
                {
                    "text": "WE",
                    "accuracy": 10,
                    "stress": 10,
                    "total": 10,
                    "phones": [{"phone": "W", "accuracy": 2}, {"phone": "IY0", "accuracy": 1.8}],
                    "start": 0.1,
                    "end": 0.4,
                },
                {
                    "text": "CALL",
                    "accuracy": 4.5,
                    "stress": None,
                    "total": 5,
                    "phones": [
                        {"phone": "K", "accuracy": 0.2, "pronounced": "G", "error": "substitution"},
                        {"phone": "AO0", "accuracy": 0, "error": "deletion"},
                        {"phone": "L", "accuracy": 2},
                    ],
                    "insertions": [{"position": 3, "phone": "L"}],
                },
            ],
            "model": "builtin:gop",
        }
    )
