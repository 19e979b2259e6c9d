from pathlib import Path

import pytest

from apa.data.speechocean762 import prepare_speechocean762
from apa.schema import Assessment
from apa.scoring.pipeline import score_utterances
from apa.scoring.registry import load_scorer
from apa.scoring.settings import ScoringSettings
from apa.scoring.timings import WithTimings


def test_lmm_output_gets_word_and_phone_times_from_the_aligner(
    sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APA_CACHE_DIR", str(tmp_path / "cache"))
    utts = prepare_speechocean762(sample_dir, ["test"]).utterances[:2]
    plain = load_scorer(ScoringSettings(model="builtin:tiny-qwen2-audio", mode="one-pass"))
    untimed = list(score_utterances(utts, plain))
    assert all(w.start is None for a in untimed for w in a.words)

    timed_scorer = load_scorer(
        ScoringSettings(model="builtin:tiny-qwen2-audio", mode="one-pass", timings=True)
    )
    assert isinstance(timed_scorer, WithTimings)
    timed = list(score_utterances(utts, timed_scorer))
    for a, b in zip(timed, untimed, strict=True):
        assert isinstance(a, Assessment)
        # Same scores, now with times: ordered, inside each word.
        assert a.sentence == b.sentence
        assert [w.accuracy for w in a.words] == [w.accuracy for w in b.words]
        starts = [p.start for w in a.words for p in w.phones]
        assert None not in starts and starts == sorted(starts)
        for w in a.words:
            assert w.start <= w.phones[0].start and w.phones[-1].end <= w.end
    assert timed_scorer.forward_passes_per_utterance == 1.0


def test_an_aligned_scorer_is_not_aligned_again_for_timings(
    sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``alignment="spans"`` the model reads the forced alignment, and the same
    alignment is the timings: ``--timings`` adds no second alignment."""
    from apa.gop.aligner import GopAligner

    monkeypatch.setenv("APA_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = GopAligner.align
    monkeypatch.setattr(
        GopAligner, "align", lambda self, *a, **k: calls.append(1) or real(self, *a, **k)
    )
    utts = prepare_speechocean762(sample_dir, ["test"]).utterances[:2]
    scorer = load_scorer(
        ScoringSettings(
            model="builtin:tiny-qwen2-audio", mode="one-pass", alignment="spans", timings=True
        )
    )
    calls.clear()  # the load's self-check probe, aligned once
    results = list(score_utterances(utts, scorer))
    assert len(calls) == len(utts)
    for a in results:
        assert isinstance(a, Assessment) and a.scoring_path == "aligned"
        assert all(p.start is not None for w in a.words for p in w.phones)
