"""The fine-tuning loop: exact resume, the saved adapter and its card, the scorer loading it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from apa.cli import app
from apa.finetune.checkpoint import STATE_FILE, checkpoint_dirs
from apa.finetune.config import TrainConfig
from apa.finetune.loop import finetune
from apa.models.card import METRICS_FILE, TRAINING_FILE
from apa.models.families import TINY_PHI4MM, TINY_QWEN2_AUDIO
from apa.tables import read_assessments


def _config(corpus: Path, out: Path, **kw) -> TrainConfig:
    fields = dict(
        train=str(corpus / "train"),
        out=str(out),
        batch_size=1,
        epochs=1,
        max_steps=4,
        warmup_steps=1,
        checkpoint_every_steps=2,
        keep_checkpoints=5,
        eval_resamples=0,
    )
    return TrainConfig(**{**fields, **kw})


def _trainable(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint / STATE_FILE, weights_only=False)["trainable"]


def test_half_run_resumed_ends_where_the_straight_run_ends(
    model_cache, small_corpus, tmp_path
) -> None:
    straight = finetune(_config(small_corpus, tmp_path / "a"))
    assert straight.steps == 4
    saved = checkpoint_dirs(tmp_path / "a")
    assert [d.name for d in saved] == ["step-000002", "step-000004"]
    resumed = finetune(_config(small_corpus, tmp_path / "b"), resume_from=saved[0])
    assert resumed.steps == 4
    a = _trainable(saved[-1])
    b = _trainable(checkpoint_dirs(tmp_path / "b")[-1])
    start = _trainable(saved[0])
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    # and training moved the weights between the halves (the comparison is not vacuous)
    assert max(float((a[k] - start[k]).abs().max()) for k in a) > 1e-4


@pytest.mark.parametrize("model", [TINY_QWEN2_AUDIO, TINY_PHI4MM])
def test_adapter_with_card_loads_into_the_scorer(
    model_cache, small_corpus, tmp_path, model
) -> None:
    run = tmp_path / "run"
    config = _config(small_corpus, run, model=model, valid=str(small_corpus / "test"),
                     max_steps=2)  # fmt: skip
    result = finetune(config)
    adapter = result.adapter_dir
    assert adapter is not None and (adapter / "adapter_config.json").is_file()
    card = json.loads((adapter / TRAINING_FILE).read_text())
    assert TrainConfig(**card["config"]) == config
    assert card["versions"]["apa"] and card["git_revision"]
    assert [h["step"] for h in card["history"]] == [0, 2]
    assert card["mode"] == "one-pass"
    metrics = json.loads((adapter / METRICS_FILE).read_text())
    assert [s["name"] for s in metrics["systems"]] == ["adapter", "base"]
    assert metrics["differences"]

    scored = tmp_path / "scored"
    cli = CliRunner().invoke(
        app,
        [
            "score",
            "--input",
            str(small_corpus / "test"),
            "--output",
            str(scored),
            "--model",
            model,
            "--adapter",
            str(adapter),
        ],
    )  # fmt: skip  (no --mode: the card makes it one-pass, the format the adapter learned)
    assert cli.exit_code == 0, cli.output
    summary = json.loads((scored / "summary.json").read_text())
    assert summary["lm_forward_passes_per_utterance"] == 1  # one-pass, not slot by slot
    by_cli = {a.utterance_id: a for a in read_assessments(str(scored))}
    by_trainer = {
        a.utterance_id: a for a in read_assessments(str(run / "predictions" / "adapter.jsonl"))
    }
    assert by_cli.keys() == by_trainer.keys() and len(by_cli) == 2
    for uid, a in by_cli.items():
        b = by_trainer[uid]
        assert abs(a.sentence.fluency - b.sentence.fluency) < 1e-4
        assert abs(a.words[0].accuracy - b.words[0].accuracy) < 1e-4


def test_finetune_command_reports_the_comparison(model_cache, small_corpus, tmp_path) -> None:
    out = tmp_path / "cli-run"
    cli = CliRunner().invoke(
        app,
        ["finetune", "--train", str(small_corpus / "train"), "--valid",
         str(small_corpus / "test"), "--out", str(out), "--set", "max_steps=1",
         "--set", "batch_size=2", "--set", "eval_resamples=0"],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert "apa evaluate --pred" in cli.output
    evaluated = CliRunner().invoke(
        app,
        ["evaluate", "--pred", str(out / "predictions" / "adapter.jsonl"), "--pred",
         str(out / "predictions" / "base.jsonl"), "--gold", str(small_corpus / "test"),
         "--out", str(tmp_path / "eval"), "--resamples", "20"],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["differences"]


def test_bad_setting_is_refused(tmp_path) -> None:
    cli = CliRunner().invoke(
        app, ["finetune", "--train", "x", "--out", str(tmp_path), "--set", "rnak=4"]
    )
    assert cli.exit_code == 2
    assert "rnak" in cli.output
