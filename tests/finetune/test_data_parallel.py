"""Data-parallel fine-tuning without Ray: two gloo ranks (``torch.multiprocessing``) run the
same loop through ``DistributedDataParallel`` and end with the same trainable weights, which
differ from where they started; the epoch's short last micro-batch (one example for two
ranks) and gradient accumulation do not hang or desynchronise them."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from apa.finetune.config import TrainConfig
from apa.finetune.loop import Trainer
from apa.models.builtin import ensure_builtin
from apa.models.families import TINY_QWEN2_AUDIO
from apa.synth.corpus import SynthConfig, write_synthetic_corpus

pytestmark = pytest.mark.integration  # two processes training with gloo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _rank(rank: int, world: int, port: int, settings: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        config = TrainConfig(**{**settings, "out": f"{settings['out']}-{rank}"})
        trainer = Trainer(config)
        trainer.setup()
        start = _trainable(trainer.model)
        trainer.train()
        saved = {
            "start": start,
            "end": _trainable(trainer.model),
            "steps": trainer.progress.step,
            "ddp": trainer.ddp is not None,
        }
        torch.save(saved, Path(out) / f"rank-{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def five_utterances(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dp-synth")
    # 5 training utterances: with batch 1 per rank on 2 ranks the epoch's last
    # micro-batch holds one example, so one rank has none
    return write_synthetic_corpus(
        out, SynthConfig(train_sentences=5, test_sentences=1, takes=1, max_words=4, seed=5)
    )


def test_two_gloo_ranks_train_in_step(
    model_cache, five_utterances, quick_train_config, tmp_path
) -> None:
    ensure_builtin(TINY_QWEN2_AUDIO)  # once, before the ranks load it
    config = quick_train_config(five_utterances, grad_accum=2, epochs=2, learning_rate=5e-3)
    settings = config.model_dump()
    mp.spawn(_rank, args=(2, _free_port(), settings, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank-{r}.pt") for r in range(2)]
    assert all(r["ddp"] for r in ranks)
    # 3 micro-batches per epoch (2, 2, 1 examples), 2 per step: 2 steps per epoch
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4
    assert ranks[0]["end"].keys() == ranks[1]["end"].keys()
    for name, weight in ranks[0]["end"].items():
        assert torch.equal(weight, ranks[1]["end"][name]), name
    moved = [n for n, w in ranks[0]["end"].items() if not torch.equal(w, ranks[0]["start"][n])]
    assert len(moved) == len(ranks[0]["end"])
