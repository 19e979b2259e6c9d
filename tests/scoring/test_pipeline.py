"""The in-process pipeline's mechanics, with a scorer double that records what it is given."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from apa.lexicon import Lexicon
from apa.schema import Assessment, ErrorRecord, SentenceScores, Utterance
from apa.scorer import PreparedUtterance, Scorer, ScoreResult, ScorerInfo, StagedScorer
from apa.scoring.pipeline import ScorerContractError, score_utterances

LEXICON = Lexicon({"HELLO": [["HH", "AH0", "L", "OW1"]], "WORLD": [["W", "ER1", "L", "D"]]})


class RecordingScorer:
    """Scores sentence accuracy = audio duration; raises on ids in ``explode``."""

    def __init__(self, explode: Sequence[str] = (), wrong_ids: bool = False) -> None:
        self.batches: list[list[float]] = []
        self.explode = set(explode)
        self.wrong_ids = wrong_ids

    @property
    def info(self) -> ScorerInfo:
        return ScorerInfo(name="double", backend="test", model_is_random=True)

    def score(self, batch: Sequence[PreparedUtterance]) -> list[ScoreResult]:
        self.batches.append([p.audio.duration_s for p in batch])
        if any(p.utterance.id in self.explode for p in batch):
            raise RuntimeError("boom")
        out: list[ScoreResult] = [
            Assessment(
                utterance_id=p.utterance.id,
                text=p.utterance.text,
                sentence=SentenceScores(
                    accuracy=min(p.audio.duration_s, 10.0),
                    fluency=None,
                    prosody=None,
                    completeness=None,
                    total=None,
                ),
                model="whatever the backend says",
            )
            for p in batch
        ]
        return out[::-1] if self.wrong_ids else out


def _wav(path: Path, seconds: float) -> str:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), 16000)
    return str(path)


@pytest.fixture()
def utterances(tmp_path: Path) -> list[Utterance]:
    durations = [1.0, 3.0, 0.5, 2.0, 4.0, 1.5, 2.5]
    return [
        Utterance(id=f"u{i}", text="hello world", audio=_wav(tmp_path / f"u{i}.wav", d))
        for i, d in enumerate(durations)
    ]


def test_results_in_input_order_batched_by_length(utterances: list[Utterance]) -> None:
    scorer = RecordingScorer()
    assert isinstance(scorer, Scorer)
    seen: list[tuple[str, float]] = []
    results = list(
        score_utterances(
            utterances,
            scorer,
            batch_size=3,
            window=7,
            lexicon=LEXICON,
            on_result=lambda r, s: seen.append((r.utterance_id, s)),
        )
    )
    assert [r.utterance_id for r in results] == [u.id for u in utterances]
    assert scorer.batches == [[4.0, 3.0, 2.5], [2.0, 1.5, 1.0], [0.5]]
    assert [r.sentence.accuracy for r in results] == pytest.approx(
        [1.0, 3.0, 0.5, 2.0, 4.0, 1.5, 2.5]
    )
    assert all(r.model == "double" and r.model_is_random for r in results)
    assert seen == [(r.utterance_id, r.sentence.accuracy) for r in results]


def test_windows_bound_what_is_held(utterances: list[Utterance]) -> None:
    scorer = RecordingScorer()
    results = list(score_utterances(utterances, scorer, batch_size=8, window=3, lexicon=LEXICON))
    assert [len(b) for b in scorer.batches] == [3, 3, 1]
    assert [r.utterance_id for r in results] == [u.id for u in utterances]


def test_the_next_window_is_prepared_while_one_is_scored(
    utterances: list[Utterance], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading and decoding audio is host work the model should not wait for: while a
    window is scored, the next one is prepared in a helper thread. The scorer of each
    window but the last waits (up to 10 s) for the next window's first prepare, which
    starts at once when they overlap."""
    from apa.scoring import pipeline

    started = threading.Semaphore(0)
    real_prepare = pipeline.prepare

    def counting_prepare(u, **kwargs):
        started.release()
        return real_prepare(u, **kwargs)

    monkeypatch.setattr(pipeline, "prepare", counting_prepare)

    class WaitingScorer(RecordingScorer):
        def __init__(self) -> None:
            super().__init__()
            self.overlapped: list[bool] = []

        def score(self, batch):
            if batch[0].utterance.id != "u6":  # windows of 3: u0-u2, u3-u5, u6
                # this window's 3 prepares, then the next window's first
                for _ in range(3):
                    started.acquire(timeout=10)
                self.overlapped.append(started.acquire(timeout=10))
                started.release()
            return super().score(batch)

    scorer = WaitingScorer()
    results = list(score_utterances(utterances, scorer, batch_size=8, window=3, lexicon=LEXICON))
    assert [r.utterance_id for r in results] == [u.id for u in utterances]
    assert scorer.overlapped == [True, True]


def test_bad_inputs_become_error_rows_and_counts_add_up(
    utterances: list[Utterance], tmp_path: Path
) -> None:
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    bad = [
        Utterance(id="missing", text="hello", audio=str(tmp_path / "nope.wav")),
        Utterance(id="corrupt", text="hello", audio=str(tmp_path / "corrupt.wav")),
        Utterance(id="oov", text="hello zzyzxq", audio=utterances[0].audio),
        Utterance(id="noaudio", text="hello"),
    ]
    inputs = [utterances[0], *bad, utterances[1]]
    results = list(score_utterances(inputs, RecordingScorer(), lexicon=LEXICON))
    assert [r.utterance_id for r in results] == [u.id for u in inputs]
    errors = {r.utterance_id: r.reason for r in results if isinstance(r, ErrorRecord)}
    assert errors == {
        "missing": "audio.not_found",
        "corrupt": "audio.undecodable",
        "oov": "lexicon.unknown_word",
        "noaudio": "input.no_audio",
    }


def test_a_failing_utterance_is_isolated(utterances: list[Utterance]) -> None:
    scorer = RecordingScorer(explode=["u3"])
    results = list(score_utterances(utterances, scorer, batch_size=4, lexicon=LEXICON))
    failed = [r for r in results if isinstance(r, ErrorRecord)]
    assert [(r.utterance_id, r.reason) for r in failed] == [("u3", "model.failed")]
    assert "boom" in failed[0].message
    assert sum(isinstance(r, Assessment) for r in results) == len(utterances) - 1


def test_a_scorer_that_breaks_its_contract_is_a_bug(utterances: list[Utterance]) -> None:
    with pytest.raises(ScorerContractError):
        list(score_utterances(utterances, RecordingScorer(wrong_ids=True), lexicon=LEXICON))


class StagedRecordingScorer(RecordingScorer):
    """:class:`RecordingScorer` in three stages. ``run`` of a batch other than the last
    (of ``batches``) waits (up to 10 s) for the next batch's ``encode`` to start, which
    happens at once when the stages overlap, and records whether it did; ids in ``explode``
    make ``run`` raise."""

    def __init__(self, batches: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.remaining = batches
        self.encoded = threading.Semaphore(0)
        self.overlapped: list[bool] = []

    def cost(self, item: PreparedUtterance) -> float:
        return item.audio.duration_s

    def encode(self, batch: Sequence[PreparedUtterance]) -> list:
        self.encoded.release()
        return [
            ErrorRecord(utterance_id=p.utterance.id, stage="input", reason="input.too_long",
                        message="refused at encode")
            if p.audio.duration_s > 3.5 else p
            for p in batch
        ]  # fmt: skip

    def run(self, encoded: Sequence[PreparedUtterance]) -> list:
        self.encoded.acquire()  # this batch's own encode
        self.remaining -= 1
        if self.remaining:
            self.overlapped.append(self.encoded.acquire(timeout=10))
            self.encoded.release()
        return [self.score([p])[0] for p in encoded]

    def decode(self, encoded: Sequence[PreparedUtterance], outputs: Sequence) -> list:
        return list(outputs)


def test_a_staged_scorer_encodes_the_next_batch_while_the_device_runs(
    utterances: list[Utterance],
) -> None:
    staged = StagedRecordingScorer(batches=4)
    assert isinstance(staged, StagedScorer) and not isinstance(RecordingScorer(), StagedScorer)
    results = list(score_utterances(utterances, staged, batch_size=2, window=7, lexicon=LEXICON))
    assert [r.utterance_id for r in results] == [u.id for u in utterances]
    # four batches (4.0 3.0 | 2.5 2.0 | 1.5 1.0 | 0.5): every run but the last saw the next
    # batch's encode begin while it was running
    assert staged.overlapped == [True, True, True]
    errors = {r.utterance_id: r.reason for r in results if isinstance(r, ErrorRecord)}
    assert errors == {"u4": "input.too_long"}  # the 4 s clip, refused by encode, in place
    plain = list(score_utterances(utterances, RecordingScorer(), batch_size=2, lexicon=LEXICON))
    assert [r.model_dump() for r in results if isinstance(r, Assessment)] == [
        r.model_dump() for r in plain if r.utterance_id != "u4"
    ]


def test_a_failing_stage_falls_back_to_isolating_the_batch(utterances: list[Utterance]) -> None:
    staged = StagedRecordingScorer(batches=4, explode=["u3"])
    results = list(score_utterances(utterances, staged, batch_size=2, window=7, lexicon=LEXICON))
    assert [r.utterance_id for r in results] == [u.id for u in utterances]
    failed = [(r.utterance_id, r.reason) for r in results if isinstance(r, ErrorRecord)]
    assert sorted(failed) == [("u3", "model.failed"), ("u4", "input.too_long")]
