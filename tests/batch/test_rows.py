"""The batch job's stages called directly (no Ray): every bad input becomes its row's error,
never the task's exception, and every stage returns as many rows as it got."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from apa.audio import AudioConfig
from apa.batch import rows as stages
from apa.schema import ErrorRecord, Utterance


def _input(utterances: list[Utterance]) -> pa.Table:
    return next(stages.input_blocks(stages.input_rows(utterances, [], skip=set()), 1000))


def _reasons(table: pa.Table) -> dict[str, str | None]:
    return {
        row["id"]: (ErrorRecord.model_validate_json(row["error"]).reason if row["error"] else None)
        for row in table.to_pylist()
    }


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.wav"
    t = np.arange(16000) / 16000
    sf.write(good, 0.3 * np.sin(2 * np.pi * 220 * t), 16000, subtype="PCM_16")
    huge = tmp_path / "huge.wav"  # sparse: 2 GiB + 1 byte on paper, nothing on disk
    with huge.open("wb") as f:
        f.truncate(2**31 + 1)
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    return {"good": good, "huge": huge, "fifo": fifo, "dir": tmp_path}


def test_fetch_turns_each_bad_source_into_its_row_error(inputs: dict[str, Path]) -> None:
    """Before: a >= 2 GiB object raised ArrowCapacityError for the whole block, a FIFO hung
    the task forever, and a 5,000-character text went on to the model."""
    utterances = [
        Utterance(id="good", text="we call", audio=str(inputs["good"])),
        Utterance(id="huge", text="we call", audio=str(inputs["huge"])),
        Utterance(id="fifo", text="we call", audio=str(inputs["fifo"])),
        Utterance(id="dir", text="we call", audio=str(inputs["dir"])),
        Utterance(id="missing", text="we call", audio=str(inputs["dir"] / "nope.wav")),
        Utterance(id="long", text="we " * 2000, audio=str(inputs["huge"])),
        Utterance(id="no-audio", text="we call", audio=None),
    ]
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(out=stages.fetch(_input(utterances))))
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # free the reader a regression left blocked on the FIFO
        with open(inputs["fifo"], "wb"):
            pass
        pytest.fail("fetch blocked on a FIFO")
    fetched = result["out"]
    assert fetched.num_rows == len(utterances)
    assert fetched.schema.field("audio_bytes").type == pa.large_binary()
    assert _reasons(fetched) == {
        "good": None,
        "huge": "audio.too_large",
        "fifo": "audio.unreadable",
        "dir": "audio.unreadable",
        "missing": "audio.not_found",
        "long": "input.text_too_long",
        "no-audio": "input.no_audio",
    }
    sizes = {r["id"]: len(r["audio_bytes"] or b"") for r in fetched.to_pylist()}
    assert sizes["good"] > 0 and sizes["huge"] == 0


def test_the_text_limit_is_the_jobs_setting(inputs: dict[str, Path]) -> None:
    utt = Utterance(id="u", text="we call it bear", audio=str(inputs["good"]))
    assert _reasons(stages.fetch(_input([utt]), max_text_chars=10)) == {"u": "input.text_too_long"}
    assert _reasons(stages.fetch(_input([utt]), max_text_chars=None)) == {"u": None}


def test_decode_refuses_extreme_float_samples_as_a_row_error(tmp_path: Path) -> None:
    """Before: a float WAV with samples around 3e38 passed and made the model's
    distributions non-finite."""
    path = tmp_path / "extreme.wav"
    samples = np.full(16000, 3e38, dtype=np.float32)
    samples[::2] *= -1
    sf.write(path, samples, 16000, subtype="FLOAT")
    utt = Utterance(id="x", text="we call", audio=str(path))
    prepared = stages.decode_and_prepare(
        stages.fetch(_input([utt])), audio_config=AudioConfig(), lexicon=None
    )
    assert prepared.num_rows == 1
    assert _reasons(prepared) == {"x": "audio.out_of_range"}


def test_the_stages_in_a_loop_commit_every_row_once(tmp_path: Path, model_cache) -> None:
    """fetch -> decode_and_prepare -> score -> write, called directly as Ray Data calls them,
    on speech, an unknown word and a missing file: every input ends in one committed row."""
    from apa.batch.commits import read_commits
    from apa.scoring.registry import load_scorer
    from apa.scoring.settings import ScoringSettings
    from apa.synth.espeak import synthesize
    from apa.tables import read_assessments

    speech = tmp_path / "speech.wav"
    speech.write_bytes(synthesize("we call it bear"))
    utterances = [
        Utterance(id="ok", text="we call it bear", audio=str(speech)),
        Utterance(id="unknown", text="we call it zorblax", audio=str(speech)),
        Utterance(id="missing", text="we call it bear", audio=str(tmp_path / "nope.wav")),
    ]
    scorer = load_scorer(ScoringSettings(model="builtin:tiny-qwen2-audio"))
    prepared = stages.decode_and_prepare(stages.fetch(_input(utterances)))
    assert prepared.num_rows == 3 and "samples" in prepared.schema.names
    scored = stages.score(prepared, scorer, batch_size=2)
    assert scored.column("id").to_pylist() == ["ok", "unknown", "missing"]
    assert scored.column("is_error").to_pylist() == [False, True, True]
    # one utterance reached the model, in one forward pass per answer slot (the built-in's
    # generate mode): the call's counts, on its first row
    assert scorer.utterances == 1 and scorer.forward_passes > 10
    assert scored.column("lm_forward_passes").to_pylist() == [scorer.forward_passes, 0, 0]
    assert scored.column("lm_utterances").to_pylist() == [1, 0, 0]
    written = stages.write(scored, out=str(tmp_path / "out"))
    (commit,) = read_commits(str(tmp_path / "out"))
    # the stage hands on the part set's key and counts only, never its ids
    assert written.to_pylist() == [
        {
            "key": commit.key,
            "processed": 3,
            "scored": 1,
            "audio_seconds": pytest.approx(commit.audio_seconds),
            "lm_forward_passes": scorer.forward_passes,
            "lm_utterances": 1,
        }
    ]
    assert commit.scored == ["ok"]
    assert commit.errors == {"unknown": "lexicon.unknown_word", "missing": "audio.not_found"}
    (assessment,) = read_assessments(str(tmp_path / "out"))
    assert assessment.utterance_id == "ok" and assessment.model_is_random


def test_each_call_counts_its_own_forward_passes_while_another_scores(
    tmp_path: Path, model_cache
) -> None:
    """The batch job's actors take two calls at once: each call's LM counts are its own."""
    from concurrent.futures import ThreadPoolExecutor

    from apa.scoring.registry import load_scorer
    from apa.scoring.settings import ScoringSettings
    from apa.synth.espeak import synthesize

    texts = ["we call it bear", "the cat sat", "a big red house"]
    utterances = []
    for i, text in enumerate(texts):
        (tmp_path / f"{i}.wav").write_bytes(synthesize(text))
        utterances.append(Utterance(id=f"u{i}", text=text, audio=str(tmp_path / f"{i}.wav")))
    scorer = load_scorer(ScoringSettings(model="builtin:tiny-qwen2-audio"))
    short = stages.decode_and_prepare(stages.fetch(_input(utterances[:1])))
    long = stages.decode_and_prepare(stages.fetch(_input(utterances)))

    def counts(table: pa.Table) -> tuple[int, int]:
        return (
            sum(table.column("lm_forward_passes").to_pylist()),
            sum(table.column("lm_utterances").to_pylist()),
        )

    alone = [counts(stages.score(t, scorer, batch_size=1)) for t in (short, long)]
    assert alone[0][1] == 1 and alone[1][1] == 3 and alone[1][0] > alone[0][0]
    total = scorer.forward_passes
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda t: counts(stages.score(t, scorer, batch_size=1)),
                                 [short, long] * 3))  # fmt: skip
    assert together == alone * 3
    assert scorer.forward_passes - total == 3 * (alone[0][0] + alone[1][0])
