"""Tiny LMMs loaded once per session, and the Speechocean762 test utterances to score."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from apa.data.speechocean762 import prepare_speechocean762
from apa.models.builtin import TINY_PHI4MM, TINY_QWEN2_AUDIO
from apa.schema import Utterance

TINY_MODELS = (TINY_QWEN2_AUDIO, TINY_PHI4MM)


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The tiny models' operations are too small to gain from intra-op threads, and on a
    shared 2-core machine the thread barriers of the generate loop's many small kernels can
    stall for seconds; one thread keeps these tests fast and steady."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def loaded_models(model_cache: Path) -> dict:
    """Each tiny model loaded once, answer tokens added (as ``load_lmm_scorer`` loads it).
    Build scorers on it with ``LmmScorer(loaded, mode=...)``: each has its own counters."""
    from apa.lmm.engine import load_lmm_scorer

    return {name: load_lmm_scorer(name).loaded for name in TINY_MODELS}


@pytest.fixture(scope="session")
def test_utterances(sample_dir: Path) -> list[Utterance]:
    """The first 8 utterances of the sample's test split (3 to 10 words), phones filled."""
    data = prepare_speechocean762(sample_dir, ["test"])
    return data.utterances[:8]
