"""A model the Scorer cannot load, or loads and cannot score with (its self-check): the
deployment fails with the loader's reason, and the Ingress answers every route with it (503
``server.model_load_failed``), not with a wait."""

from __future__ import annotations

import base64

import httpx
import pytest

from apa.models.errors import ModelLoadError

from .conftest import KEYS


def _json_body(sample) -> dict:
    return {"text": sample.text, "audio_base64": base64.b64encode(sample.audio).decode()}


@pytest.fixture(
    scope="module",
    params=[
        ("builtin:no-such-model", "model.unknown_builtin", "builtin:no-such-model"),
        ("model_that_cannot_run", "model.cannot_run", "but got 80 channels"),
    ],
    ids=["unknown model", "model that cannot score"],
)
def broken(service, request: pytest.FixtureRequest):
    """A second application beside ``service``'s, on its proxy under ``/broken``, whose
    Scorer is given a model that does not exist or that loads and cannot score; deleted
    afterwards. Yields its URL, the error its deployment raised and what that error must
    be: its reason and a part of its message."""
    from ray import serve

    from serve.local import start

    model, reason, says = request.param
    if model == "model_that_cannot_run":
        model = str(request.getfixturevalue(model))
    port = httpx.URL(service.url).port
    args = {
        "scoring": {"model": model},
        "auth": "disabled",
        "ingress_num_cpus": 0.1,
        "scorer_num_cpus": 0.1,
    }
    try:
        with pytest.raises(ModelLoadError) as failed:
            start(args, port=port, name="broken", route_prefix="/broken")
        yield f"http://127.0.0.1:{port}/broken", failed.value, (reason, says)
    finally:
        serve.delete("broken")


def test_deploying_a_model_that_cannot_be_loaded_raises_the_loaders_reason(broken) -> None:
    _, error, (reason, says) = broken
    assert error.reason == reason
    assert says in error.message


@pytest.mark.parametrize(
    ("method", "route"),
    [("GET", "/-/healthz"), ("GET", "/v1/models"), ("POST", "/v1/assessments")],
)
def test_every_route_answers_that_the_model_cannot_be_loaded(
    broken, samples, method, route
) -> None:
    url, _, (reason, says) = broken
    request = {"json": _json_body(samples[0])} if method == "POST" else {}
    answer = httpx.request(method, url + route, timeout=60, **request)
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["reason"] == "server.model_load_failed"
    assert body["model_reason"] == reason
    assert says in body["detail"]
    assert "retry-after" not in answer.headers


def test_the_healthy_application_beside_it_still_scores(service, samples, broken) -> None:
    with service.client(KEYS[0]) as client:
        answer = client.post("/v1/assessments", json=_json_body(samples[0]))
    assert answer.status_code == 200, answer.text
    assert answer.json()["utterance_id"]
