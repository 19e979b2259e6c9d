"""k8s/rayjob-finetune.yaml: the chart's fine-tuning RayJob rendered with
k8s/values-finetune.yaml (never edited by hand), valid against the KubeRay CRDs, and it runs
the Ray Train job with options and settings the job accepts, one GPU per training worker."""

from __future__ import annotations

from tests.helm.jobs import finetune_settings
from tests.k8s.test_manifests import rayjob


def _rayjob() -> dict:
    return rayjob("rayjob-finetune.yaml")


def test_entrypoint_options_and_settings_are_the_jobs():
    config, options = finetune_settings(_rayjob())
    assert config.rank == 16 and config.bf16 and config.learning_rate == 0.0002
    assert options["storage_path"].startswith("s3://")  # checkpoints outlive the cluster


def test_one_gpu_per_training_worker_and_room_for_nccl():
    config, options = finetune_settings(_rayjob())
    assert options["gpu"] is True
    groups = _rayjob()["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = sum(
        g["replicas"] * int(c["resources"]["limits"]["nvidia.com/gpu"])
        for g in groups
        for c in g["template"]["spec"]["containers"]
    )
    assert gpus == options["workers"]
    for group in groups:
        pod = group["template"]["spec"]
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert "/dev/shm" in mounts
        assert any(config.out.startswith(m + "/") for m in mounts)  # the run dir is a volume
