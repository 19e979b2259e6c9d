"""`apa evaluate` end to end: files in, table printed, metrics.json + report + plots out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apa import tables
from apa.cli import app
from apa.data.scores_json import assessment_to_upstream
from apa.metrics.evaluate import evaluate
from apa.metrics.result import Evaluation
from apa.schema import Assessment
from apa.testing.factories import synthetic_scores

runner = CliRunner()


def _gold_json(tmp_path: Path, gold: list[Assessment]) -> Path:
    path = tmp_path / "scores.json"
    path.write_text(json.dumps({g.utterance_id: assessment_to_upstream(g) for g in gold}))
    return path


def _run(*args: str):
    result = runner.invoke(app, ["evaluate", *args])
    return result


def test_evaluate_writes_metrics_report_and_plots(tmp_path: Path) -> None:
    gold, pred = synthetic_scores(n=30, noise=1.0, seed=3)
    pred = [p.model_copy(update={"model_is_random": True}) for p in pred]
    gold_path = _gold_json(tmp_path, gold)
    tables.write_tables(str(tmp_path / "pred"), pred)
    out = tmp_path / "eval"
    result = _run(
        "--pred",
        str(tmp_path / "pred"),
        "--gold",
        str(gold_path),
        "--out",
        str(out),
        "--resamples",
        "50",
    )
    assert result.exit_code == 0, result.output
    assert "PCC" in result.output and "fluency" in result.output

    evaluation = Evaluation.model_validate_json((out / "metrics.json").read_text())
    # The CLI computes what the library computes on the same inputs (gold read back from
    # scores.json carries model="human"; scores are the same).
    expected = evaluate({"pred": pred}, gold, n_resamples=50)
    assert evaluation.systems[0].aspects == expected.systems[0].aspects
    assert evaluation.systems[0].model_is_random

    report = (out / "report.md").read_text()
    assert "random weights" in report
    for level, aspect in [("sentence", "prosody"), ("word", "stress"), ("phone", "accuracy")]:
        png = out / "plots" / f"{level}_{aspect}.png"
        assert f"](plots/{png.name})" in report
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_systems_side_by_side_with_difference_ci(tmp_path: Path) -> None:
    gold, good = synthetic_scores(n=60, noise=0.5, seed=4)
    _, bad = synthetic_scores(n=60, noise=4.0, seed=4)
    gold_path = _gold_json(tmp_path, gold)
    tables.write_assessments_jsonl(good, str(tmp_path / "finetuned.jsonl"))
    tables.write_assessments_jsonl(bad, str(tmp_path / "zeroshot.jsonl"))
    out = tmp_path / "eval"
    result = _run(
        "--pred",
        str(tmp_path / "finetuned.jsonl"),
        "--pred",
        str(tmp_path / "zeroshot.jsonl"),
        "--gold",
        str(gold_path),
        "--out",
        str(out),
        "--resamples",
        "200",
    )
    assert result.exit_code == 0, result.output
    evaluation = Evaluation.model_validate_json((out / "metrics.json").read_text())
    assert [s.name for s in evaluation.systems] == ["finetuned", "zeroshot"]
    diff = {(d.level, d.aspect): d for d in evaluation.differences}
    accuracy = diff[("sentence", "accuracy")]
    assert (accuracy.a, accuracy.b) == ("finetuned", "zeroshot")
    assert accuracy.pcc.ci_low > 0  # the better system is better, and the CI says so
    assert "ΔPCC" in result.output
    assert "finetuned − zeroshot" in (out / "report.md").read_text()


def test_units_that_do_not_join_are_counted_and_printed(tmp_path: Path) -> None:
    gold, pred = synthetic_scores(n=10, seed=5)
    pred = pred[2:] + [pred[2]]  # two utterances missing, one duplicated
    gold_path = _gold_json(tmp_path, gold)
    tables.write_assessments_jsonl(pred, str(tmp_path / "p.jsonl"))
    out = tmp_path / "eval"
    result = _run(
        "--pred",
        str(tmp_path / "p.jsonl"),
        "--gold",
        str(gold_path),
        "--out",
        str(out),
        "--resamples",
        "0",
    )
    assert result.exit_code == 0, result.output
    assert "2 human only" in result.output and "1 duplicate" in result.output
    join = Evaluation.model_validate_json((out / "metrics.json").read_text()).systems[0].join
    sentence = next(j for j in join if j.level == "sentence")
    assert (sentence.matched, sentence.gold_only, sentence.duplicate_predictions) == (8, 2, 1)


@pytest.mark.parametrize(
    ("pred", "gold", "message"),
    [
        ("missing.jsonl", "scores.json", "missing.jsonl"),
        ("p.jsonl", "nothing.json", "nothing.json"),
        ("p.jsonl", "empty.json", "no human scores"),
    ],
)
def test_bad_inputs_fail_with_a_message(tmp_path: Path, pred: str, gold: str, message: str):
    g, p = synthetic_scores(n=3)
    _gold_json(tmp_path, g)
    (tmp_path / "empty.json").write_text("{}")
    tables.write_assessments_jsonl(p, str(tmp_path / "p.jsonl"))
    result = _run(
        "--pred", str(tmp_path / pred), "--gold", str(tmp_path / gold), "--out", str(tmp_path / "o")
    )
    assert result.exit_code == 2
    assert message in result.output


def test_console_script_is_installed(tmp_path: Path) -> None:
    gold, pred = synthetic_scores(n=5, seed=6)
    gold_path = _gold_json(tmp_path, gold)
    tables.write_assessments_jsonl(pred, str(tmp_path / "p.jsonl"))
    apa = Path(sys.executable).parent / "apa"
    done = subprocess.run(
        [
            str(apa),
            "evaluate",
            "--pred",
            str(tmp_path / "p.jsonl"),
            "--gold",
            str(gold_path),
            "--out",
            str(tmp_path / "o"),
            "--resamples",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "metrics.json").exists()
    # Jobs log JSON lines to stderr.
    events = [
        json.loads(line)["event"] for line in done.stderr.splitlines() if line.startswith("{")
    ]
    assert "inputs_read" in events and "evaluated" in events


def test_prepare_writes_a_manifest_that_reads_back(tmp_path: Path, sample_dir: Path) -> None:
    from apa.data.manifest import read_manifest

    out = tmp_path / "train.jsonl.gz"
    result = runner.invoke(app, ["prepare", str(sample_dir), "--out", str(out), "--split", "train"])
    assert result.exit_code == 0, result.output
    assert "100 utterances written" in result.output and "0 errors" in result.output
    manifest = read_manifest(str(out))
    assert len(manifest.utterances) == 100 and not manifest.errors
    first = manifest.utterances[0]
    assert Path(first.audio).is_file() and first.phones is not None


# --- apa score: bad inputs end as error rows or a clear refusal, never a hang or a crash ---


def _score(*args: str, timeout: float = 300, fifo: Path | None = None):
    """``apa score`` in a thread, failing (not hanging) the test if it has not finished
    within ``timeout``; a writer that comes and goes then frees a reader blocked on ``fifo``."""
    import os
    import threading

    done: list = []
    thread = threading.Thread(
        target=lambda: done.append(runner.invoke(app, ["score", *args])), daemon=True
    )
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"apa score still running after {timeout} s")
    return done[0]


def _errors(out: Path) -> list:
    from apa.schema import ErrorRecord

    rows = tables.read_table(str(out / "errors.parquet")).to_pylist()
    return [ErrorRecord.model_validate(r) for r in rows]


def _float_wav(path: Path, peak: float) -> Path:
    import numpy as np
    import soundfile as sf

    t = np.arange(16000) / 16000
    sf.write(path, (peak * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, "FLOAT")
    return path


def test_score_turns_each_bad_input_into_its_error_row(
    tmp_path: Path, sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from apa.data.speechocean762 import prepare_speechocean762
    from apa.scoring.summary import RunSummary

    monkeypatch.setenv("APA_AUDIO_MAX_BYTES", str(1024 * 1024))
    good = prepare_speechocean762(sample_dir / "test").utterances[0]
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    big = tmp_path / "big.wav"
    with big.open("wb") as f:
        f.truncate(8 * 1024 * 1024)  # sparse
    rows = {
        "good": {"audio": good.audio, "text": good.text},
        "long_text": {"audio": good.audio, "text": "WE CALL IT BEAR " * 320},
        "fifo": {"audio": str(fifo), "text": good.text},
        "directory": {"audio": str(tmp_path), "text": good.text},
        "big": {"audio": str(big), "text": good.text},
        "extreme_float": {"audio": str(_float_wav(tmp_path / "loud.wav", 3e38)), "text": "WE"},
    }
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": k, **v}) + "\n" for k, v in rows.items()))
    out = tmp_path / "scores"
    result = _score(
        "--input", str(manifest), "--output", str(out), "--model", "builtin:gop", fifo=fifo
    )
    assert result.exit_code == 0, result.output
    summary = RunSummary.model_validate_json((out / "summary.json").read_text())
    assert (summary.inputs, summary.scored, summary.errors) == (6, 1, 5)
    errors = {e.utterance_id: e for e in _errors(out)}
    assert {k: e.reason for k, e in errors.items()} == {
        "long_text": "input.text_too_long",
        "fifo": "audio.unreadable",
        "directory": "audio.unreadable",
        "big": "audio.too_large",
        "extreme_float": "audio.out_of_range",
    }
    assert "5,120 characters, over the 1,000-character limit" in errors["long_text"].message
    assert "FIFO" in errors["fifo"].message
    assert "8,388,608 bytes" in errors["big"].message


def test_score_text_limit_comes_from_the_environment(
    tmp_path: Path, sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apa.data.speechocean762 import prepare_speechocean762
    from apa.scoring.summary import RunSummary

    utterances = prepare_speechocean762(sample_dir / "test").utterances[:2]
    short, long = sorted(utterances, key=lambda u: len(u.text))
    assert len(short.text) < len(long.text)
    monkeypatch.setenv("APA_MAX_TEXT_CHARS", str(len(short.text)))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"id": u.id, "audio": u.audio, "text": u.text}) + "\n" for u in (short, long)
        )
    )
    out = tmp_path / "scores"
    result = _score("--input", str(manifest), "--output", str(out), "--model", "builtin:gop")
    assert result.exit_code == 0, result.output
    summary = RunSummary.model_validate_json((out / "summary.json").read_text())
    assert summary.errors_by_reason == {"input.text_too_long": 1}
    (error,) = _errors(out)
    assert error.utterance_id == long.id


def test_score_refuses_a_truncated_gzip_manifest_with_its_reason(
    tmp_path: Path, sample_dir: Path
) -> None:
    """It ended with a bare "Aborted." (an uncaught EOFError); now exit 2 and why, before
    any model is loaded or anything scored."""
    import gzip

    from apa.data.speechocean762 import prepare_speechocean762

    utterances = prepare_speechocean762(sample_dir / "test").utterances
    lines = "".join(
        json.dumps({"id": u.id, "audio": u.audio, "text": u.text}) + "\n" for u in utterances
    )
    data = gzip.compress(lines.encode())
    manifest = tmp_path / "m.jsonl.gz"
    manifest.write_bytes(data[: len(data) // 2])
    out = tmp_path / "scores"
    result = _score("--input", str(manifest), "--output", str(out), "--model", "builtin:gop")
    assert result.exit_code == 2, result.output
    assert "Aborted" not in result.output
    assert "truncated gzip data" in result.output and str(manifest) in result.output
    assert "refusing the whole file" in result.output
    assert not out.exists()
