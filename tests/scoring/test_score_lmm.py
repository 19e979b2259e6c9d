"""`apa score` with the tiny LMMs: tables and summary.json written, counts adding up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from apa.cli import app
from apa.data.manifest import write_manifest
from apa.data.speechocean762 import prepare_speechocean762
from apa.schema import Utterance
from apa.scoring.registry import load_scorer
from apa.scoring.settings import ScoringSettings
from apa.scoring.summary import RunSummary
from apa.tables import TABLES

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def tiny_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One model cache for the module, and one torch thread (the tiny models' operations
    are too small to gain from more, and lose much on a busy machine)."""
    import torch

    path = tmp_path_factory.mktemp("apa-cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APA_CACHE_DIR", str(path))
        yield path
    torch.set_num_threads(threads)


def score(*args: str):
    return runner.invoke(app, ["score", *args])


def read_summary(out: Path) -> RunSummary:
    return RunSummary.model_validate_json((out / "summary.json").read_text())


def test_score_with_tiny_qwen2_audio_writes_tables_and_summary(sample_dir, tmp_path) -> None:
    out = tmp_path / "scores"
    result = score(
        "--input",
        str(sample_dir / "test"),
        "--output",
        str(out),
        "--model",
        "builtin:tiny-qwen2-audio",
        "--limit",
        "6",
    )
    assert result.exit_code == 0, result.output
    assert "RANDOM WEIGHTS" in result.output and "LM passes/utterance" in result.output
    summary = read_summary(out)
    assert summary.inputs == 6 == summary.scored + summary.errors
    assert summary.scored == 6
    assert summary.scorer.name == "builtin:tiny-qwen2-audio"
    assert summary.scorer.backend == "qwen2-audio"
    assert summary.scorer.model_is_random is True
    assert summary.lm_forward_passes_per_utterance is not None
    assert summary.lm_forward_passes_per_utterance > 10  # generate: one pass per slot
    tables = {name: pq.read_table(out / f"{name}.parquet").to_pylist() for name in TABLES}
    assert len(tables["utterances"]) == 6 and tables["errors"] == []
    assert all(row["model_is_random"] for row in tables["utterances"])
    assert len(tables["words"]) == sum(
        len(u.words) for u in prepare_speechocean762(sample_dir, ["test"]).utterances[:6]
    )
    assert tables["phones"] and all(0 <= row["accuracy"] <= 2 for row in tables["phones"])


def test_one_pass_with_bad_inputs_counts_errors(sample_dir, tmp_path) -> None:
    good = prepare_speechocean762(sample_dir, ["test"]).utterances[:3]
    inputs = [
        *[u.model_copy(update={"phones": None}) for u in good],
        Utterance(id="missing", text="hello", audio=str(tmp_path / "none.wav")),
        Utterance(id="oov", text="hello zzyzxq", audio=good[0].audio),
    ]
    manifest = tmp_path / "in.jsonl"
    write_manifest(inputs, manifest)
    out = tmp_path / "scores"
    result = score(
        "--input",
        str(manifest),
        "--output",
        str(out),
        "--model",
        "builtin:tiny-phi4mm",
        "--mode",
        "one-pass",
        "--scores",
        "greedy",
        "--batch-size",
        "2",
    )
    assert result.exit_code == 0, result.output
    summary = read_summary(out)
    assert (summary.inputs, summary.scored, summary.errors) == (5, 3, 2)
    assert summary.errors_by_reason == {"audio.not_found": 1, "lexicon.unknown_word": 1}
    assert summary.lm_forward_passes_per_utterance == 1.0
    assert summary.scorer.backend == "phi4mm"
    utterances = pq.read_table(out / "utterances.parquet").to_pylist()
    assert sorted(row["utterance_id"] for row in utterances) == sorted(u.id for u in good)
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    assert {row["utterance_id"] for row in errors} == {"missing", "oov"}
    phones = pq.read_table(out / "phones.parquet").to_pylist()
    assert all(row["accuracy"] in (0.0, 1.0, 2.0) for row in phones)  # greedy: integers


def test_bad_mode_is_refused(sample_dir, tmp_path) -> None:
    result = score(
        "--input",
        str(sample_dir / "test"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        "builtin:tiny-qwen2-audio",
        "--mode",
        "beam",
    )
    assert result.exit_code == 2
    assert "one-pass" in result.output
    assert not (tmp_path / "out").exists()


def test_registry_loads_lmm_scorers_with_their_settings() -> None:
    from apa.engine.scorer import LmmScorer

    scorer = load_scorer(
        ScoringSettings(model="builtin:tiny-phi4mm", mode="one-pass", scores="greedy")
    )
    assert isinstance(scorer, LmmScorer)
    assert (scorer.mode, scorer.scores) == ("one-pass", "greedy")
    assert scorer.info.model_is_random is True
    # Unset mode: the model's own (generate for a base model, one-pass for an apa adapter).
    assert ScoringSettings().mode is None and ScoringSettings().scores == "expected"
    assert load_scorer(ScoringSettings(model="builtin:tiny-phi4mm")).mode == "generate"


def test_unknown_model_is_a_clear_error(sample_dir, tmp_path) -> None:
    result = score(
        "--input",
        str(sample_dir / "test"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        "builtin:huge",
    )
    assert result.exit_code == 2
    assert "builtin:tiny-qwen2-audio" in result.output
