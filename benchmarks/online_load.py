"""Online scoring under bounded load: dynamic batching on vs off.

    .venv/bin/python benchmarks/online_load.py [--requests 96] [--concurrency 8]
        [--model builtin:tiny-qwen2-audio] [--mode generate] [--batch-size 8] [--wait 0.01]

Starts local Ray and Serve in this process and deploys ``serve.app:build_app`` twice, one
after the other, on loopback: with ``@serve.batch`` batches of up to ``--batch-size``
("batching on") and with batches of one ("batching off"; everything else equal). For each,
a second process (this script with ``--drive``) sends ``--requests`` multipart requests of
the Speechocean762 sample's test utterances (100) from ``--concurrency`` closed-loop clients
(each sends its next request when the last is answered), after a warm-up. Prints the
device, p50/p95/p99 latency and requests/s of both, and the on/off ratios. Every answer
must be 200; the run fails otherwise.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "speechocean762-sample"


def device() -> str:
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} logical CPUs, {gpu}; torch {torch.__version__}"


def drive(url: str, requests: int, concurrency: int, corpus: Path) -> dict:
    """The load generator (second process): closed-loop clients over loopback."""
    import httpx

    from apa.data.speechocean762 import prepare_speechocean762

    utterances = prepare_speechocean762(corpus, ["test"]).utterances
    samples = [(u.id, u.text, Path(u.audio).read_bytes()) for u in utterances]

    def client_loop(worker: int) -> list[tuple[float, int]]:
        out = []
        with httpx.Client(base_url=url, timeout=300) as client:
            for i in range(worker, requests, concurrency):
                uid, text, audio = samples[i % len(samples)]
                started = time.perf_counter()
                response = client.post(
                    "/v1/assessments",
                    data={"text": text, "id": f"{uid}-{i}"},
                    files={"audio": ("a.flac", audio, "audio/flac")},
                )
                out.append((time.perf_counter() - started, response.status_code))
        return out

    started = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        results = [r for rs in pool.map(client_loop, range(concurrency)) for r in rs]
    wall = time.perf_counter() - started
    return {
        "latencies": [r[0] for r in results],
        "statuses": [r[1] for r in results],
        "wall_s": wall,
    }


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def run_config(args: dict, opts: argparse.Namespace) -> dict:
    from ray import serve

    from serve.local import free_port, start

    url = start(args, port=free_port(), name="bench")
    try:
        command = [
            sys.executable,
            __file__,
            "--drive",
            url,
            "--corpus",
            str(opts.corpus),
            "--concurrency",
            str(opts.concurrency),
        ]
        # Warm-up (model caches, first batches), then the measured run.
        warm = [*command, "--requests", str(opts.concurrency * 2)]
        subprocess.run(warm, check=True, capture_output=True)
        done = subprocess.run(
            [*command, "--requests", str(opts.requests)],
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        serve.shutdown()
    result = json.loads(done.stdout)
    bad = [s for s in result["statuses"] if s != 200]
    if bad:
        raise SystemExit(f"{len(bad)} of {len(result['statuses'])} requests failed: {bad[:10]}")
    lat = result["latencies"]
    return {
        "p50": percentile(lat, 50),
        "p95": percentile(lat, 95),
        "p99": percentile(lat, 99),
        "rps": len(lat) / result["wall_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--model", default="builtin:tiny-qwen2-audio")
    parser.add_argument("--mode", choices=["generate", "one-pass"], default="generate")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--wait", type=float, default=0.01, help="batch_wait_timeout_s")
    parser.add_argument(
        "--corpus", type=Path, default=SAMPLE, help="Speechocean762 layout; its test split"
    )
    parser.add_argument("--drive", metavar="URL", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.drive:
        print(json.dumps(drive(opts.drive, opts.requests, opts.concurrency, opts.corpus)))
        return

    import ray

    os.environ.setdefault("APA_LOG_LEVEL", "WARNING")
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"APA_LOG_LEVEL": "WARNING"}},
    )
    base = {
        "auth": "disabled",
        "batch_wait_timeout_s": opts.wait,
        "scorer_max_ongoing_requests": max(opts.batch_size, opts.concurrency),
        "ingress_num_cpus": 0.1,
        "scorer_num_cpus": 1,
    }
    results = {}
    for label, batch_size in (("batching on", opts.batch_size), ("batching off", 1)):
        scoring = {"model": opts.model, "mode": opts.mode, "batch_size": batch_size}
        args = {**base, "scoring": scoring}
        results[label] = run_config(args, opts)
    ray.shutdown()

    print(f"device: {device()}")
    print(
        f"model {opts.model} ({opts.mode}), {opts.requests} requests, "
        f"{opts.concurrency} concurrent clients, "
        f"max batch {opts.batch_size} vs 1, batch wait {opts.wait:g} s, "
        f"audio: {opts.corpus}/test"
    )
    print(f"{'':14}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}{'req/s':>8}")
    for label, r in results.items():
        print(f"{label:14}{r['p50']:8.3f}{r['p95']:8.3f}{r['p99']:8.3f}{r['rps']:8.2f}")
    on, off = results["batching on"], results["batching off"]
    print(
        f"ratio on/off: req/s {on['rps'] / off['rps']:.2f}x, "
        f"p50 {on['p50'] / off['p50']:.2f}x, p99 {on['p99'] / off['p99']:.2f}x"
    )


if __name__ == "__main__":
    main()
