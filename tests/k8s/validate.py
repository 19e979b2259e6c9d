"""Offline validation of Kubernetes objects for the manifest and chart tests.

KubeRay objects (``ray.io/v1`` RayJob, RayService, RayCluster) are checked against the
``openAPIV3Schema`` of the KubeRay v1.7.0 CRDs in ``../shared/kuberay-crds``, plus a strict
unknown-field walk (the API server would silently prune a misspelt field such as
``shutdownAfterJobFinish``; we want it to fail here). Core objects go through
``kubernetes-validate`` in strict mode.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parents[2].parent / "shared" / "kuberay-crds"
KUBERNETES_VERSION = "1.33"


class InvalidObject(AssertionError):
    pass


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The v1 ``openAPIV3Schema`` of a KubeRay kind."""
    for path in sorted(CRDS.glob("ray.io_*.yaml")):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        if crd["spec"]["names"]["kind"] == kind:
            (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
            return version["schema"]["openAPIV3Schema"]
    raise KeyError(f"no KubeRay CRD for kind {kind!r} in {CRDS}")


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """Paths of fields that ``schema`` does not declare (where it declares its fields)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                yield from unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                yield from unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None and extra is not True:
                yield f"{path}.{key}"
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, value in enumerate(obj):
            yield from unknown_fields(value, schema["items"], f"{path}[{i}]")


def validate_object(obj: dict[str, Any]) -> None:
    """Raise :class:`InvalidObject` naming every problem with one Kubernetes object."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    name = f"{kind}/{obj.get('metadata', {}).get('name', '?')}"
    if api_version.startswith("ray.io/"):
        if api_version != "ray.io/v1":
            raise InvalidObject(f"{name}: apiVersion {api_version}, the CRDs serve ray.io/v1")
        schema = crd_schema(kind)
        problems = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in jsonschema.Draft7Validator(schema).iter_errors(obj)
        ]
        problems += [f"{p}: unknown field" for p in unknown_fields(obj, schema)]
        if problems:
            raise InvalidObject(f"{name}:\n  " + "\n  ".join(problems))
        return
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        raise InvalidObject(f"{name}: {e.message} at {'/'.join(map(str, e.path))}") from e


def validate_documents(text: str) -> list[dict[str, Any]]:
    """Validate every object of a multi-document YAML stream; returns the objects."""
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    if not objects:
        raise InvalidObject("no objects in the YAML stream")
    for obj in objects:
        validate_object(obj)
    return objects
