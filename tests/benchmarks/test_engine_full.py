"""``benchmarks/engine.py --full`` runs end to end (on the tiny models here, standing in for
the full-size ones it builds on a GPU), and its LM work is counted right: every pass's real
tokens, in one-pass, constrained generate and transformers' ``generate`` alike."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from apa.engine.scorer import LmmScorer
from apa.models.families import TINY_PHI4MM, TINY_QWEN2_AUDIO
from apa.prepare import prepare
from tests.conftest import single_torch_thread

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "engine.py"


@pytest.fixture(scope="module")
def engine_benchmark():
    spec = importlib.util.spec_from_file_location("engine_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows(engine_benchmark, loaded_models, test_utterances):
    """The --full table with the tiny models in place of the full-size builds."""
    items = [prepare(u) for u in test_utterances[:2]]
    args = argparse.Namespace(reduced=True, batch_sizes=[1, 2], generate_batch=2)
    with pytest.MonkeyPatch.context() as mp, single_torch_thread():
        for builder, name in (("full_qwen2_audio", TINY_QWEN2_AUDIO), ("full_phi4mm", TINY_PHI4MM)):
            mp.setattr(engine_benchmark, builder, lambda *_, name=name: loaded_models[name].model)
        return items, engine_benchmark.full(args, items, "cpu")


def test_full_runs_every_setup_of_the_issue(rows) -> None:
    _, table = rows
    setups = {(r["model"].split(",")[0], r["mode"], r["prompt"], r["batch"]) for r in table}
    for family in ("full-size qwen2-audio", "full-size phi4mm"):
        for prompt in ("brief", "rubric"):
            assert {(family, "one-pass", prompt, b) for b in (1, 2)} <= setups
        assert (family, "generate", "brief", 2) in setups
        assert {(family, "plain generate, 16 tokens", "rubric", b) for b in (1, 2)} <= setups
    assert len(table) == 14
    for row in table:
        assert "failed" not in row, row
        assert row["utt/s"] > 0 and row["LM TFLOP/s"] > 0 and 0 < row["of peak"], row


def test_lm_tokens_are_every_pass_real_tokens(rows) -> None:
    items, table = rows
    for row in table:
        if row["mode"] == "one-pass":  # one pass: the first pass's tokens, all of them
            assert row["LM tokens/utt"] == row["first pass tokens/utt"], row
            assert row["padding"] == 0 if row["batch"] == 1 else row["padding"] > 0, row
        elif row["mode"] == "generate":  # the first pass, then each later pass's feed
            assert row["LM tokens/utt"] > row["first pass tokens/utt"], row


@pytest.mark.parametrize("name", [TINY_QWEN2_AUDIO, TINY_PHI4MM])
def test_plain_generate_counts_its_prompt_and_each_token_fed_back(
    rows, loaded_models, name
) -> None:
    """transformers' generate of 16 tokens: the prompt (audio tokens expanded), then 15
    passes of one token each (the 16th is not fed back)."""
    items, table = rows
    scorer = LmmScorer(loaded_models[name], mode="one-pass", prompt="rubric")
    prompts = [
        len(scorer._encode(scorer.job(i)).ids) - len(scorer.job(i).reference.answer) for i in items
    ]
    family = "full-size " + ("qwen2-audio" if name == TINY_QWEN2_AUDIO else "phi4mm")
    for row in table:
        if row["model"].startswith(family) and row["mode"].startswith("plain generate"):
            assert row["LM tokens/utt"] == pytest.approx(sum(prompts) / 2 + 15), row
