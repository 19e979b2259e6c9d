"""helm/apa: lint, render with default and CI values, validate every rendered object (KubeRay
CRDs strictly, core objects with kubernetes-validate), and check what the chart promises:
the Serve config the app accepts, job entrypoints the jobs parse into their settings, GPU
groups, non-root pods, the API-key Secret, the schema, and the files generated from the code
and the values (helm/generate.py: schema parts, `# --` comments, README.md)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from serve.settings import ServeSettings, args_json_schema
from tests.helm.generator import generate
from tests.helm.jobs import batch_settings, finetune_settings
from tests.k8s.validate import validate_documents

REPO = Path(__file__).resolve().parents[2]
HELM = REPO / ".tools" / "helm"
CHART = REPO / "helm" / "apa"
CI_VALUES = CHART / "ci" / "ci-values.yaml"


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
    settings = batch_settings(job)
    assert settings.input == "s3://data/speechocean762/test" and settings.num_gpus == 1
    assert settings.scoring.adapter == "s3://adapters/run7" and settings.scoring.batch_size == 16
    assert settings.max_actors == 4 and settings.forward_env is False
    for pod in pods(job["spec"]["rayClusterSpec"]).values():  # only the service has the keys
        assert "api-keys" not in {v["name"] for v in pod["volumes"]}
        assert not {"APA_SERVE_API_KEYS_FILE", "APA_SERVE_AUTH"} & {
            e["name"] for e in pod["containers"][0]["env"]
        }
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


def test_every_ray_container_sets_its_allocators(helm) -> None:
    """``common.mallocArenaMax`` and ``common.mimallocPurgeDelayMs`` reach every Ray
    container (ray_jobs/allocators.py says why); 0 and null leave the allocators' defaults."""

    def env_of_every_container(*flags: str) -> list[dict[str, str | None]]:
        objects = by_kind(render(helm, "-f", str(CI_VALUES), *flags))
        clusters = (
            objects["RayService"]["spec"]["rayClusterConfig"],
            objects["RayJob"]["spec"]["rayClusterSpec"],
        )
        return [
            {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
            for cluster in clusters
            for pod in pods(cluster).values()
        ]

    envs = env_of_every_container()
    assert len(envs) == 6 and all(env["MALLOC_ARENA_MAX"] == "2" for env in envs), envs
    envs = env_of_every_container("--set", "common.mallocArenaMax=4")
    assert all(env["MALLOC_ARENA_MAX"] == "4" for env in envs), envs
    envs = env_of_every_container("--set", "common.mallocArenaMax=0")
    assert not any("MALLOC_ARENA_MAX" in env for env in envs), envs
    assert all(env["MIMALLOC_PURGE_DELAY"] == "0" for env in envs), envs
    envs = env_of_every_container("--set", "common.mimallocPurgeDelayMs=250")
    assert all(env["MIMALLOC_PURGE_DELAY"] == "250" for env in envs), envs
    envs = env_of_every_container("--set", "common.mimallocPurgeDelayMs=null")
    assert not any("MIMALLOC_PURGE_DELAY" in env for env in envs), envs


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
        ("common.mallocArenaMax=-1", "/common/mallocArenaMax"),
        ("common.mimallocPurgeDelayMs=-1", "/common/mimallocPurgeDelayMs"),
        ("batchJob.args.batch_size=4", "batch_size"),  # a scoring field: under args.scoring
        ("batchJob.args.scoring.batch_sizee=4", "batch_sizee"),
        ("batchJob.args.max_actors=0", "/batchJob/args/max_actors"),
        ("batchJob.args.address=ray://x", "address"),
        ("batchJob.workerGroups.Bad_Name.replicas=1", "Bad_Name"),
        ("finetuneJob.args.workers=0", "/finetuneJob/args/workers"),
        ("finetuneJob.args.epochs=3", "epochs"),  # a TrainConfig field: in trainConfig
        ("finetuneJob.trainConfig.rnak=16", "rnak"),
        ("finetuneJob.trainConfig.schedule=steep", "/finetuneJob/trainConfig/schedule"),
    ],
)
def test_schema_rejects_bad_values(helm, flag, message) -> None:
    done = run_helm(helm, "template", "rel", str(CHART), "--set", flag)
    assert done.returncode != 0
    assert "schema" in done.stderr and message in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("batchJob", "batchJob.enabled needs batchJob.args.input and batchJob.args.output"),
        ("finetuneJob", "finetuneJob.enabled needs finetuneJob.args.train and "
         "finetuneJob.args.storage"),
    ],
)  # fmt: skip
def test_jobs_need_their_data(helm, job, message) -> None:
    done = run_helm(helm, "template", "rel", str(CHART), "--set", f"{job}.enabled=true")
    assert done.returncode != 0
    assert message in done.stderr


def test_job_flags_from_args_and_their_own_worker_groups(helm, tmp_path) -> None:
    """Every kind of value becomes what the job parses: numbers (from a values file: floats
    to Helm) without an exponent, true/false as --x/--no-x, null and "" left out, a nested map
    flattened; words a shell would split are quoted."""
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "batchJob": {
                    "enabled": True,
                    "args": {
                        "input": "s3://in/it's here.jsonl",
                        "output": "s3://out",
                        "object_store_mib": 16777216,
                        "cpus_per_task": 0.5,
                        "limit": None,
                        "forward_env": True,
                        "scoring": {"adapter": "", "timings": True},
                    },
                    "workerGroups": {
                        "scorers": {"replicas": 2, "minReplicas": 2, "maxReplicas": 2,
                                    "resources": {"limits": {"cpu": "3"}}},
                    },
                }
            }
        )
    )  # fmt: skip
    objects = render(helm, "-f", str(values))
    job = by_kind(objects)["RayJob"]
    settings = batch_settings(job)
    assert settings.input == "s3://in/it's here.jsonl" and settings.object_store_mib == 2**24
    assert settings.cpus_per_task == 0.5 and settings.limit is None and settings.forward_env
    assert settings.scoring.adapter is None and settings.scoring.timings is True
    assert "--no-forward-env" not in job["spec"]["entrypoint"]
    cluster = job["spec"]["rayClusterSpec"]
    assert [g["groupName"] for g in cluster["workerGroupSpecs"]] == ["scorers"]
    # the RayService keeps the chart's groups
    service = by_kind(objects)["RayService"]["spec"]["rayClusterConfig"]
    assert [g["groupName"] for g in service["workerGroupSpecs"]] == ["workers"]


def test_finetune_job_train_config_as_sets(helm) -> None:
    train_config = {
        "rank": 16,
        "learning_rate": 0.0002,
        "bf16": False,
        "schedule": "linear",
        "target_modules": ["q_proj", "v_proj"],
        "loss_weights": {"sentence": 1.0, "word": 0.5, "phone": 0.5, "pronounced": 0.25},
    }
    objects = by_kind(
        render(
            helm,
            "--set",
            "finetuneJob.enabled=true,finetuneJob.args.gpu=true,"
            "finetuneJob.args.train=s3://data/train,finetuneJob.args.storage=s3://ft",
            "--set-json",
            f"finetuneJob.trainConfig={json.dumps(train_config)}",
        )
    )
    config, options = finetune_settings(objects["RayJob"])
    assert config.model_dump(include=set(train_config)) == train_config
    assert config.train == "s3://data/train" and config.out == "/tmp/apa-finetune"
    assert options == {"workers": 2, "gpu": True, "storage_path": "s3://ft", "name": "apa-finetune"}


# --- generated from the code and the values (helm/generate.py) ---------------------------


@pytest.fixture(scope="module")
def generated(helm) -> dict[Path, str]:
    return generate.outputs()


@pytest.mark.parametrize(
    "path", [generate.SCHEMA, generate.VALUES, generate.README], ids=lambda p: p.name
)
def test_generated_file_is_up_to_date(generated, path) -> None:
    assert path.read_text() == generated[path], (
        f"{path.relative_to(REPO)} is out of date: run .venv/bin/python helm/generate.py"
    )


def test_every_values_key_has_a_doc_comment() -> None:
    assert generate.undocumented(generate.VALUES.read_text()) == []


def test_a_key_without_a_doc_comment_is_found() -> None:
    text = """\
# -- documented as a whole: its children need no comment
resources:
  limits:
    cpu: "1"
# -- a map whose children are listed
group:
  # -- documented
  replicas: 1
  tolerations: []
# free text is no doc comment
image: apa
"""
    assert generate.undocumented(text) == ["group.tolerations", "image"]
    rows = {".".join(k.path): k.description for k in generate.rows(generate.parse_values(text))}
    assert rows["resources"] == "documented as a whole: its children need no comment"
    assert "resources.limits" not in rows and rows["group.replicas"] == "documented"


def test_serve_args_comments_are_the_settings_descriptions() -> None:
    """The `# --` comment of each serve.args key is the ServeSettings field's description
    (hand-written only where the field has none)."""
    keys = {k.path: k for k in generate.rows(generate.parse_values(generate.VALUES.read_text()))}
    args = [path for path in keys if path[:2] == ("serve", "args") and len(path) > 2]
    assert len(args) > 10
    for path in args:
        description = generate._model_description(ServeSettings, path[2:])
        if description:
            assert keys[path].description == " ".join(description.split()), path


def test_readme_lists_every_key_with_type_default_and_description() -> None:
    readme = generate.README.read_text()
    assert "| Key | Type | Default | Description |" in readme
    for key in ("serve.args.scoring.batch_size", "batchJob.args.scoring.model",
                "finetuneJob.trainConfig", "worker.resources", "apiKeys.auth"):  # fmt: skip
        assert f"| `{key}` |" in readme, key
