"""The training loss's expected-score term (``expected_score_weights``), checked slot by slot
against a plain computation from each example's allowed ids and target probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from apa.finetune.config import TrainConfig
from apa.finetune.data import GROUPS, collate_targets
from apa.finetune.loop import Trainer, expected_score_error


@pytest.fixture(scope="module")
def trainer(model_cache, small_corpus, tmp_path_factory) -> Trainer:
    config = TrainConfig(
        train=str(small_corpus / "train"),
        out=str(tmp_path_factory.mktemp("loss")),
        loss_weights={"sentence": 1.0, "word": 0.5, "phone": 0.25, "pronounced": 2.0},
        threads=1,
    )
    trainer = Trainer(config)
    trainer.setup()
    return trainer


def reference_errors(examples, logits: torch.Tensor) -> list[float]:
    """Per target slot: 0 for a pronounced slot; else (10 * (E_model - E_target) / high)^2,
    E_model over the softmax of the slot's allowed ids alone, scores 0..high in order."""
    out, row = [], 0
    for example in examples:
        for ids, probs, group in zip(example.ids, example.probs, example.groups, strict=True):
            if GROUPS[group] == "pronounced":
                out.append(0.0)
            else:
                high = len(ids) - 1
                z = [math.exp(float(logits[row, i])) for i in ids]
                model = sum(j * p for j, p in enumerate(z)) / sum(z)
                target = sum(j * p for j, p in enumerate(probs))
                out.append((10.0 * (model - target) / high) ** 2)
            row += 1
    return out


def test_expected_score_error_matches_a_plain_computation(trainer: Trainer) -> None:
    examples = trainer.train_examples[:2]
    targets = collate_targets(examples, trainer.vocab, trainer.device)
    logits = torch.randn(targets.dense.shape, generator=torch.Generator().manual_seed(0)) * 3
    logits.requires_grad_(True)
    kinds = torch.tensor([e.job.kinds[slot] for e in examples for slot in e.slots])
    errors = expected_score_error(trainer.scorer, logits, kinds, targets)
    groups = [GROUPS[g] for g in targets.groups.tolist()]
    assert {"sentence", "word", "phone", "pronounced"} <= set(groups)
    assert errors.tolist() == pytest.approx(
        reference_errors(examples, logits.detach()), rel=1e-3, abs=1e-6
    )
    errors.sum().backward()
    assert torch.isfinite(logits.grad).all()
    pronounced = targets.groups == GROUPS.index("pronounced")
    assert (logits.grad[pronounced] == 0).all()
    assert (logits.grad[~pronounced] != 0).any()


def test_the_loss_adds_the_weighted_expected_score_error(trainer: Trainer) -> None:
    examples = trainer.train_examples[:2]
    targets = collate_targets(examples, trainer.vocab, trainer.device)
    with torch.no_grad():
        hidden, _ = trainer.scorer.slot_states([e.job for e in examples])
        logits = trainer.scorer.head(hidden[targets.index]).float()
        # the expectation from the plain computation, not from the function under test
        errors = torch.tensor(reference_errors(examples, logits))
        weights = trainer.config.loss_weights
        half = {"sentence": 0.5, "word": 0.5, "phone": 0.5}
        extra = sum(
            weights[name] * errors[targets.groups == g].mean() for g, name in enumerate(GROUPS)
        ) / sum(weights.values())
        trainer.model.eval()  # no dropout: both losses see the same forward pass
        plain = trainer.loss(examples)
        trainer.config = trainer.config.model_copy(update={"expected_score_weights": half})
        try:
            weighted = trainer.loss(examples)
        finally:
            trainer.config = trainer.config.model_copy(update={"expected_score_weights": {}})
    assert float(extra) > 0
    assert float(weighted - plain) == pytest.approx(0.5 * float(extra), rel=1e-4)


@pytest.mark.parametrize("weights", [{"pronounced": 1.0}, {"sentences": 1.0}, {"sentence": -0.1}])
def test_bad_expected_score_weights_are_refused(weights, tmp_path) -> None:
    with pytest.raises(ValueError, match="expected_score_weights"):
        TrainConfig(train="x", out=str(tmp_path), expected_score_weights=weights)
