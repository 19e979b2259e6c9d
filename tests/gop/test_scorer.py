"""builtin:gop behind the Scorer interface, its calibration, and the CLI commands around it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from apa.cli import app
from apa.data.scores_json import assessment_to_upstream
from apa.data.speechocean762 import prepare_speechocean762
from apa.gop.calibration import Calibration, Features, calibrate, fit_calibration
from apa.gop.scorer import GopScorer
from apa.schema import Assessment, ErrorRecord
from apa.scoring.pipeline import score_utterances
from apa.scoring.summary import RunSummary
from apa.tables import read_assessments

runner = CliRunner()


@pytest.fixture(scope="module")
def test_utterances(sample_dir: Path):
    return prepare_speechocean762(sample_dir, ["test"]).utterances


def test_scores_real_speech_with_timings_and_honest_gaps(test_utterances) -> None:
    results = list(score_utterances(test_utterances[:4], GopScorer(), batch_size=2))
    assert all(isinstance(r, Assessment) for r in results)
    for r in results:
        assert r.model == "builtin:gop" and not r.model_is_random
        s = r.sentence
        assert s.prosody is None and s.total is None  # not estimated: absent, not invented
        assert None not in (s.accuracy, s.fluency, s.completeness)
        starts = [p.start for w in r.words for p in w.phones]
        assert starts == sorted(starts) and None not in starts
        for w in r.words:
            assert w.stress is None and w.accuracy is not None
            assert w.start <= w.phones[0].start and w.phones[-1].end <= w.end


def test_audio_too_short_for_its_phones_is_an_alignment_error(test_utterances, tmp_path) -> None:
    import soundfile as sf

    utt = test_utterances[0]
    short = tmp_path / "short.wav"
    sf.write(short, 0.1 * np.sin(np.arange(4000) / 5), 16000)  # 0.25 s for a whole sentence
    result = list(score_utterances([utt.model_copy(update={"audio": str(short)})], GopScorer()))
    assert isinstance(result[0], ErrorRecord)
    assert result[0].reason == "alignment.too_short_for_phones"


def _features(rng, n_utts: int) -> list[Features]:
    out = []
    for _ in range(n_utts):
        gops = [list(rng.uniform(-10, 1, size=3)) for _ in range(4)]
        out.append(
            Features(
                phone_gops=gops,
                phone_frames=[[5, 6, 7]] * 4,
                deleted=[[False] * 3] * 4,
                pauses=int(rng.integers(0, 4)),
                pause_ratio=float(rng.uniform(0, 0.4)),
                articulation_rate=float(rng.uniform(8, 14)),
            )
        )
    return out


def test_fit_recovers_the_maps_that_made_the_labels() -> None:
    rng = np.random.default_rng(0)
    features = _features(rng, 60)
    truth = Calibration(
        phone_mid=-3.0,
        phone_scale=0.8,
        word_a=1.0,
        word_b=4.0,
        sentence_a=0.5,
        sentence_b=4.5,
        fluency_a=9.0,
        fluency_pauses=-1.5,
        fluency_pause_ratio=-6.0,
        fluency_rate=0.1,
    )
    made = [calibrate(f, truth) for f in features]
    fitted = fit_calibration(
        features,
        [s.phones for s in made],
        [[truth.word_a + truth.word_b * m for m in s.word_phone_means] for s in made],
        [truth.sentence_a + truth.sentence_b * s.phone_mean for s in made],
        [  # unclipped, so that least squares can recover the line exactly
            truth.fluency_a
            + truth.fluency_pauses * f.pauses
            + truth.fluency_pause_ratio * f.pause_ratio
            + truth.fluency_rate * f.articulation_rate
            for f in features
        ],
    )
    for field in (
        "phone_mid",
        "phone_scale",
        "word_a",
        "word_b",
        "sentence_a",
        "sentence_b",
        "fluency_a",
        "fluency_pauses",
        "fluency_pause_ratio",
        "fluency_rate",
    ):
        assert math.isclose(getattr(fitted, field), getattr(truth, field), abs_tol=1e-3), field
    assert fitted.fitted_on == 60


def test_score_defaults_to_gop_and_calibrate_refits(test_utterances, copy_corpus, tmp_path):
    # Labels in the upstream schema for eight utterances of a copy of the test split.
    corpus = copy_corpus("test") / "test"
    rng = np.random.default_rng(1)
    scores = {}
    for u in test_utterances[:8]:
        base = float(rng.integers(4, 11))
        scores[u.id] = assessment_to_upstream(
            Assessment.model_validate(
                {
                    "utterance_id": u.id,
                    "text": u.text,
                    "sentence": dict(
                        accuracy=base, fluency=base, prosody=base, completeness=10, total=base
                    ),
                    "words": [
                        {
                            "text": w,
                            "accuracy": base,
                            "stress": 10,
                            "total": base,
                            "phones": [
                                {"phone": p, "accuracy": float(rng.choice([1.0, 2.0]))} for p in ph
                            ],
                        }
                        for w, ph in zip(u.words, u.phones, strict=True)
                    ],
                }
            )
        )
    (corpus.parent / "resource" / "scores.json").write_text(json.dumps(scores))

    calib = tmp_path / "calib.json"
    done = runner.invoke(app, ["calibrate", "--input", str(corpus), "--out", str(calib)])
    assert done.exit_code == 0, done.output
    fitted = Calibration.model_validate_json(calib.read_text())
    assert fitted.fitted_on == 8 and fitted != Calibration(fitted_on=8)

    out = tmp_path / "scored"
    done = runner.invoke(
        app,
        [
            "score",
            "--input",
            str(corpus),
            "--output",
            str(out),
            "--limit",
            "3",
            "--gop-calibration",
            str(calib),
        ],
    )
    assert done.exit_code == 0, done.output
    summary = RunSummary.model_validate_json((out / "summary.json").read_text())
    assert summary.scorer.name == "builtin:gop" and summary.scorer.backend == "gop"
    assert (summary.inputs, summary.scored) == (3, 3)
    assert len(read_assessments(str(out))) == 3
