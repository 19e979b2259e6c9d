"""``apa score`` over the catalogue of hostile inputs (:mod:`apa.testing.adversarial`): every
kind ends as its documented answer, nothing crashes, hangs or is dropped."""

from __future__ import annotations

import pytest

from apa.scoring.run import run_scoring
from apa.scoring.settings import ScoringSettings
from apa.testing.adversarial import answers, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    return write_corpus(tmp_path_factory.mktemp("adversarial"))


def test_apa_score_gives_every_kind_its_answer(corpus, tmp_path) -> None:
    manifest, expected = corpus.manifest, corpus.expected
    assert len(expected) >= 40
    summary = run_scoring(
        str(manifest), str(tmp_path / "out"), ScoringSettings(model="builtin:gop")
    )
    assert answers(tmp_path / "out") == expected
    assert summary.inputs == summary.scored + summary.errors == len(expected)
    assert summary.scored == sum(reason is None for reason in expected.values())
