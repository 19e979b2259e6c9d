"""k8s/rayjob-batch-score.yaml: the chart's batch RayJob rendered with
k8s/values-batch-score.yaml (never edited by hand), valid against the KubeRay CRDs, and it
runs the batch job the way the repository defines it (an entrypoint the job parses into its
settings, GPUs where the actors are, credentials from a Secret in every pod)."""

from __future__ import annotations

from tests.helm.jobs import batch_settings
from tests.k8s.test_manifests import rayjob


def _rayjob() -> dict:
    return rayjob("rayjob-batch-score.yaml")


def test_entrypoint_is_the_batch_job_with_settings_it_accepts():
    settings = batch_settings(_rayjob())
    assert settings.input.startswith("s3://") and settings.output.startswith("s3://")
    assert settings.num_gpus == 1 and settings.scoring.batch_size == 16
    # credentials reach every pod from the Secret: the job forwards no environment
    assert settings.forward_env is False


def test_gpu_workers_and_s3_credentials_from_a_secret():
    cluster = _rayjob()["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
    for pod in pods:
        for container in pod["spec"]["containers"]:
            refs = [e["secretRef"]["name"] for e in container.get("envFrom", [])]
            assert refs == ["apa-s3"]
    settings = batch_settings(_rayjob())
    for group in cluster["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert group["maxReplicas"] == settings.max_actors  # one scorer actor per GPU
