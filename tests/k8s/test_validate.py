"""The validator itself: it accepts a minimal valid object and names what is wrong in a bad one."""

from __future__ import annotations

import pytest

from tests.k8s.validate import InvalidObject, validate_documents, validate_object

RAYJOB = {
    "apiVersion": "ray.io/v1",
    "kind": "RayJob",
    "metadata": {"name": "x"},
    "spec": {
        "entrypoint": "python -m ray_jobs.batch_score",
        "shutdownAfterJobFinishes": True,
        "rayClusterSpec": {
            "headGroupSpec": {
                "rayStartParams": {},
                "template": {"spec": {"containers": [{"name": "head", "image": "apa:1"}]}},
            }
        },
    },
}


def test_accepts_a_minimal_rayjob_and_secret():
    validate_object(RAYJOB)
    validate_object(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k"}, "stringData": {"a": "b"}}
    )


def test_names_a_misspelt_kuberay_field():
    bad = {**RAYJOB, "spec": {**RAYJOB["spec"], "shutdownAfterJobFinish": True}}
    with pytest.raises(InvalidObject, match=r"spec\.shutdownAfterJobFinish: unknown field"):
        validate_object(bad)


def test_names_a_wrong_type_deep_in_the_pod_template():
    spec = RAYJOB["spec"]["rayClusterSpec"]["headGroupSpec"]
    bad_head = {**spec, "template": {"spec": {"containers": [{"name": "h", "image": 3}]}}}
    bad = {**RAYJOB, "spec": {**RAYJOB["spec"], "rayClusterSpec": {"headGroupSpec": bad_head}}}
    with pytest.raises(InvalidObject, match="image"):
        validate_object(bad)


def test_core_objects_are_validated_strictly():
    with pytest.raises(InvalidObject, match="stringDat"):
        validate_object(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "k"},
                "stringDat": {"a": "b"},
            }
        )


def test_an_empty_stream_is_an_error():
    with pytest.raises(InvalidObject, match="no objects"):
        validate_documents("---\n")
