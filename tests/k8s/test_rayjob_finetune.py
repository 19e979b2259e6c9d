"""k8s/rayjob-finetune.yaml: valid against the KubeRay CRDs, and it runs the Ray Train job
with flags and settings the job accepts, one GPU worker per training worker."""

from __future__ import annotations

import functools
import shlex
from pathlib import Path

from apa.finetune.config import load_train_config
from tests.k8s.validate import validate_documents

MANIFEST = Path(__file__).resolve().parents[2] / "k8s" / "rayjob-finetune.yaml"


@functools.cache
def _rayjob() -> dict:
    (rayjob,) = validate_documents(MANIFEST.read_text())
    return rayjob


def _args() -> list[str]:
    return shlex.split(_rayjob()["spec"]["entrypoint"])


def test_rayjob_validates_and_cleans_up():
    job = _rayjob()
    assert job["kind"] == "RayJob"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["backoffLimit"] >= 1


def test_entrypoint_flags_and_settings_are_the_jobs():
    from typer.testing import CliRunner

    from ray_jobs.finetune import app

    args = _args()
    assert args[:3] == ["python", "-m", "ray_jobs.finetune"]
    flags = {a for a in args[3:] if a.startswith("--")}
    help_text = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    assert flags and all(f in help_text for f in flags), flags
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    value = {a: args[i + 1] for i, a in enumerate(args) if a in ("--train", "--out", "--valid")}
    config = load_train_config(None, {"train": value["--train"], "out": value["--out"]}, sets)
    assert config.rank == 16 and config.bf16


def test_one_gpu_per_training_worker():
    args = _args()
    workers = int(args[args.index("--workers") + 1])
    assert "--gpu" in args
    groups = _rayjob()["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = sum(
        g["replicas"] * int(c["resources"]["limits"]["nvidia.com/gpu"])
        for g in groups
        for c in g["template"]["spec"]["containers"]
    )
    assert gpus == workers
