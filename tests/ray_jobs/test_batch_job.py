"""The batch job end to end on local Ray (the session's ``ray_local``), with builtin:gop."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from collections import Counter

import pytest
from typer.testing import CliRunner

from apa.batch.commits import read_commits
from apa.data.inputs import read_utterances
from apa.data.manifest import DamagedManifestError
from apa.models.errors import ModelLoadError
from apa.scoring.run import run_scoring
from apa.scoring.settings import ScoringSettings
from apa.synth.demo import BAD_ROWS
from apa.tables import read_assessments, read_table
from ray_jobs.batch_score import app as batch_app
from ray_jobs.batch_score import run_batch
from tests.ray_jobs.conftest import job_settings, sorted_tables

pytestmark = pytest.mark.integration


def _ids(out: str, table: str) -> list[str]:
    return read_table(f"{out}/{table}").column("utterance_id").to_pylist()


def test_job_on_the_sample_writes_the_tables_apa_score_writes(ray_local, sample_dir, tmp_path):
    corpus = str(sample_dir / "test")
    out = str(tmp_path / "ray")
    summary = run_batch(job_settings(corpus, out, limit=5, rows_per_part=2))
    in_process = run_scoring(
        corpus, str(tmp_path / "inproc"), ScoringSettings(model="builtin:gop"), limit=5
    )

    assert sorted_tables(out) == sorted_tables(str(tmp_path / "inproc"))
    assert summary.scored == in_process.scored == 5
    assert summary.inputs == summary.scored + summary.errors == summary.processed
    assert summary.lm_forward_passes_per_utterance is None  # no language model
    assert len(read_commits(out)) >= 3  # rows_per_part=2: several part sets
    assert [a.utterance_id for a in read_assessments(out)]  # apa evaluate can read it
    written = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert written["inputs"] == summary.inputs and written["audio_hours"] > 0


def test_an_lmm_jobs_summary_counts_its_forward_passes_per_utterance(
    ray_local, demo_manifest, tmp_path
):
    """As ``apa score`` reports it: 1 in one-pass mode, the actors' two calls at once and
    the commits' regrouping of rows notwithstanding (``None`` for GOP, above)."""
    scoring = ScoringSettings(model="builtin:tiny-qwen2-audio", mode="one-pass", batch_size=2)
    out = str(tmp_path / "out")
    summary = run_batch(job_settings(str(demo_manifest), out, scoring=scoring, rows_per_part=3))
    assert (summary.scored, summary.errors) == (4, 4)
    assert summary.scorer is not None and summary.scorer.model_is_random
    assert summary.lm_forward_passes_per_utterance == 1.0


def test_bad_rows_land_in_errors_and_counts_add_up(ray_local, demo_manifest, tmp_path):
    out = str(tmp_path / "out")
    summary = run_batch(job_settings(str(demo_manifest), out))

    errors = read_table(f"{out}/errors").to_pylist()
    assert {e["utterance_id"]: e["reason"] for e in errors} == BAD_ROWS
    source = read_utterances(str(demo_manifest))
    all_ids = _ids(out, "utterances") + _ids(out, "errors")
    assert Counter(all_ids) == Counter(
        [u.id for u in source.utterances] + [e.utterance_id for e in source.errors]
    )
    assert summary.errors_by_reason == dict(Counter(BAD_ROWS.values()))
    assert summary.scored == 4 and summary.inputs == 8


def test_the_driver_never_reads_the_manifest_and_every_row_is_accounted_for(
    ray_local, demo_manifest, tmp_path, monkeypatch
):
    """A manifest with unreadable rows and a duplicated id: the driver reads none of it
    (both whole-file readers raise in its process), and still every input ends up once in
    the tables: inputs = scored + errors, as the whole-file read counts them."""
    lines = demo_manifest.read_text().splitlines()
    first = json.loads(lines[0])
    lines += ["not json", json.dumps({"audio": "x.wav", "text": "no id"}), json.dumps(first)]
    manifest = demo_manifest.parent / "with-duplicates.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    source = read_utterances(str(manifest))
    expected = Counter([u.id for u in source.utterances] + [e.utterance_id for e in source.errors])

    def refuse(*args, **kwargs):
        raise AssertionError("the driver read the manifest")

    monkeypatch.setattr("ray_jobs.batch_score.read_utterances", refuse)
    monkeypatch.setattr("apa.data.manifest.read_rows", refuse)
    out = str(tmp_path / "out")
    # shards of a run killed outright an hour ago (its heartbeat stopped), and of one going on
    inputs = tmp_path / "out" / "_inputs"
    for run, age_s in (("killed", 3600), ("running", 0)):
        (inputs / run / "pass-1").mkdir(parents=True)
        for name in ("heartbeat", "pass-1/shard-000000.pkl"):
            (inputs / run / name).write_bytes(b"x")
            stamp = time.time() - age_s
            os.utime(inputs / run / name, (stamp, stamp))
    # one row per read block: one row per shard, ten shards over the lanes
    summary = run_batch(job_settings(str(manifest), out, rows_per_part=3, rows_per_read_block=1))

    assert Counter(_ids(out, "utterances") + _ids(out, "errors")) == expected
    # the run's shards are gone, and the killed run's; the running run's are left alone
    assert [p.name for p in inputs.iterdir()] == ["running"]
    errors = {e["utterance_id"]: e["reason"] for e in read_table(f"{out}/errors").to_pylist()}
    assert errors[first["id"]] == "input.duplicate_id"
    assert (errors["<row 9>"], errors["<row 10>"]) == ("input.malformed_row", "input.missing_field")
    assert summary.inputs == summary.scored + summary.errors == sum(expected.values()) == 10
    assert (summary.processed, summary.passes) == (10, 1)


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_manifest_that_cannot_be_read_whole_stops_the_job_as_its_own_error(
    ray_local, demo_manifest, tmp_path, damage
):
    """The index task refuses it on a worker; the driver raises what it raised (``apa``'s
    exit 2), not Ray's wrapper, having scored nothing and left no shards."""
    manifest = tmp_path / "m.jsonl.gz"
    if damage == "truncated":
        data = gzip.compress(demo_manifest.read_bytes() * 20)
        manifest.write_bytes(data[: len(data) // 2])
    error = FileNotFoundError if damage == "missing" else DamagedManifestError
    with pytest.raises(error):
        run_batch(job_settings(str(manifest), str(tmp_path / "out")))
    assert not list((tmp_path / "out").glob("_commits/*"))
    assert not list((tmp_path / "out").glob("_inputs/*"))


def test_resume_after_a_stopped_run_ends_as_an_uninterrupted_run(
    ray_local, demo_manifest, tmp_path
):
    whole = str(tmp_path / "whole")
    run_batch(job_settings(str(demo_manifest), whole))

    resumed = tmp_path / "resumed"
    first = run_batch(job_settings(str(demo_manifest), str(resumed), limit=2, rows_per_part=1))
    # the first 2 utterances, and the one row that was no utterance (empty text) at all
    assert (first.scored, first.errors, first.processed) == (2, 1, 3)
    # the stopped run also left a batch that died before its commit: its words part is on
    # disk under its pending name, and a committed part set lost its commit
    shutil.copy(
        next((tmp_path / "whole" / "words").glob("part-*.parquet")),
        resumed / "words" / "_pending-0123456789abcdef.parquet",
    )
    lost = sorted((resumed / "_commits").glob("*.json"))[0]
    lost_ids = set(json.loads(lost.read_text())["scored"]) | set(
        json.loads(lost.read_text())["errors"]
    )
    lost.unlink()
    # and a run killed outright left its shards: never read by another run (their key check
    # would fail), only reported
    stale = resumed / "_inputs" / "killedrun" / "pass-1" / "shard-000000.pickle"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\x00" * 64)

    second = run_batch(job_settings(str(demo_manifest), str(resumed)))
    assert len(lost_ids) == 1
    assert (second.processed, second.skipped) == (8 - 3 + 1, 3 - 1)
    assert second.inputs == 8 and second.scored == 4
    assert sorted_tables(str(resumed)) == sorted_tables(whole)
    assert [p.name for p in (resumed / "_inputs").iterdir()] == ["killedrun"]

    again = run_batch(job_settings(str(demo_manifest), str(resumed)))  # idempotent
    assert again.processed == 0 and again.inputs == 8
    assert sorted_tables(str(resumed)) == sorted_tables(whole)


def test_input_and_output_on_s3(ray_local, s3, demo_manifest, tmp_path):
    client, bucket = s3
    corpus = demo_manifest.parent
    for wav in sorted((corpus / "wav").glob("*.wav")):
        client.upload_file(str(wav), bucket, f"corpus/wav/{wav.name}")
    client.upload_file(str(demo_manifest), bucket, "corpus/manifest.jsonl")
    out = f"s3://{bucket}/scores/run1"

    summary = run_batch(job_settings(f"s3://{bucket}/corpus/manifest.jsonl", out))
    assert (summary.scored, summary.errors) == (4, 4)
    assert sorted(a.utterance_id for a in read_assessments(out)) == [
        f"demo_{i:03d}" for i in range(4)
    ]
    written = client.get_object(Bucket=bucket, Key="scores/run1/summary.json")["Body"].read()
    assert json.loads(written)["errors_by_reason"] == summary.errors_by_reason


def test_an_s3_prefix_of_audio_with_a_sidecar_of_texts(ray_local, s3, demo_manifest, tmp_path):
    client, bucket = s3
    wav_dir = demo_manifest.parent / "wav"
    for name in ("demo_000", "demo_001", "corrupt"):
        client.upload_file(str(wav_dir / f"{name}.wav"), bucket, f"audio/{name}.wav")
    texts = [
        {"id": "demo_000", "text": "we call it bear"},
        {"id": "demo_001", "text": "the cat sat on the mat"},
        {"id": "corrupt", "text": "we call it bear"},
        {"id": "no_such_audio", "text": "hello"},
    ]
    body = "".join(json.dumps(t) + "\n" for t in texts).encode()
    client.put_object(Bucket=bucket, Key="texts.jsonl", Body=body)
    out = str(tmp_path / "out")

    summary = run_batch(
        job_settings(f"s3://{bucket}/audio/", out, texts=f"s3://{bucket}/texts.jsonl")
    )
    assert sorted(_ids(out, "utterances")) == ["demo_000", "demo_001"]
    errors = {e["utterance_id"]: e["reason"] for e in read_table(f"{out}/errors").to_pylist()}
    assert errors == {"corrupt": "audio.undecodable", "no_such_audio": "input.no_audio"}
    assert summary.inputs == 4


@pytest.mark.parametrize(
    ("model", "reason", "says"),
    [
        ("builtin:no-such-model", "model.unknown_builtin", "builtin:no-such-model"),
        ("./no/such/dir", "model.not_found", "./no/such/dir"),
        ("model_that_cannot_run", "model.cannot_run", "but got 80 channels"),
    ],
)
def test_a_model_that_cannot_be_loaded_stops_the_job_as_its_own_error(
    ray_local, demo_manifest, tmp_path, request, model, reason, says
):
    """The scorer actors fail to start; the driver raises their ``ModelLoadError`` (the
    CLI's exit 2 with its reason), not Ray's wrappers, having committed nothing. A model
    that loads and cannot score (``model_that_cannot_run``) fails the same way, at its
    self-check, instead of writing an error row for every input."""
    if model == "model_that_cannot_run":
        model = str(request.getfixturevalue(model))
    scoring = ScoringSettings(model=model)
    with pytest.raises(ModelLoadError) as raised:
        run_batch(job_settings(str(demo_manifest), str(tmp_path / "out"), scoring=scoring))
    assert raised.value.reason == reason
    assert says in raised.value.message
    assert not list((tmp_path / "out").glob("_commits/*"))
    assert not list((tmp_path / "out").glob("_inputs/*"))


def test_the_job_ends_on_a_model_that_cannot_be_loaded_with_its_reason_and_exit_2(
    ray_local, demo_manifest, tmp_path, monkeypatch
):
    """The last line is the reason (above it, Ray Data's own log of the failure)."""
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")  # restored after: main() sets them
    monkeypatch.setenv("MIMALLOC_PURGE_DELAY", "0")
    monkeypatch.setattr("ray_jobs.batch_score.signal.signal", lambda *args: None)
    args = ["--input", str(demo_manifest), "--output", str(tmp_path / "out")]
    result = CliRunner().invoke(batch_app, [*args, "--model", "builtin:no-such-model"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: cannot load the model (model.unknown_builtin): unknown built-in model "
        "'builtin:no-such-model': expected one of builtin:tiny-qwen2-audio, builtin:tiny-phi4mm"
    )
