"""Committed part sets: a crash between a part set's tables and its commit leaves nothing a
reader or a resumed run counts twice; a crash after the commit is finished by recover()."""

from __future__ import annotations

from pathlib import Path

import pytest

from apa.batch.commits import commit_part_set, done_ids, read_commits, recover
from apa.schema import Assessment, ErrorRecord, SentenceScores, WordAssessment
from apa.scorer import ScorerInfo
from apa.tables import read_assessments, read_table

INFO = ScorerInfo(name="builtin:test", backend="test", model_is_random=True)


def _assessment(uid: str) -> Assessment:
    return Assessment(
        utterance_id=uid,
        text="we call",
        sentence=SentenceScores(accuracy=8, fluency=7, prosody=None, completeness=10, total=7.5),
        words=[
            WordAssessment(text="we", accuracy=9, stress=10, total=9),
            WordAssessment(text="call", accuracy=6, stress=10, total=6.5),
        ],
    )


def _error(uid: str) -> ErrorRecord:
    return ErrorRecord(utterance_id=uid, stage="audio", reason="audio.silent", message="silent")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_part_set_is_readable_as_tables_and_counted(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    commit = commit_part_set(
        out, [_assessment("a"), _assessment("b")], [_error("c")], audio_seconds=3.5, scorer=INFO
    )
    assert commit.rows == {"utterances": 2, "words": 4, "errors": 1}
    assert sorted(a.utterance_id for a in read_assessments(out)) == ["a", "b"]
    assert read_table(f"{out}/errors").column("reason").to_pylist() == ["audio.silent"]
    assert done_ids(recover(out)) == {"a", "b", "c"}
    assert not [f for f in _files(tmp_path / "out") if "pending" in f]


def test_uncommitted_parts_are_invisible_and_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    commit_part_set(str(out), [_assessment("a")], [], audio_seconds=1.0, scorer=INFO)
    # a run that died after writing a part set's words but before its commit
    (out / "words" / "_pending-deadbeef.parquet").write_bytes(b"half of a batch")
    (out / "utterances" / "part-x.parquet.partial-1234").write_bytes(b"torn")
    assert read_table(str(out / "words")).num_rows == 2  # readers skip pending names
    commits = recover(str(out))
    assert done_ids(commits) == {"a"}
    key = commits[0].key
    expected = [f"{t}/part-{key}.parquet" for t in ("utterances", "words")]
    assert _files(out) == sorted([*expected, f"_commits/{key}.json"])


def test_a_committed_but_unpublished_part_set_is_finished(tmp_path: Path) -> None:
    out = tmp_path / "out"
    commit = commit_part_set(str(out), [_assessment("a")], [], audio_seconds=1.0, scorer=INFO)
    # as if the run died between the commit and the move of its parts
    final = out / "words" / f"part-{commit.key}.parquet"
    final.rename(out / "words" / f"_pending-{commit.key}.parquet")
    assert read_table(str(out / "words")).num_rows == 0
    recover(str(out))
    assert final.exists()
    assert read_table(str(out / "words")).num_rows == 2


def test_an_id_committed_twice_is_trimmed_to_one_commit(tmp_path: Path) -> None:
    # before: recover raised "ids committed more than once" and the output was wedged
    out = str(tmp_path / "out")
    first = commit_part_set(
        out, [_assessment("a"), _assessment("b")], [], audio_seconds=2.0, scorer=INFO
    )
    second = commit_part_set(out, [_assessment("b")], [_error("c")], audio_seconds=1.0, scorer=INFO)
    assert len(read_commits(out)) == 2
    commits = recover(out)
    assert sorted(i for c in commits for i in c.ids) == ["a", "b", "c"]
    owner = min(first.key, second.key)  # the first commit in key order keeps "b"
    assert any(c.key == owner for c in commits)
    assert sorted(read_table(f"{out}/utterances").column("utterance_id").to_pylist()) == ["a", "b"]
    assert read_table(f"{out}/words").num_rows == 4
    assert read_table(f"{out}/errors").column("utterance_id").to_pylist() == ["c"]
    assert recover(out) == commits  # settled
    with pytest.raises(ValueError, match="holds an id twice"):
        commit_part_set(out, [_assessment("b")], [_error("b")], audio_seconds=0, scorer=INFO)


def test_a_retried_part_set_has_the_same_key_and_commits_once(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    a = commit_part_set(out, [_assessment("a")], [_error("b")], audio_seconds=1.0, scorer=INFO)
    b = commit_part_set(out, [_assessment("a")], [_error("b")], audio_seconds=1.0, scorer=INFO)
    assert a.key == b.key
    assert read_commits(out) == [a]
    assert read_table(f"{out}/utterances").num_rows == 1


def test_empty_output_has_no_commits(tmp_path: Path) -> None:
    assert recover(str(tmp_path / "nothing-here")) == []


def _peak(function, *args) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        function(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_settle_adds_up_the_commits_without_holding_their_ids(tmp_path: Path) -> None:
    """:func:`settle` repairs as :func:`recover` does (here: an id committed twice is
    trimmed) and returns totals equal to the commits': scored, reasons, audio, the last
    scorer. Its Python memory does not grow with the ids (they go to SQLite on disk):
    8 times the commits cost recover megabytes, settle a few bytes per commit."""
    from collections import Counter

    from apa.batch.commits import settle

    def write(out: str, parts: range) -> None:
        for part in parts:
            ids = [f"utterance-{part:03d}-{i:04d}-" + "x" * 40 for i in range(500)]
            commit_part_set(out, [], [_error(i) for i in ids], audio_seconds=0.0, scorer=None)

    out = str(tmp_path / "out")
    write(out, range(10))
    settle(out)  # first calls pay for imports and caches
    small = _peak(settle, out), _peak(recover, out)
    write(out, range(10, 80))
    commit_part_set(out, [_assessment("a"), _assessment("utterance-000-0000-" + "x" * 40)], [],
                    audio_seconds=2.5, scorer=INFO)  # fmt: skip
    totals = settle(out)
    large = _peak(settle, out), _peak(recover, out)

    commits = recover(out)
    assert len(commits) == 81 and totals.commits == 81
    assert totals.scored == sum(len(c.scored) for c in commits) == 1  # "a"; the other trimmed
    assert totals.reasons == dict(Counter(r for c in commits for r in c.errors.values()))
    assert totals.inputs == len(done_ids(commits)) == 80 * 500 + 1
    assert totals.scorer == INFO and totals.audio_seconds == sum(c.audio_seconds for c in commits)
    assert large[1] - small[1] > 2_000_000, (small, large)  # 35,000 more ids in recover's hands
    assert large[0] - small[0] < 200_000, (small, large)


def test_settle_memory_does_not_grow_with_the_part_sets(tmp_path: Path) -> None:
    """What a round knows of the output (files, commits) is on disk too: 16 times the part
    sets (40 -> 641, one of them holding an id another holds, and a stray half-written
    file) cost :func:`settle` ~100 bytes of Python memory per part set, the directory
    listing pyarrow returns whole (a list of ``FileInfo``), where it held ~1.4 kB per part
    set when its round kept them in memory (measured: 4.3 MB at 2,560 part sets, now
    0.53 MB)."""
    from apa.batch.commits import settle

    def write(out: str, parts: range) -> None:
        for part in parts:
            ids = [f"utterance-{part:04d}-{i}" for i in range(2)]
            commit_part_set(out, [], [_error(i) for i in ids], audio_seconds=0.5, scorer=None)

    small, large = str(tmp_path / "small"), str(tmp_path / "large")
    write(small, range(40))
    write(large, range(640))
    commit_part_set(large, [], [_error("utterance-0000-0")], audio_seconds=0.0, scorer=None)
    stray = tmp_path / "large" / "errors" / "part-x.parquet.partial-1"
    stray.write_bytes(b"half")
    totals = settle(large)
    assert totals.commits == 641 and totals.inputs == 1280  # the duplicated id trimmed
    assert not stray.exists()
    peaks = _peak(settle, small), _peak(settle, large)
    assert (peaks[1] - peaks[0]) / 601 < 250, peaks  # bytes per part set more
