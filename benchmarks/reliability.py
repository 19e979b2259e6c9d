"""The adversarial campaign as a script: hostile inputs over the three surfaces, abuse of the
service, and what each got. Figures for ``docs/reliability.md``.

    .venv/bin/python benchmarks/reliability.py [--out /tmp/apa-reliability] [--burst 200]

1. Every kind of :mod:`apa.testing.adversarial` through ``apa score`` (in-process,
   ``builtin:gop``), the batch job (local Ray, ``builtin:gop``) and the HTTP service (local
   Serve, ``builtin:tiny-qwen2-audio``, multipart); one line per kind with each surface's
   answer, checked against the catalogue, and the counts (inputs = scored + errors).
2. Protocol abuse of the service that no manifest can carry (no key, wrong media type,
   oversized, deeply nested or huge JSON, bad base64, ...): status and reason of each.
3. Overload: a burst of concurrent requests from one API key (over its share: 429) and the
   same burst spread over many keys (over the service's in-flight bound: 503), each answer
   counted by status, with the wall time and the peak RSS of the Ingress and Scorer
   processes; every request must get an answer, every refusal problem JSON + Retry-After.
4. Slow clients: uploads trickling a byte at a time beside a normal client, which must be
   served meanwhile.

Prints the device, Markdown tables and a JSON summary (also written to ``--out``); exits 1
if any answer differs from the catalogue or any request got a 5xx other than 503.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import functools
import json
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.online_load import device  # noqa: E402


def surfaces(out: Path, keys: list[str]) -> tuple[list[dict], dict]:
    """Part 1: each kind through apa score, the batch job and the service."""
    from apa.batch.settings import BatchSettings
    from apa.scoring.run import run_scoring
    from apa.scoring.settings import ScoringSettings
    from apa.testing.adversarial import answers, kinds, write_corpus
    from ray_jobs.batch_score import run_batch

    catalogue = kinds()
    corpus = write_corpus(out / "corpus", catalogue)
    manifest, expected = corpus.manifest, corpus.expected
    gop = ScoringSettings(model="builtin:gop")
    started = time.perf_counter()
    score_summary = run_scoring(str(manifest), str(out / "score"), gop)
    score_s = time.perf_counter() - started
    started = time.perf_counter()
    batch_summary = run_batch(
        BatchSettings(input=str(manifest), output=str(out / "batch"), scoring=gop)
    )
    batch_s = time.perf_counter() - started
    score, batch = answers(out / "score"), answers(out / "batch")
    http: dict[str, tuple[int, str | None]] = {}
    with httpx.Client(base_url=URL, headers=_auth(keys[0]), timeout=120) as client:
        for kind in catalogue:
            if not kind.http:
                continue
            response = client.post(
                "/v1/assessments",
                files={"audio": (f"{kind.name}.{kind.ext}", kind.audio)},
                data={"text": kind.text, "id": kind.name},
            )
            body = response.json()
            http[kind.name] = (response.status_code, body.get("reason"))
    rows = []
    for kind in catalogue:
        uid = corpus.ids[kind.name]
        row = {
            "kind": kind.name,
            "what": kind.what,
            "expected": kind.reason or "scored",
            "apa score": score.get(uid, "MISSING") or "scored",
            "batch job": batch.get(uid, "MISSING") or "scored",
            "http": "n/a (not bytes)",
        }
        if kind.http:
            status, reason = http[kind.name]
            row["http"] = f"{status} {reason or 'scored'}"
            row["http_ok"] = (status, reason) == (kind.http_status, kind.http_answer)
        row["ok"] = row["apa score"] == row["expected"] == row["batch job"] and row.get(
            "http_ok", True
        )
        rows.append(row)
    counts = {
        "kinds": len(catalogue),
        "rows": len(expected),
        "http_kinds": len(http),
        "apa_score": score_summary.model_dump(include={"inputs", "scored", "errors"}),
        "apa_score_seconds": round(score_s, 1),
        "batch": batch_summary.model_dump(include={"inputs", "scored", "errors"}),
        "batch_seconds": round(batch_s, 1),
        "all_answers_as_catalogued": all(r["ok"] for r in rows),
    }
    return rows, counts


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@functools.cache
def _clip() -> bytes:
    """One valid clip (the catalogue's first), synthesised once."""
    from apa.testing.adversarial import kinds

    return next(k.audio for k in kinds() if k.name == "ok_wav_22k")


def protocol(keys: list[str]) -> list[dict]:
    """Part 2: requests a manifest cannot carry."""
    clip = _clip()
    good = {"text": "we call it bear", "audio_base64": base64.b64encode(clip).decode()}
    nested = b'{"text": "we", "audio_base64": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    k = _auth(keys[0])
    js = {"content-type": "application/json"}
    cases = [
        ("no API key", {}, dict(json=good)),
        ("wrong API key", _auth("not-a-key-000000"), dict(json=good)),
        ("text/plain body", k, dict(content=b"hi", headers={"content-type": "text/plain"})),
        ("no content type", k, dict(content=b"hi", headers={"content-type": ""})),
        ("body over the upload limit", k, dict(content=b"0" * (17 * 2**20), headers=js)),
        ("not JSON", k, dict(content=b"{nope", headers=js)),
        ("JSON nested 5,000 levels", k, dict(content=nested, headers=js)),
        ("16 MiB of [],", k, dict(content=b"[" + b"[]," * (5 * 2**20) + b"[]]", headers=js)),
        ("bad base64", k, dict(json={**good, "audio_base64": "%%%"})),
        ("unknown field", k, dict(json={**good, "extra": 1})),
        ("lone surrogate in text", k, dict(
            content=b'{"text": "\\ud800", "audio_base64": "AAAA"}', headers=js)),
        ("id with spaces", k, dict(json={**good, "id": "a b"})),
        ("phone level without word", k, dict(
            json={**good, "options": {"levels": ["sentence", "phone"]}})),
        ("multipart without audio", k, dict(files={"text": (None, "we call it bear")})),
        ("multipart audio as a field", k, dict(data={"audio": "x", "text": "we"},
                                               files={"id": (None, "x")})),
        ("GET on the POST route", k, dict(method="GET")),
        ("unknown route", k, dict(path="/v1/nothing")),
    ]  # fmt: skip
    rows = []
    with httpx.Client(base_url=URL, timeout=120) as client:
        for name, headers, spec in cases:
            spec = dict(spec)
            method = spec.pop("method", "POST")
            path = spec.pop("path", "/v1/assessments")
            extra_headers = spec.pop("headers", {})
            response = client.request(method, path, headers={**headers, **extra_headers}, **spec)
            problem = response.headers.get("content-type", "").startswith(
                "application/problem+json"
            )
            reason = response.json().get("reason") if problem else None
            rows.append(
                {
                    "request": name,
                    "status": response.status_code,
                    "reason": reason,
                    "problem_json": problem,
                }
            )
    return rows


def _rss_peaks() -> dict[str, int]:
    """Peak RSS (VmHWM, bytes) of the app's Serve replicas, by deployment, found by the
    process titles Ray gives them (``ray::ServeReplica:apa:Ingress``)."""
    peaks: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (proc / "status").read_text()
        except OSError:
            continue
        for deployment in ("Ingress", "Scorer"):
            if f"ServeReplica:apa:{deployment}" in title:
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        kb = int(line.split()[1])
                        peaks[deployment] = max(peaks.get(deployment, 0), kb * 1024)
    return peaks


def burst(keys: list[str], n: int, spread: bool) -> dict:
    """Part 3: ``n`` concurrent requests, all from one key or spread over every key."""
    clip = _clip()

    def one(i: int) -> tuple[int, bool, bool]:
        key = keys[i % len(keys)] if spread else keys[0]
        with httpx.Client(base_url=URL, headers=_auth(key), timeout=300) as client:
            r = client.post(
                "/v1/assessments",
                files={"audio": ("a.wav", clip)},
                data={"text": "we call it bear"},
            )
            problem = r.headers.get("content-type", "").startswith("application/problem+json")
            return r.status_code, problem, "retry-after" in r.headers

    started = time.perf_counter()
    with cf.ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - started
    statuses = Counter(status for status, _, _ in results)
    refusals_ok = all(p and ra for status, p, ra in results if status in (429, 503))
    return {
        "requests": n,
        "from": f"{len(keys)} keys" if spread else "one key",
        "statuses": dict(sorted(statuses.items())),
        "answered": sum(statuses.values()),
        "refusals_problem_json_with_retry_after": refusals_ok,
        "wall_seconds": round(wall, 1),
        "peak_rss_mb": {k: round(v / 2**20) for k, v in _rss_peaks().items()},
    }


def slow_clients(keys: list[str], n: int = 10) -> dict:
    """Part 4: ``n`` uploads trickling one byte every 0.1 s, and a normal request."""
    host, port = URL.split("//")[1].split("/")[0].split(":")
    results: list[int | None] = [None] * n

    def trickle(i: int) -> None:
        body = b'{"text": "we call it bear", "audio_base64": "' + b"A" * 4000 + b'"}'
        head = (
            f"POST /apa/v1/assessments HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {keys[i % len(keys)]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection((host, int(port)), timeout=120) as s:
            s.sendall(head)
            s.settimeout(0.1)
            for byte in body:
                try:
                    s.sendall(bytes([byte]))
                    answer = s.recv(4096)
                    if answer:
                        results[i] = int(answer.split(b" ", 2)[1])
                        return
                except TimeoutError:
                    continue
                except OSError:
                    break
            s.settimeout(60)
            answer = s.recv(4096)
            results[i] = int(answer.split(b" ", 2)[1]) if answer else None

    threads = [threading.Thread(target=trickle, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    started = time.perf_counter()
    with httpx.Client(base_url=URL, headers=_auth(keys[0]), timeout=120) as client:
        normal = client.post(
            "/v1/assessments",
            files={"audio": ("a.wav", _clip())},
            data={"text": "we call it bear"},
        )
    normal_s = time.perf_counter() - started
    for t in threads:
        t.join(timeout=120)
    return {
        "slow_clients": n,
        "slow_statuses": dict(Counter(str(r) for r in results)),
        "normal_status": normal.status_code,
        "normal_seconds": round(normal_s, 2),
    }


URL = ""


def _table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    global URL
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/apa-reliability"))
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--keys", type=int, default=20, help="API keys for the spread burst")
    opts = parser.parse_args()
    import shutil

    shutil.rmtree(opts.out, ignore_errors=True)
    opts.out.mkdir(parents=True)
    print(f"device: {device()}", flush=True)
    import ray

    from serve.local import free_port, start

    keys = [f"reliability-key-{i:03d}-{'x' * 8}" for i in range(opts.keys)]
    keys_file = opts.out / "api-keys"
    keys_file.write_text("\n".join(keys) + "\n")
    # logical CPUs, as the tests do: the Serve replicas and the batch job's tasks fit beside
    # each other on a 2-core machine
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    URL = start(
        {"scoring": {"model": "builtin:tiny-qwen2-audio"}, "api_keys_file": str(keys_file)},
        port=free_port(),
    )
    mb = lambda peaks: {k: round(v / 2**20) for k, v in peaks.items()}  # noqa: E731
    rss = {"after start": mb(_rss_peaks())}
    kinds_rows, counts = surfaces(opts.out, keys)
    rss["after the hostile inputs"] = mb(_rss_peaks())
    print("\n## Hostile inputs on every surface\n")
    print(_table(kinds_rows, ["kind", "expected", "apa score", "batch job", "http", "ok"]))
    print(f"\n{json.dumps(counts)}")
    protocol_rows = protocol(keys)
    rss["after the protocol abuse (16 MiB bodies)"] = mb(_rss_peaks())
    print("\n## Protocol abuse of the service\n")
    print(_table(protocol_rows, ["request", "status", "reason", "problem_json"]))
    bursts = [burst(keys, opts.burst, spread=False), burst(keys, opts.burst, spread=True)]
    print("\n## Overload bursts (defaults: 64 in flight, 16 per client)\n")
    print(_table(bursts, ["requests", "from", "statuses", "answered",
                          "refusals_problem_json_with_retry_after", "wall_seconds",
                          "peak_rss_mb"]))  # fmt: skip
    slow = slow_clients(keys)
    print("\n## Slow clients\n")
    print(json.dumps(slow))
    print("\n## Peak RSS of the replicas (VmHWM, MiB; a process's peak so far)\n")
    for stage, peaks in rss.items():
        print(f"- {stage}: {peaks}")
    summary = {
        "device": device(),
        "surfaces": counts,
        "kinds": kinds_rows,
        "protocol": protocol_rows,
        "bursts": bursts,
        "slow": slow,
        "peak_rss_mb": rss,
    }
    (opts.out / "reliability.json").write_text(json.dumps(summary, indent=2))
    server_errors = [r for r in protocol_rows if r["status"] >= 500] + [
        b for b in bursts if any(int(s) >= 500 and int(s) != 503 for s in b["statuses"])
    ]
    failed = not counts["all_answers_as_catalogued"] or server_errors
    failed = failed or any(b["answered"] != b["requests"] for b in bursts)
    failed = failed or slow["normal_status"] != 200
    print(f"\nresult: {'FAIL' if failed else 'ok'}; details in {opts.out / 'reliability.json'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
