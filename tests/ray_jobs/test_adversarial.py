"""The batch job over the catalogue of hostile inputs (:mod:`apa.testing.adversarial`): the
same answers as ``apa score``, in one run, and a rerun changes nothing."""

from __future__ import annotations

import pytest

from apa.testing.adversarial import answers, write_corpus
from ray_jobs.batch_score import run_batch
from tests.ray_jobs.conftest import job_settings

pytestmark = pytest.mark.integration


def test_the_batch_job_gives_every_kind_its_answer(ray_local, tmp_path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    manifest, expected = corpus.manifest, corpus.expected
    out = str(tmp_path / "out")
    summary = run_batch(job_settings(str(manifest), out, rows_per_part=8))
    assert answers(out) == expected
    assert summary.inputs == summary.scored + summary.errors == len(expected)
    again = run_batch(job_settings(str(manifest), out, rows_per_part=8))
    assert again.processed == 0 and again.inputs == len(expected)
    assert answers(out) == expected
