"""Run the service on this machine: local Ray, Serve's HTTP proxy on loopback, the app under
``/apa``. For development, the tests and ``benchmarks/online_load.py``.

    .venv/bin/python -m serve.local --port 8000 --model builtin:tiny-qwen2-audio
    .venv/bin/python -m serve.local --config args.json     # ServeSettings fields as JSON

API keys come from ``APA_SERVE_API_KEYS`` / ``APA_SERVE_API_KEYS_FILE`` as in a cluster
(``APA_SERVE_AUTH=disabled`` to go without). Blocks until interrupted.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from apa.models.errors import ModelLoadError

ROUTE_PREFIX = "/apa"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout_s: float = 300) -> None:
    """Poll ``{url}/-/healthz`` until it answers 200 (a model replica is up); raise
    ``TimeoutError`` with the last answer after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{url}/-/healthz", timeout=10)
            if last.status_code == 200:
                return
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.5)
    raise TimeoutError(f"{url}/-/healthz did not answer 200 in {timeout_s:g} s: {last!r}")


def start(
    args: dict[str, Any], *, port: int, name: str = "apa", route_prefix: str = ROUTE_PREFIX
) -> str:
    """Deploy the app with these ``args`` on the running (or a new) local Serve instance with
    its proxy on ``127.0.0.1:port``; returns the app's base URL once it is healthy. Raises
    :class:`~apa.models.errors.ModelLoadError` when the Scorer cannot load its model (Serve
    gives up after a few tries of a replica)."""
    from ray import serve

    from serve.app import build_app, model_load_failure

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(args), name=name, route_prefix=route_prefix, blocking=False)
    except RuntimeError:  # the application failed to deploy; its deployments say why
        if (error := model_load_failure(name)) is not None:
            raise error from None
        raise
    url = f"http://127.0.0.1:{port}{route_prefix}"
    wait_healthy(url)
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the apa online scoring service locally.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", help="scoring.model (default: APA_MODEL or auto)")
    parser.add_argument("--config", type=Path, help="JSON file of ServeSettings fields")
    opts = parser.parse_args()
    args: dict[str, Any] = json.loads(opts.config.read_text()) if opts.config else {}
    if opts.model:
        args.setdefault("scoring", {})["model"] = opts.model
    import ray

    ray.init(address="local", include_dashboard=False)
    try:
        url = start(args, port=opts.port)
    except ModelLoadError as e:
        print(f"error: cannot load the model ({e.reason}): {e.message}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"serving at {url}  (POST {url}/v1/assessments, docs {url}/docs); Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
