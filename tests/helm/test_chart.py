"""helm/apa: lint, render with default and CI values, validate every rendered object (KubeRay
CRDs strictly, core objects with kubernetes-validate), and check what the chart promises:
the Serve config the app accepts, GPU groups, non-root pods, the API-key Secret, the schema."""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from serve.settings import ServeSettings, args_json_schema
from tests.k8s.validate import validate_documents

REPO = Path(__file__).resolve().parents[2]
HELM = REPO / ".tools" / "helm"
CHART = REPO / "helm" / "apa"
CI_VALUES = CHART / "ci" / "ci-values.yaml"
BATCH_FLAGS = {
    "--input", "--output", "--model", "--adapter", "--batch-size", "--num-gpus",
    "--min-actors", "--max-actors",
}  # fmt: skip


@pytest.fixture(scope="module")
def helm() -> Path:
    if not HELM.exists():
        pytest.fail(f"helm not found at {HELM}: run `make tools` (part of `make install`)")
    return HELM


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=60)


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    done = run_helm(helm, "template", "rel", str(CHART), "--namespace", "apa", *args)
    assert done.returncode == 0, done.stderr
    return validate_documents(done.stdout)


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [o["kind"] for o in objects]
    assert len(kinds) == len(set(kinds)), kinds
    return {o["kind"]: o for o in objects}


def pods(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pod specs of a Ray cluster spec by group (``head`` and each worker group name)."""
    out = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    for group in cluster["workerGroupSpecs"]:
        out[group["groupName"]] = group["template"]["spec"]
    return out


def serve_app(rayservice: dict[str, Any]) -> dict[str, Any]:
    (app,) = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    return app


@pytest.mark.parametrize("values", [[], ["-f", str(CI_VALUES)]], ids=["default", "ci"])
def test_lint_strict(helm, values) -> None:
    done = run_helm(helm, "lint", "--strict", str(CHART), *values)
    assert done.returncode == 0, done.stdout + done.stderr


def test_default_render(helm, tmp_path, monkeypatch) -> None:
    objects = by_kind(render(helm))
    assert set(objects) == {"Secret", "RayService"}
    service = objects["RayService"]
    app = serve_app(service)
    assert app["import_path"] == "serve.app:build_app" and app["route_prefix"] == "/apa"
    # The app accepts the chart's args, with the key file the chart mounts.
    secret = objects["Secret"]
    (key_name,) = secret["data"]
    keys_file = tmp_path / key_name
    keys_file.write_bytes(base64.b64decode(secret["data"][key_name]))
    settings = ServeSettings(**app["args"], api_keys_file=keys_file)
    assert settings.scoring.model == "auto" and settings.scorer_num_gpus == 0
    (generated,) = settings.auth_keys()
    assert len(generated) == 40
    cluster = service["spec"]["rayClusterConfig"]
    assert [g["groupName"] for g in cluster["workerGroupSpecs"]] == ["workers"]  # gpu: disabled
    for name, pod in pods(cluster).items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        (container,) = pod["containers"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["APA_SERVE_API_KEYS_FILE"] == f"/etc/apa/api-keys/{key_name}"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["api-keys"] == "/etc/apa/api-keys"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["api-keys"]["secret"]["secretName"] == secret["metadata"]["name"]
        assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_ci_render_gpu_groups_keys_and_batch_job(helm, tmp_path) -> None:
    objects = by_kind(render(helm, "-f", str(CI_VALUES)))
    assert set(objects) == {"Secret", "RayService", "RayJob"}
    service, job = objects["RayService"], objects["RayJob"]
    app = serve_app(service)
    assert app["args"]["scorer_num_gpus"] == 1 and app["args"]["scoring"]["mode"] == "one-pass"
    keys = base64.b64decode(objects["Secret"]["data"]["api-keys"]).decode().split()
    assert keys == ["ci-key-0123456789abcdef", "ci-key-fedcba9876543210"]
    for cluster in (service["spec"]["rayClusterConfig"], job["spec"]["rayClusterSpec"]):
        assert cluster["enableInTreeAutoscaling"] is True
        groups = pods(cluster)
        assert set(groups) == {"head", "gpu", "ingress"}  # gpu-spare is disabled
        gpu = groups["gpu"]
        assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert gpu["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert "nvidia.com/gpu" not in groups["ingress"]["containers"][0]["resources"]["limits"]
        for pod in groups.values():
            container = pod["containers"][0]
            assert container["image"] == "registry.example.internal/apa:ci"
            assert {"name": "AWS_ENDPOINT_URL", "value": "http://minio.storage.svc:9000"} in (
                container["env"]
            )
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "ray_jobs.batch_score"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert set(flags) <= BATCH_FLAGS
    assert flags["--input"] == "s3://data/speechocean762/test" and flags["--num-gpus"] == "1"
    assert flags["--adapter"] == "s3://adapters/run7"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    keys_file = tmp_path / "keys"
    keys_file.write_text("\n".join(keys))
    settings = ServeSettings(**app["args"], api_keys_file=keys_file)
    assert settings.audio.max_duration_s == 20 and settings.scoring.batch_size == 16


def test_existing_secret_and_disabled_auth(helm) -> None:
    objects = by_kind(render(helm, "--set", "apiKeys.existingSecret=my-keys"))
    assert set(objects) == {"RayService"}
    cluster = objects["RayService"]["spec"]["rayClusterConfig"]
    for pod in pods(cluster).values():
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["api-keys"]["secret"]["secretName"] == "my-keys"

    objects = by_kind(render(helm, "--set", "apiKeys.auth=disabled"))
    assert set(objects) == {"RayService"}
    for pod in pods(objects["RayService"]["spec"]["rayClusterConfig"]).values():
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["APA_SERVE_AUTH"] == "disabled" and "APA_SERVE_API_KEYS_FILE" not in env
        assert "api-keys" not in {v["name"] for v in pod["volumes"]}


def test_schema_of_serve_args_is_the_settings_schema() -> None:
    """values.schema.json's serve.args is ServeSettings' own schema (less the key fields):
    a setting added to the app without updating the chart fails here."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    args, defs = args_json_schema()
    assert schema["properties"]["serve"]["properties"]["args"] == args, (
        "regenerate serve.args in helm/apa/values.schema.json from "
        "serve.settings.args_json_schema()"
    )
    for name, definition in defs.items():
        assert schema["$defs"][name] == definition, name


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("worker.replicas=two", "/worker/replicas"),
        ("serve.args.scoring.batch_sizee=4", "batch_sizee"),
        ("serve.args.scoring.mode=fast", "/serve/args/scoring/mode"),
        ("serve.args.scorer_num_gpus=-1", "/serve/args/scorer_num_gpus"),
        ("serve.args.api_keys=abc", "api_keys"),
        ("apiKeys.auth=maybe", "/apiKeys/auth"),
        ("apiKeys.keys[0]=short", "/apiKeys/keys/0"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("additionalWorkerGroups.Bad_Name.replicas=1", "Bad_Name"),
        ("head.unknown=1", "unknown"),
    ],
)
def test_schema_rejects_bad_values(helm, flag, message) -> None:
    done = run_helm(helm, "template", "rel", str(CHART), "--set", flag)
    assert done.returncode != 0
    assert "schema" in done.stderr and message in done.stderr, done.stderr


def test_batch_job_needs_input_and_output(helm) -> None:
    done = run_helm(helm, "template", "rel", str(CHART), "--set", "batchJob.enabled=true")
    assert done.returncode != 0
    assert "batchJob.enabled needs batchJob.input and batchJob.output" in done.stderr
