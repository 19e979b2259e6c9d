"""A small synthetic corpus and a model cache shared by the fine-tuning tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from apa.synth.corpus import SynthConfig, write_synthetic_corpus


@pytest.fixture(scope="session")
def finetune_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``APA_CACHE_DIR`` for the session: each built-in model is built once."""
    path = tmp_path_factory.mktemp("apa-finetune-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APA_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 training utterances (2 sentences x 2 takes) and 2 held-out ones (1 x 2)."""
    out = tmp_path_factory.mktemp("synth-small")
    config = SynthConfig(train_sentences=2, test_sentences=1, takes=2, max_words=4)
    return write_synthetic_corpus(out, config)
