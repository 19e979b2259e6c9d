"""A loaded scorer scores a probe before it is handed out: a model that loads and cannot
score fails at load (``model.cannot_run``), not on every input."""

from __future__ import annotations

import numpy as np
import pytest

from apa.models.errors import ModelLoadError
from apa.prepare import prepare
from apa.schema import ErrorRecord
from apa.scorer import ScorerInfo
from apa.scoring.pipeline import score_batch
from apa.scoring.registry import load_scorer
from apa.scoring.self_check import PROBE_ID, probe, self_check
from apa.scoring.settings import ScoringSettings

pytestmark = pytest.mark.usefixtures("model_cache")


@pytest.fixture(scope="module")
def items(test_utterances) -> list:
    return [prepare(u) for u in test_utterances[:2]]


def test_a_model_that_loads_and_cannot_score_fails_at_load(model_that_cannot_run) -> None:
    with pytest.raises(ModelLoadError) as raised:
        load_scorer(ScoringSettings(model=str(model_that_cannot_run)))
    assert raised.value.reason == "model.cannot_run"
    assert "cannot score a one-second probe utterance: RuntimeError" in raised.value.message
    assert "to have 128 channels, but got 80 channels" in raised.value.message


def test_without_the_check_the_same_model_fails_every_input(model_that_cannot_run, items) -> None:
    """What the check spares a corpus: each input is an error row of its own."""
    settings = ScoringSettings(model=str(model_that_cannot_run), self_check=False)
    results = score_batch(load_scorer(settings), items)
    assert [(r.stage, r.reason) for r in results] == [("model", "model.failed")] * 2


@pytest.mark.parametrize(
    "model",
    ["builtin:gop", "builtin:passthrough", "builtin:tiny-qwen2-audio", "builtin:tiny-phi4mm"],
)
def test_every_built_in_model_passes(model) -> None:
    scorer = load_scorer(ScoringSettings(model=model))
    assert scorer.info.name == model


def test_the_probe_is_not_counted_as_the_callers_work(items) -> None:
    settings = ScoringSettings(model="builtin:tiny-qwen2-audio", mode="one-pass")
    scorer = load_scorer(settings)
    assert (scorer.forward_passes, scorer.utterances) == (0, 0)
    assert scorer.forward_passes_per_utterance is None
    assert scorer.reference.cache_info().currsize == 0
    score_batch(scorer, items)
    assert (scorer.forward_passes, scorer.utterances) == (2, 2)
    unchecked = load_scorer(settings.model_copy(update={"self_check": False}))
    first = unchecked.score(items)
    assert [a.model_dump() for a in scorer.score(items)] == [a.model_dump() for a in first]


def test_the_probe_is_the_same_input_every_time() -> None:
    one, two = probe(), probe()
    assert one.utterance == two.utterance
    assert np.array_equal(one.audio.samples, two.audio.samples)
    assert one.audio.duration_s == 1.0


class _Answers:
    """A scorer that answers the probe with ``make(probe)``."""

    info = ScorerInfo(name="fake", backend="fake", model_is_random=True)

    def __init__(self, make) -> None:
        self.make = make

    def score(self, batch):
        return self.make(batch)


def _error(stage: str, reason: str):
    return lambda batch: [
        ErrorRecord(utterance_id=PROBE_ID, stage=stage, reason=reason, message="why")
    ]


@pytest.mark.parametrize(
    ("scorer", "says"),
    [
        (_Answers(lambda batch: 1 / 0), "ZeroDivisionError: division by zero"),
        (_Answers(lambda batch: []), "scorer returned results for [], expected ['apa-self-check']"),
        (_Answers(_error("model", "model.failed")), "model.failed: why"),
    ],
    ids=["raises", "no result", "model error"],
)
def test_a_scorer_that_raises_breaks_its_contract_or_fails_the_probe_cannot_run(
    scorer, says
) -> None:
    with pytest.raises(ModelLoadError) as raised:
        self_check(scorer)
    assert raised.value.reason == "model.cannot_run"
    assert raised.value.message.endswith(says)


def test_an_error_of_the_probes_own_passes() -> None:
    """The GOP aligner may find no speech in the probe's noise: that is the input's."""
    self_check(_Answers(_error("alignment", "alignment.failed")))


def test_gop_with_an_adapter_is_a_model_load_error() -> None:
    with pytest.raises(ModelLoadError) as raised:
        load_scorer(ScoringSettings(model="builtin:gop", adapter="some/adapter"))
    assert raised.value.reason == "model.adapter"
