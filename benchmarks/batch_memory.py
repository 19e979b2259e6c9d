"""The batch job's memory as the corpus grows, and how soon scoring starts on a big manifest.

    .venv/bin/python benchmarks/batch_memory.py [--sizes 10000,100000,500000] [--start-rows 1000000]
    .venv/bin/python benchmarks/batch_memory.py --sizes 2000,20000 --start-rows 100000  # minutes
    .venv/bin/python benchmarks/batch_memory.py --sizes '' --start-rows 1000000  # the start only

For each size N a JSONL manifest of N rows is written (streamed, never held): distinct ids
over a few real clips of the Speechocean762 sample, referred to by path (no audio is
copied), plus one row in every 1,000 that is bad (no text) and one duplicated id, so the
error paths run at scale too. The job runs as a user runs it (``python -m
ray_jobs.batch_score``, its own local Ray on all CPUs) with ``builtin:passthrough``, a
scorer that scores nothing (:mod:`apa.scoring.passthrough`): every other stage (reading
the manifest, fetching and decoding audio, canonical phones, writing the committed part
sets, the driver's bookkeeping) is real, and the model's cost, which does not depend on the
corpus size, stays out of a run that would otherwise take days at 500k rows on two cores.

Prints per size: rows per second, the peak resident memory (sampled every 0.2 s from
launch until the job has written its summary; Ray's shutdown after it is left out) of the
driver (RSS; private (USS); anonymous, ``RssAnon``: what the driver itself allocates; and
store pages, ``RssShmem``: object-store pages it has touched, shared memory the store
owns), of the largest Ray worker and of all workers together (RSS and private memory; RSS
counts the object-store pages a process has touched, shared and bounded by the job's
``object_store_mib``, once in every process that touched them), the workers' summed
proportional memory (PSS: each shared page split among the processes that map it, so the
sum counts every page once), the workers' anonymous memory (the largest one's and the sum:
RSS less file and shared-memory pages, what the workers themselves allocate, with neither
the object store nor shared libraries in it) and the object store's committed pages (the
machine's ``Shmem`` above its level at launch).
After the table, per size: how many workers were alive when their summed private memory
peaked, and the largest workers' own peaks of anonymous memory with their process titles
(which worker grew).
Flat peaks from the smallest to the largest size mean nothing grows with the corpus.
Then, on a manifest of ``--start-rows`` rows, the seconds from launching the job to its
first committed part set (scored rows on disk; Ray's start included), after which the job
is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_overhead import SAMPLE, PeakRss, mib  # noqa: E402

from apa.data.inputs import read_utterances  # noqa: E402


def make_manifest(n: int, directory: Path, clips: int = 8) -> str:
    """``n`` rows over the sample's first ``clips`` test clips, written line by line."""
    base = read_utterances(str(SAMPLE / "test")).utterances[:clips]
    uri = directory / f"manifest-{n}.jsonl"
    with open(uri, "w") as f:
        for i in range(n):
            u = base[i % len(base)]
            row = {"id": f"u{i:08d}", "audio": u.audio, "text": u.text}
            if i % 1000 == 999:
                row["text"] = ""  # input.missing_field
            if i == n - 1:
                row["id"] = "u00000000"  # duplicates the first row: input.duplicate_id
            f.write(json.dumps(row) + "\n")
    return str(uri)


def job(manifest: str, out: Path, args: argparse.Namespace) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ray_jobs.batch_score", "--input", manifest, "--output",
           str(out), "--model", "builtin:passthrough", "--rows-per-read-block",
           str(args.rows_per_read_block), "--rows-per-part", str(args.rows_per_part)]  # fmt: skip
    env = {**os.environ, "APA_LOG_LEVEL": "WARNING", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    log = open(out.with_suffix(".log"), "w")  # noqa: SIM115 - the job's, closed at its end
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def memory(n: int, work: Path, args: argparse.Namespace) -> str:
    manifest = make_manifest(n, work)
    out = work / f"out-{n}"
    started = time.perf_counter()
    proc = job(manifest, out, args)
    with PeakRss(driver=proc.pid) as peak:
        # sampled until the job has written its summary (its work done), not through Ray's
        # shutdown: as workers exit, the last ones become the only holders of the shared
        # library pages, so their private memory jumps (~+110 MiB) with nothing allocated
        while proc.poll() is None and not (out / "summary.json").exists():
            time.sleep(0.05)
    if proc.wait() != 0:
        raise SystemExit(f"the job failed; see {out.with_suffix('.log')}")
    seconds = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == n - 1, summary  # the duplicate: two rows, one input
    print(f"| {n:,} | {summary['scored']:,} | {summary['errors']:,} | {n / seconds:.0f} | "
          f"{mib(peak.driver)} | {mib(peak.driver_private)} | {mib(peak.driver_anon)} | "
          f"{mib(peak.driver_store)} | "
          f"{mib(max(peak.workers.values(), default=0))} | "
          f"{mib(max((uss for uss, _ in peak.worker_private.values()), default=0))} | "
          f"{mib(max((anon for anon, _ in peak.workers_anon.values()), default=0))} | "
          f"{mib(peak.workers_total)} | {mib(peak.workers_private)} | "
          f"{mib(peak.workers_proportional)} | {mib(peak.workers_anon_total)} | "
          f"{mib(peak.store)} |", flush=True)  # fmt: skip
    largest = sorted(peak.workers_anon.values(), reverse=True)[:8]
    return (f"- {n:,} rows: {peak.workers_at_private_peak} workers alive at the peak of their "
            f"summed private memory, {len(peak.workers_anon)} seen; each one's peak anonymous "
            "memory, largest first: "
            + ", ".join(f"{mib(anon)} {title}" for anon, title in largest))  # fmt: skip


def start_latency(n: int, work: Path, args: argparse.Namespace) -> None:
    manifest = make_manifest(n, work)
    out = work / f"start-{n}"
    started = time.perf_counter()
    proc = job(manifest, out, args)
    commits = out / "_commits"
    while not (commits.is_dir() and any(commits.iterdir())):
        if proc.poll() is not None:
            raise SystemExit(f"the job ended first; see {out.with_suffix('.log')}")
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    proc.terminate()  # the job's local Ray (raylet, workers) follows its driver
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    print(f"{n:,}-row manifest ({os.path.getsize(manifest) / 2**20:.0f} MiB): first part set "
          f"committed {seconds:.1f} s after launch (Ray's start included)", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",") if x],
                        default=[10_000, 100_000, 500_000],
                        help="comma-separated row counts ('': the start only)")  # fmt: skip
    parser.add_argument("--start-rows", type=int, default=1_000_000)
    parser.add_argument("--rows-per-part", type=int, default=256)
    parser.add_argument("--rows-per-read-block", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="apa-batch-memory-"))
    print(f"device: {platform.machine()}, {psutil.cpu_count()} CPUs, "
          f"{mib(psutil.virtual_memory().total)} RAM; builtin:passthrough; in {work}")  # fmt: skip
    print(
        "| rows | scored | errors | rows/s | driver peak RSS | driver (private) | driver "
        "(anonymous) | driver (store pages) | largest worker (RSS) | largest worker "
        "(private) | largest worker (anonymous) | all workers (RSS) | all workers (private) | "
        "all workers (proportional) | all workers (anonymous) | object store (committed) |"
    )
    print("|---" * 16 + "|", flush=True)
    workers = [memory(n, work, args) for n in args.sizes]
    print("\n".join(workers), flush=True)
    if args.start_rows:
        start_latency(args.start_rows, work, args)


if __name__ == "__main__":
    main()
