from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture()
def corpus_copy(copy_corpus) -> Path:
    """The sample's train split as an upstream-style corpus (see ``copy_corpus``)."""
    return copy_corpus("train")
