"""The batch job as a cluster runs it: ``ray start --head`` and ``ray job submit``.

The head runs in the foreground (``--block``) as this test's own child process, with every
port chosen free (a second Ray on the machine holds the defaults: with the dashboard agent's
port taken, jobs are refused with "No available agent"). Stopping it stops exactly the
processes under it. ``ray stop`` is not used: it stops every Ray on the machine, other test
sessions' included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration

RAY = Path(sys.executable).with_name("ray")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_for(port: int, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"the Ray dashboard did not come up on port {port}")


def test_ray_job_submit_runs_the_batch_job(demo_manifest, tmp_path):
    gcs, dash, client, agent, metrics, env_agent, agent_grpc, node, objm = _free_ports(9)
    temp_dir = tempfile.mkdtemp(prefix="rayjs", dir="/tmp")  # short: socket paths
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "APA_LOG_FORMAT": "json"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", "--temp-dir", temp_dir,
         "--node-ip-address", "127.0.0.1", "--port", str(gcs), "--dashboard-host", "127.0.0.1",
         "--dashboard-port", str(dash), "--ray-client-server-port", str(client),
         "--dashboard-agent-listen-port", str(agent), "--metrics-export-port", str(metrics),
         "--runtime-env-agent-port", str(env_agent),
         "--dashboard-agent-grpc-port", str(agent_grpc), "--node-manager-port", str(node),
         "--object-manager-port", str(objm), "--num-cpus", "2", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    out = tmp_path / "scores"
    try:
        _wait_for(dash, head, 60)
        done = subprocess.run(
            [str(RAY), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--",
             sys.executable, "-m", "ray_jobs.batch_score", "--input", str(demo_manifest),
             "--output", str(out), "--model", "builtin:gop"],
            env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "succeeded" in done.stdout
        summary = json.loads((out / "summary.json").read_text())
        assert (summary["inputs"], summary["scored"], summary["errors"]) == (8, 4, 4)
        assert '"event": "job_summary"' in done.stdout  # the job's JSON logs reach the client
    finally:
        _stop(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop(head: subprocess.Popen) -> None:
    """Stop the head and every process under it (GCS, raylet, dashboard, workers, the job's
    driver): all started by this test. SIGTERM to the whole tree at once, SIGKILL to what is
    left after 10 s (``ray start --block`` alone takes ~30 s to wind its children down)."""
    try:
        procs = [psutil.Process(head.pid), *psutil.Process(head.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=10)
    head.wait(timeout=10)
