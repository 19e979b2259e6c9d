"""The commit protocol under every interleaving the issue names, driven step by step.

Each writer is :func:`apa.batch.commits.write_steps` (one storage operation per step); a
"crash" stops a writer's steps; a "retry" writes the same part set again; a concurrent run
is a second writer and a :func:`~apa.batch.commits.recover` placed anywhere between the
steps. Every schedule ends as runs end: each run recovers the output and writes again what
it sent but finds missing (:func:`~apa.batch.commits.missing_ids`). Then every id must be
in the tables exactly once, the commits must be disjoint and match the rows, and the tables
must equal those of one uninterrupted writer.

Results are a function of the id (as a deterministic scorer gives), so two writers of the
same id write the same rows and "equal to an uninterrupted run" is exact.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from apa.batch.commits import (
    PartSet,
    build_part_set,
    commit_part_set,
    missing_ids,
    read_commits,
    recover,
    write_steps,
)
from apa.schema import Assessment, ErrorRecord, SentenceScores, WordAssessment
from apa.scorer import ScorerInfo
from apa.tables import TABLES, read_table

INFO = ScorerInfo(name="builtin:test", backend="test", model_is_random=True)


def _result(uid: str) -> Assessment | ErrorRecord:
    """The deterministic result of ``uid``: ids starting with "e" are error rows."""
    if uid.startswith("e"):
        return ErrorRecord(utterance_id=uid, stage="audio", reason="audio.silent", message="s")
    score = float(sum(map(ord, uid)) % 10)
    return Assessment(
        utterance_id=uid,
        text="we call",
        sentence=SentenceScores(
            accuracy=score, fluency=7, prosody=None, completeness=10, total=score
        ),
        words=[
            WordAssessment(text="we", accuracy=score, stress=10, total=score),
            WordAssessment(text="call", accuracy=6, stress=10, total=6.5),
        ],
    )


def _part_set(ids: list[str]) -> PartSet:
    results = [_result(i) for i in ids]
    return build_part_set(
        [r for r in results if isinstance(r, Assessment)],
        [r for r in results if isinstance(r, ErrorRecord)],
        audio_seconds=float(len(ids)),
        scorer=INFO,
    )


def _write(out: str, ids: list[str]) -> None:
    results = [_result(i) for i in ids]
    commit_part_set(
        out,
        [r for r in results if isinstance(r, Assessment)],
        [r for r in results if isinstance(r, ErrorRecord)],
        audio_seconds=float(len(ids)),
        scorer=INFO,
    )


def _finish_run(out: str, sent: list[str]) -> None:
    """What a run does at its end: recover, then write whatever it sent that is missing."""
    for _ in range(3):
        _, missing = missing_ids(out, sent)
        if not missing:
            return
        _write(out, sorted(missing))
    raise AssertionError(f"{out}: still missing after 3 passes")


def _tables(out: str) -> dict[str, list[dict]]:
    tables = {}
    for name in TABLES:
        path = Path(out) / name
        rows = read_table(str(path)).to_pylist() if path.exists() else []
        tables[name] = sorted(rows, key=lambda r: tuple(str(v) for v in r.values()))
    return tables


def _check(out: str, expected_ids: set[str], reference: dict[str, list[dict]]) -> None:
    commits = recover(out)
    ids = Counter(i for c in commits for i in c.ids)
    assert set(ids) == expected_ids and max(ids.values()) == 1, ids
    tables = _tables(out)
    rows = Counter(r["utterance_id"] for t in ("utterances", "errors") for r in tables[t])
    assert rows == ids
    for c in commits:
        for table, n in c.rows.items():
            assert sum(r["utterance_id"] in c.ids for r in tables[table]) == n
    assert tables == reference
    leftovers = [p.name for p in Path(out).rglob("*") if "_pending-" in p.name]
    assert not leftovers


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    """Tables of one uninterrupted writer, for any set of ids."""
    cache: dict[frozenset[str], dict[str, list[dict]]] = {}

    def make(ids: set[str]) -> dict[str, list[dict]]:
        key = frozenset(ids)
        if key not in cache:
            out = str(tmp_path_factory.mktemp("reference"))
            _write(out, sorted(ids))
            cache[key] = _tables(out)
        return cache[key]

    return make


A = ["a", "b", "e1"]  # three tables: utterances, words, errors
B_OVERLAP = ["e1", "e2"]  # shares "e1" with A: two runs scoring the same input
SMALL = ["e1", "e3"]  # one table: three steps
N_STEPS_A = len(list(_part_set(A).parts)) * 2 + 1


def test_the_writers_have_the_steps_the_schedules_assume() -> None:
    assert N_STEPS_A == 7
    assert len(_part_set(B_OVERLAP).parts) * 2 + 1 == 3 == len(_part_set(SMALL).parts) * 2 + 1


@pytest.mark.parametrize("crash_after", range(N_STEPS_A + 1))
@pytest.mark.parametrize("recover_before_retry", [False, True])
def test_a_task_retried_after_dying_at_any_step_commits_once(
    tmp_path: Path, reference, crash_after: int, recover_before_retry: bool
) -> None:
    """Ray retries a write task that died after ``crash_after`` steps (7 = after the whole
    write): the retry writes the same key, so nothing is committed twice."""
    out = str(tmp_path / "out")
    steps = write_steps(out, _part_set(A))
    for _ in itertools.islice(steps, crash_after):
        pass
    if recover_before_retry:  # another run's start, or this run's driver restarted
        recover(out)
    for _ in write_steps(out, _part_set(A)):  # the retry
        pass
    assert len(read_commits(out)) == 1
    _finish_run(out, A)
    _check(out, set(A), reference(set(A)))


@pytest.mark.parametrize("crash_after", range(N_STEPS_A + 1))
def test_a_run_that_dies_between_any_two_steps_is_completed_by_the_rerun(
    tmp_path: Path, reference, crash_after: int
) -> None:
    """The driver dies (no retry) after ``crash_after`` steps; the rerun recovers, skips
    what is committed and scores the rest, as ``run_batch`` does."""
    out = str(tmp_path / "out")
    for _ in itertools.islice(write_steps(out, _part_set(A)), crash_after):
        pass
    commits = recover(out)
    done = {i for c in commits for i in c.ids}
    assert done in (set(), set(A))  # all or nothing: the commit is the only record
    todo = [i for i in A if i not in done]
    if todo:
        _write(out, todo)
    _finish_run(out, A)
    _check(out, set(A), reference(set(A)))


def _schedules(n_a: int, n_b: int) -> Iterator[tuple[str, ...]]:
    """Every interleaving of ``n_a`` steps of A and ``n_b`` of B, with one recover (R,
    another run starting) at every position."""
    for positions in itertools.combinations(range(n_a + n_b), n_b):
        base = ["A"] * (n_a + n_b)
        for p in positions:
            base[p] = "B"
        for r in range(n_a + n_b + 1):
            yield tuple(base[:r] + ["R"] + base[r:])


def _run_schedule(out: str, schedule: tuple[str, ...], a_ids: list[str], b_ids: list[str]):
    writers = {"A": write_steps(out, _part_set(a_ids)), "B": write_steps(out, _part_set(b_ids))}
    failed = set()
    for actor in schedule:
        if actor == "R":
            recover(out)
            continue
        if actor in failed:
            continue
        try:
            next(writers[actor])
        except StopIteration:
            pass
        except RuntimeError:
            failed.add(actor)  # lost its commit to the recover: the task fails
    for actor, writer in writers.items():
        if actor in failed:
            continue
        try:
            for _ in writer:
                pass
        except RuntimeError:
            pass  # the task failed; the run's end writes what is missing
    _finish_run(out, a_ids)
    _finish_run(out, b_ids)


def test_two_runs_writing_overlapping_ids_at_once_end_with_each_id_once(
    tmp_path: Path, reference
) -> None:
    """Two runs write the same output at once, one scoring an id the other scores too,
    under every interleaving of their steps with a third run's recover."""
    expected = set(A) | set(B_OVERLAP)
    n_a, n_b = N_STEPS_A, len(_part_set(B_OVERLAP).parts) * 2 + 1
    schedules = list(_schedules(n_a, n_b))
    assert len(schedules) == 120 * 11
    for i, schedule in enumerate(schedules[::4]):  # every 4th: all shapes, 330 schedules
        out = str(tmp_path / f"s{i}")
        _run_schedule(out, schedule, A, B_OVERLAP)
        _check(out, expected, reference(expected))


def test_two_runs_writing_the_same_part_set_at_once(tmp_path: Path, reference) -> None:
    """Both runs cut the same batch: same key, same files, one commit."""
    for i, schedule in enumerate(_schedules(3, 3)):
        out = str(tmp_path / f"s{i}")
        _run_schedule(out, schedule, SMALL, SMALL)
        assert len(read_commits(out)) == 1
        _check(out, set(SMALL), reference(set(SMALL)))


class _Crash(Exception):
    pass


class _Budget:
    """Wraps storage operations so that the one after the first ``n`` raises (a crash)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def wrap(self, real):
        def op(*args, **kwargs):
            if self.n <= 0:
                raise _Crash
            self.n -= 1
            return real(*args, **kwargs)

        return op


def test_a_trim_interrupted_anywhere_is_finished_by_the_next_recover(
    tmp_path: Path, reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recover that dies in the middle of trimming a duplicate (after any of its storage
    writes and deletes) leaves a state the next recover finishes."""
    import apa.batch.commits as commits_module

    expected = set(A) | set(B_OVERLAP)
    real_write, real_delete = commits_module.storage.write_bytes, commits_module._delete
    crashed = 0
    for budget in range(12):
        out = str(tmp_path / f"t{budget}")
        _write(out, A)
        _write(out, B_OVERLAP)
        ops = _Budget(budget)
        monkeypatch.setattr(commits_module.storage, "write_bytes", ops.wrap(real_write))
        monkeypatch.setattr(commits_module, "_delete", ops.wrap(real_delete))
        try:
            recover(out)
        except _Crash:
            crashed += 1
        monkeypatch.setattr(commits_module.storage, "write_bytes", real_write)
        monkeypatch.setattr(commits_module, "_delete", real_delete)
        _finish_run(out, A)
        _finish_run(out, B_OVERLAP)
        _check(out, expected, reference(expected))
    assert crashed >= 5  # the trim has that many operations to be cut after
