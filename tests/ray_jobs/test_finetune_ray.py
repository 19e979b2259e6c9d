"""Ray Train runs the apa fine-tuning loop in 2 CPU workers; the adapter loads into the scorer."""

from __future__ import annotations

from pathlib import Path

import pytest

from apa.engine.scorer import load_lmm_scorer
from apa.models.families import TINY_QWEN2_AUDIO
from apa.prepare import prepare
from apa.schema import Assessment
from apa.scoring.pipeline import score_batch
from apa.synth.corpus import SynthConfig, write_synthetic_corpus


@pytest.fixture(scope="module")
def ray_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ray-synth")
    return write_synthetic_corpus(
        out, SynthConfig(train_sentences=2, test_sentences=1, takes=2, max_words=4)
    )


def test_two_cpu_workers_train_an_adapter_the_scorer_loads(
    ray_local, ray_corpus, quick_train_config, tmp_path
):
    from ray_jobs.finetune import run_training

    config = quick_train_config(ray_corpus)
    result = run_training(config, workers=2, storage_path=str(tmp_path / "storage"), name="t")
    assert result.error is None
    # 4 examples, 1 per worker per micro-batch, 2 workers: 2 optimizer steps
    assert result.metrics["step"] == 2 and result.metrics["final"] == 1
    adapter = Path(result.checkpoint.path) / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "training.json").is_file()
    assert str(tmp_path / "storage") in result.checkpoint.path

    scorer = load_lmm_scorer(TINY_QWEN2_AUDIO, adapter=str(adapter), mode="one-pass")
    from apa.data.speechocean762 import prepare_speechocean762

    utterance = prepare_speechocean762(ray_corpus / "test").utterances[0]
    (scored,) = score_batch(scorer, [prepare(utterance)])
    assert isinstance(scored, Assessment)
    assert scored.sentence.fluency is not None and len(scored.words) == len(utterance.words)
