"""Fixtures for the batch job: a small espeak-ng demo corpus and a job runner on local Ray."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from apa.batch.settings import BatchSettings
from apa.scoring.settings import ScoringSettings
from apa.synth.demo import make_demo_corpus
from apa.tables import TABLES, read_table

KEYS = {
    "utterances": ["utterance_id"],
    "words": ["utterance_id", "word_index"],
    "phones": ["utterance_id", "word_index", "phone_index", "error"],
    "errors": ["utterance_id"],
}


@pytest.fixture(scope="session")
def demo_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four spoken sentences plus the four deliberately bad rows of apa.synth.demo."""
    return make_demo_corpus(tmp_path_factory.mktemp("demo"), n=4)


def sorted_tables(directory: str) -> dict[str, list[dict]]:
    """Every table of an output directory (a file or a directory of parts), rows sorted by
    their keys, for comparing two runs whatever their part layout."""
    from apa import storage

    tables = {}
    for name in TABLES:
        uri = storage.resolve(directory, f"{name}.parquet")
        if not storage.exists(uri):
            uri = storage.resolve(directory, name)
        table = read_table(uri) if storage.exists(uri) else pa.table({})
        rows = table.to_pylist()
        tables[name] = sorted(rows, key=lambda r: tuple(str(r[k]) for k in KEYS[name]))
    return tables


def job_settings(input: str, output: str, **extra) -> BatchSettings:
    scoring = extra.pop("scoring", ScoringSettings(model="builtin:gop"))
    return BatchSettings(
        input=input, output=output, scoring=scoring, progress_interval_s=1.0, **extra
    )
