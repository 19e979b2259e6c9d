"""k8s/rayjob-batch-score.yaml: valid against the KubeRay CRDs, and it runs the batch job
the way the repository defines it (entrypoint flags the job accepts, GPUs where the actors
are, credentials from the Secret)."""

from __future__ import annotations

import functools
import shlex
from pathlib import Path

import yaml

from apa.batch.settings import BatchSettings
from tests.k8s.validate import validate_documents

MANIFEST = Path(__file__).resolve().parents[2] / "k8s" / "rayjob-batch-score.yaml"


@functools.cache
def _objects() -> dict[str, dict]:
    return {o["kind"]: o for o in validate_documents(MANIFEST.read_text())}


def test_rayjob_and_secret_validate():
    objects = _objects()
    assert set(objects) == {"RayJob", "Secret"}
    spec = objects["RayJob"]["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["backoffLimit"] >= 1


def test_entrypoint_is_the_batch_job_with_flags_it_accepts():
    from typer.testing import CliRunner

    from ray_jobs.batch_score import app

    args = shlex.split(_objects()["RayJob"]["spec"]["entrypoint"])
    assert args[:3] == ["python", "-m", "ray_jobs.batch_score"]
    flags = {a for a in args[3:] if a.startswith("--")}
    help_text = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    assert flags and all(f in help_text for f in flags), flags
    assert "--num-gpus" in flags


def test_gpu_workers_and_s3_credentials_from_the_secret():
    objects = _objects()
    secret = objects["Secret"]["metadata"]["name"]
    cluster = objects["RayJob"]["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
    for pod in pods:
        for container in pod["spec"]["containers"]:
            refs = [e["secretRef"]["name"] for e in container.get("envFrom", [])]
            assert secret in refs
    gpus = [
        c["resources"]["limits"].get("nvidia.com/gpu")
        for g in cluster["workerGroupSpecs"]
        for c in g["template"]["spec"]["containers"]
    ]
    assert gpus and all(int(g) >= 1 for g in gpus)
    assert set(objects["Secret"]["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_runtime_env_variables_are_batch_settings():
    env = yaml.safe_load(_objects()["RayJob"]["spec"]["runtimeEnvYAML"])["env_vars"]
    prefix = BatchSettings.model_config["env_prefix"]
    fields = {f"{prefix}{name}".upper() for name in BatchSettings.model_fields}
    assert {k for k in env if k.startswith(prefix)} <= fields
