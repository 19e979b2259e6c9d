"""Run by ``test_faults.py`` in its own process: a two-node Ray cluster on this machine,
the batch job on it, the worker node removed once a part set is committed, then a rerun
into the same output if the first run did not finish.

Usage: ``python two_node_kill.py MANIFEST OUTPUT REPORT_JSON``; the report gives the first
run's outcome and the final summary's counts.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from apa.batch.commits import read_commits
from apa.batch.settings import BatchSettings
from apa.scoring.settings import ScoringSettings
from ray_jobs.batch_score import run_batch


def main(manifest: str, out: str, report: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    worker = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    settings = BatchSettings(
        input=manifest,
        output=out,
        scoring=ScoringSettings(model="builtin:gop"),
        rows_per_part=1,
        rows_per_read_block=1,
        progress_interval_s=1.0,
    )
    outcome: dict = {}

    def first_run() -> None:
        try:
            outcome["summary"] = run_batch(settings).model_dump()
        except Exception as e:  # the node took a task Ray could not retry
            outcome["error"] = repr(e)

    thread = threading.Thread(target=first_run)
    thread.start()
    deadline = time.monotonic() + 120
    while not read_commits(out) and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    commits_at_removal = len(read_commits(out))
    cluster.remove_node(worker)
    thread.join(timeout=180)
    if thread.is_alive():
        raise SystemExit("the first run hung after the node was removed")
    final = outcome.get("summary")
    if final is None or final["inputs"] != 8:
        final = run_batch(settings).model_dump()
    Path(report).write_text(
        json.dumps(
            {
                "node_removed_after_commits": commits_at_removal,
                "first_run": "error" if "error" in outcome else "finished",
                "first_run_error": outcome.get("error"),
                "final_inputs": final["inputs"],
            }
        )
    )
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
