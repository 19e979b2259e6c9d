"""Overhead of the Ray batch job over in-process ``apa score``, and its memory as input grows.

    .venv/bin/python benchmarks/batch_overhead.py [--sizes 1000 10000] [--model M] [--threads 1]

For each size N, a manifest of N rows is made from the Speechocean762 sample's test split
(its utterances repeated under distinct ids, same audio), then scored twice, side by side:

- in-process: :func:`apa.scoring.run.run_scoring` (what ``apa score`` runs), torch pinned
  to ``--threads`` threads;
- Ray job: ``python -m ray_jobs.batch_score`` in a process of its own (the driver) with a
  local Ray on all CPUs, one scorer actor of ``--threads`` CPUs (Ray pins the actor's torch
  to that many threads through ``OMP_NUM_THREADS``), read/decode/write tasks beside it.
  Its throughput is its summary's (the run; starting Ray is not counted, as starting the
  Python process is not counted for the in-process side; loading the model is, on both).

Prints utterances per second of each, their ratio (Ray / in-process), and the peak resident
memory (RSS, sampled every 0.2 s with psutil) of the in-process run, the Ray driver, the
largest Ray worker process and all Ray workers together (summed RSS, and summed private
memory: RSS counts the shared object-store pages once in every process that touched them).
Flat driver and worker peaks from 1k to 10k rows mean the job streams. Timings are
wall-clock on a shared machine: compare only figures printed by one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil

from apa.data.inputs import read_utterances
from apa.data.manifest import write_manifest

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "speechocean762-sample"


class PeakRss:
    """Samples the RSS of the driver (this process unless given) and of every Ray worker
    (name ``ray::...`` or a ``default_worker.py`` command line) until stopped."""

    def __init__(self, driver: int | None = None, interval_s: float = 0.2) -> None:
        self.pid = driver if driver is not None else os.getpid()
        self.interval_s = interval_s
        self.driver = 0
        self.driver_private = 0
        """peak private memory (USS) of the driver: its pages no other process maps (its
        anonymous memory, and object-store pages that only it has touched)"""
        self.driver_anon = 0
        """peak anonymous memory of the driver (``RssAnon``): its heap, allocator arenas and
        thread stacks, the memory the driver itself allocates"""
        self.driver_store = 0
        """peak object-store pages mapped by the driver (``RssShmem``): shared memory the
        store owns, counted in the driver's RSS because it has touched them"""
        self.workers: dict[int, int] = {}
        self.workers_total = 0
        self.workers_private = 0
        """peak of the summed private memory (USS) of the workers: no shared object-store
        pages, which RSS counts once per process that touched them"""
        self.workers_anon: dict[int, tuple[int, str]] = {}
        """pid -> (peak anonymous memory, the process title at that peak): RSS less its
        file and shared-memory pages, the heap, allocator arenas and stacks the worker
        itself allocated, no object-store pages and no shared libraries"""
        self.workers_anon_total = 0
        """peak of the workers' summed anonymous memory"""
        self.workers_proportional = 0
        """peak of the summed proportional memory (PSS) of the workers: each shared page
        split among the processes that map it, so the sum counts the object-store pages the
        workers touched once, not once per worker"""
        self.store = 0
        """peak shared memory of the whole machine (``Shmem`` of ``/proc/meminfo``) above
        its level when sampling started: the object-store pages the job's Ray has
        committed, each counted once"""
        self.workers_at_private_peak = 0
        """worker processes alive in the sample where :attr:`workers_private` peaked"""
        self.worker_private: dict[int, tuple[int, str]] = {}
        """pid -> (peak private memory, the process title at that peak)"""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process(self.pid)
        shmem_before = _shmem()
        while not self._stop.is_set():
            try:
                full = me.memory_full_info()  # one read of smaps: rss, uss and pss
                self.driver = max(self.driver, full.rss)
                self.driver_private = max(self.driver_private, full.uss)
                anon, store = _rss_parts(self.pid)
                self.driver_anon = max(self.driver_anon, anon)
                self.driver_store = max(self.driver_store, store)
            except (psutil.Error, OSError):
                pass
            self.store = max(self.store, _shmem() - shmem_before)
            total = private = proportional = anonymous = alive = 0
            for p in psutil.process_iter(["pid", "name", "cmdline"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if p.pid != me.pid and (
                    (p.info["name"] or "").startswith("ray::") or "default_worker.py" in cmd
                ):
                    try:
                        full = p.memory_full_info()
                    except psutil.Error:
                        continue
                    rss, uss = full.rss, full.uss
                    anon = rss - full.shared  # shared: RssFile + RssShmem, from statm
                    self.workers[p.pid] = max(self.workers.get(p.pid, 0), rss)
                    title = cmd.split()[0] if cmd.startswith("ray::") else p.info["name"] or ""
                    if anon > self.workers_anon.get(p.pid, (0, ""))[0]:
                        self.workers_anon[p.pid] = (anon, title)
                    if uss > self.worker_private.get(p.pid, (0, ""))[0]:
                        self.worker_private[p.pid] = (uss, title)
                    total += rss
                    private += uss
                    proportional += full.pss
                    anonymous += anon
                    alive += 1
            self.workers_total = max(self.workers_total, total)
            self.workers_anon_total = max(self.workers_anon_total, anonymous)
            self.workers_proportional = max(self.workers_proportional, proportional)
            if private > self.workers_private:
                self.workers_private, self.workers_at_private_peak = private, alive
            self._stop.wait(self.interval_s)


def _shmem() -> int:
    """The machine's shared memory in bytes (``Shmem`` of ``/proc/meminfo``; 0 off Linux)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("Shmem:"))
    except (OSError, StopIteration):
        return 0


def _rss_parts(pid: int) -> tuple[int, int]:
    """(``RssAnon``, ``RssShmem``) of a process in bytes, from ``/proc/<pid>/status``
    (Linux; ``OSError`` where there is none, which :class:`PeakRss` skips)."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith("Rss"))
    kib = {k: int(v.split()[0]) * 1024 for k, v in fields.items()}
    return kib.get("RssAnon", 0), kib.get("RssShmem", 0)


def make_manifest(n: int, directory: Path) -> str:
    source = read_utterances(str(SAMPLE / "test"))
    base = source.utterances
    rows = [
        base[i % len(base)].model_copy(update={"id": f"{base[i % len(base)].id}_r{i}"})
        for i in range(n)
    ]
    uri = str(directory / f"manifest-{n}.jsonl")
    write_manifest(rows, uri)
    return uri


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def ray_job(manifest: str, out: Path, args: argparse.Namespace) -> tuple[float, PeakRss]:
    """Run the job as a user does (``python -m ray_jobs.batch_score``, its own local Ray);
    returns its throughput (from its summary: the run, Ray start excluded) and the peaks."""
    cmd = [sys.executable, "-m", "ray_jobs.batch_score", "--input", manifest, "--output",
           str(out), "--model", args.model, "--mode", args.mode, "--batch-size",
           str(args.batch_size), "--cpus-per-actor", str(args.threads)]  # fmt: skip
    env = {**os.environ, "APA_LOG_LEVEL": "WARNING", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        with PeakRss(driver=proc.pid) as peak:
            if proc.wait() != 0:
                raise SystemExit(f"the Ray job failed; see {out.with_suffix('.log')}")
    summary = json.loads((out / "summary.json").read_text())
    return summary["utterances_per_second"], peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--model", default="builtin:tiny-phi4mm")
    parser.add_argument("--mode", default="one-pass")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-in-process-above", type=int, default=None,
                        help="run only the Ray job (memory) for sizes above this")  # fmt: skip
    args = parser.parse_args()

    import torch

    from apa.log import configure_logging
    from apa.scoring.run import run_scoring
    from apa.scoring.settings import ScoringSettings

    configure_logging(level="WARNING")
    torch.set_num_threads(args.threads)
    scoring = ScoringSettings(model=args.model, mode=args.mode, batch_size=args.batch_size)
    work = Path(tempfile.mkdtemp(prefix="apa-batch-bench-"))
    os.environ.setdefault("APA_CACHE_DIR", str(work / "cache"))

    print(f"device: {platform.machine()}, {psutil.cpu_count()} CPUs, "
          f"{mib(psutil.virtual_memory().total)} RAM; model {args.model} ({args.mode}), "
          f"batch {args.batch_size}, {args.threads} torch thread(s) a side; in {work}")  # fmt: skip
    print("| rows | in-process utt/s | Ray job utt/s | ratio | in-process peak RSS | "
          "Ray driver peak RSS | largest Ray worker | all Ray workers (RSS) | all Ray workers "
          "(private) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for n in args.sizes:
        manifest = make_manifest(n, work)
        inproc_rate, inproc_rss = None, None
        if args.skip_in_process_above is None or n <= args.skip_in_process_above:
            with PeakRss() as peak:
                s = run_scoring(manifest, str(work / f"inproc-{n}"), scoring)
            inproc_rate, inproc_rss = s.utterances_per_second, peak.driver
        ray_rate, peak = ray_job(manifest, work / f"ray-{n}", args)
        ratio = f"{ray_rate / inproc_rate:.2f}" if inproc_rate else "-"
        print(f"| {n} | {f'{inproc_rate:.2f}' if inproc_rate else '-'} | {ray_rate:.2f} | "
              f"{ratio} | {mib(inproc_rss) if inproc_rss else '-'} | {mib(peak.driver)} | "
              f"{mib(max(peak.workers.values(), default=0))} | {mib(peak.workers_total)} | "
              f"{mib(peak.workers_private)} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
