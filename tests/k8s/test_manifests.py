"""What every manifest under k8s/ must be: the chart's render of its values file (never
edited by hand; ``make generate``), one RayJob valid against the KubeRay CRDs that cleans up
after itself. The job-specific checks are in ``test_rayjob_*.py``."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tests.helm.generator import generate
from tests.k8s.validate import validate_documents

K8S = Path(__file__).resolve().parents[2] / "k8s"
JOBS = {"rayjob-batch-score.yaml": "apa-batch-score", "rayjob-finetune.yaml": "apa-finetune"}


@functools.cache
def rayjob(name: str) -> dict:
    """The RayJob in ``k8s/<name>``, validated."""
    (job,) = validate_documents((K8S / name).read_text())
    return job


def test_every_manifest_is_covered() -> None:
    assert sorted(p.name for p in K8S.glob("rayjob-*.yaml")) == sorted(JOBS)


@pytest.mark.parametrize("name", sorted(JOBS))
def test_manifest_is_the_chart_rendered(name: str) -> None:
    manifest = K8S / name
    values, template = generate.MANIFESTS[manifest]
    assert manifest.read_text() == generate.manifest_text(values, template), (
        f"k8s/{name} differs from the chart's render: run .venv/bin/python helm/generate.py"
    )


@pytest.mark.parametrize("name", sorted(JOBS))
def test_rayjob_validates_and_cleans_up(name: str) -> None:
    job = rayjob(name)
    assert job["kind"] == "RayJob" and job["metadata"]["name"] == JOBS[name]
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["backoffLimit"] >= 1
