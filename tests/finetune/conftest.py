"""A small synthetic corpus shared by the fine-tuning tests (the model cache: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from apa.synth.corpus import SynthConfig, write_synthetic_corpus


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 training utterances (2 sentences x 2 takes) and 2 held-out ones (1 x 2)."""
    out = tmp_path_factory.mktemp("synth-small")
    config = SynthConfig(train_sentences=2, test_sentences=1, takes=2, max_words=4)
    return write_synthetic_corpus(out, config)
