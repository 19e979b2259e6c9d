"""Fault injection on real Ray: a process dies at an exact step (:mod:`apa.failpoints`), or a
whole node of a two-node cluster goes away; afterwards (the same run when Ray recovers, else
a rerun into the same output) the tables hold every input id exactly once and equal an
uninterrupted run's.

Each failpoint fires once (a marker file under ``tmp_path``), as a real crash would, so the
retry Ray makes, or the rerun, gets past it; ``fired`` proves the fault happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from apa.batch.commits import read_commits
from apa.data.inputs import read_utterances
from apa.failpoints import ENV, fired
from ray_jobs.batch_score import run_batch
from tests.ray_jobs.conftest import job_settings, sorted_tables

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def uninterrupted(ray_local, demo_manifest, tmp_path_factory) -> dict[str, list[dict]]:
    out = str(tmp_path_factory.mktemp("uninterrupted") / "out")
    run_batch(job_settings(str(demo_manifest), out, rows_per_part=2))
    return sorted_tables(out)


def _input_ids(manifest: Path) -> Counter:
    source = read_utterances(str(manifest))
    return Counter([u.id for u in source.utterances] + [e.utterance_id for e in source.errors])


def _assert_exactly_once(out: str, manifest: Path, reference: dict) -> None:
    tables = sorted_tables(out)
    ids = Counter(r["utterance_id"] for t in ("utterances", "errors") for r in tables[t])
    assert ids == _input_ids(manifest)
    committed = Counter(i for c in read_commits(out) for i in c.ids)
    assert committed == ids
    assert tables == reference


@pytest.mark.parametrize(
    "failpoint",
    [
        "batch.commit.after_pending",  # a write task killed before its commit
        "batch.commit.after_commit",  # ... just after its commit marker (the 380-for-300 bug)
        "batch.commit.after_publish",  # ... after publishing, before returning
        "batch.score.after_scoring",  # a scoring actor killed mid-batch
    ],
)
def test_a_worker_killed_at_a_step_is_retried_and_nothing_is_lost_or_doubled(
    ray_local, demo_manifest, uninterrupted, tmp_path, monkeypatch, failpoint
):
    markers = tmp_path / "markers"
    monkeypatch.setenv(ENV, f"{failpoint}=exit@{markers}")  # forwarded to the workers
    out = str(tmp_path / "out")
    try:
        summary = run_batch(job_settings(str(demo_manifest), out, rows_per_part=2))
    except Exception:  # Ray gave up on the task: the rerun must complete the output
        summary = None
    assert fired(failpoint, markers)
    monkeypatch.delenv(ENV)
    trimmed = summary.duplicates_trimmed if summary else 0
    if summary is None or summary.inputs != sum(_input_ids(demo_manifest).values()):
        summary = run_batch(job_settings(str(demo_manifest), out, rows_per_part=2))
        trimmed += summary.duplicates_trimmed
    assert summary.inputs == summary.scored + summary.errors == 8
    _assert_exactly_once(out, demo_manifest, uninterrupted)
    # a retry rewrote its own part set (same key): nothing had to be trimmed as a duplicate
    assert trimmed == 0


def test_the_driver_killed_mid_job_is_resumed_by_the_rerun(
    ray_local, demo_manifest, uninterrupted, tmp_path
):
    """``python -m ray_jobs.batch_score`` on the running cluster dies (``os._exit``) right
    after it has counted its first commit; the rerun skips what is committed."""
    markers = tmp_path / "markers"
    out = str(tmp_path / "out")
    env = {
        **os.environ,
        ENV: f"batch.driver.after_commit_counted=exit@{markers}",
        "APA_LOG_FORMAT": "json",
        "PYTHONPATH": str(REPO),
    }
    address = ray_local.get_runtime_context().gcs_address
    command = [
        sys.executable, "-m", "ray_jobs.batch_score", "--input", str(demo_manifest),
        "--output", out, "--model", "builtin:gop", "--rows-per-part", "2",
        "--address", address,
    ]  # fmt: skip
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert fired("batch.driver.after_commit_counted", markers)
    partial = read_commits(out)
    assert partial  # it had committed something before it died

    summary = run_batch(job_settings(str(demo_manifest), out, rows_per_part=2))
    assert summary.skipped >= sum(len(c.ids) for c in partial)
    assert summary.inputs == 8
    _assert_exactly_once(out, demo_manifest, uninterrupted)


def test_a_node_of_a_two_node_cluster_removed_mid_job(demo_manifest, uninterrupted, tmp_path):
    """A separate two-node cluster on this machine (``ray.cluster_utils.Cluster``, in a
    subprocess: this process already has its Ray); the worker node is removed once the first
    part set is committed; the job, or its rerun, completes the output."""
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    script = REPO / "tests" / "ray_jobs" / "two_node_kill.py"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(ENV, None)
    done = subprocess.run(
        [sys.executable, str(script), str(demo_manifest), str(out), str(report)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["node_removed_after_commits"] >= 1
    assert result["final_inputs"] == 8
    _assert_exactly_once(str(out), demo_manifest, uninterrupted)


def test_two_runs_into_the_same_output_at_once(ray_local, demo_manifest, uninterrupted, tmp_path):
    """Two jobs started on the same output at the same moment, cutting their part sets
    differently (1 and 3 rows), so both commit every id under different keys: each id ends
    up exactly once, and the tables equal an uninterrupted run's."""
    import threading

    out = str(tmp_path / "out")
    results: dict[int, object] = {}

    def run(rows_per_part: int) -> None:
        try:
            results[rows_per_part] = run_batch(
                job_settings(str(demo_manifest), out, rows_per_part=rows_per_part)
            )
        except Exception as e:  # noqa: BLE001 - reported below
            results[rows_per_part] = e

    threads = [threading.Thread(target=run, args=(n,)) for n in (1, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not [r for r in results.values() if isinstance(r, Exception)], results
    assert all(r.inputs == 8 for r in results.values())
    _assert_exactly_once(out, demo_manifest, uninterrupted)
