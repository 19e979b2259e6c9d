"""The service over the catalogue of hostile inputs (:mod:`apa.testing.adversarial`): each
kind made of bytes, sent as multipart and as JSON, gets its documented status and reason
(the same reason as a row of ``apa score`` or the batch job, or its documented HTTP one)."""

from __future__ import annotations

import base64

import pytest

from apa.testing.adversarial import kinds

pytestmark = pytest.mark.integration

HTTP_KINDS = [k for k in kinds() if k.http]


def test_the_catalogue_has_http_kinds_of_every_answer() -> None:
    assert len(HTTP_KINDS) >= 25
    assert {k.http_status for k in HTTP_KINDS} == {200, 422}


@pytest.mark.parametrize("form", ["multipart", "json"])
def test_every_http_kind_gets_its_answer(service, form: str) -> None:
    wrong = []
    with service.client() as client:
        for kind in HTTP_KINDS:
            if form == "multipart":
                response = client.post(
                    "/v1/assessments",
                    files={"audio": (f"{kind.name}.{kind.ext}", kind.audio)},
                    data={"text": kind.text, "id": kind.name},
                )
            else:
                response = client.post(
                    "/v1/assessments",
                    json={
                        "text": kind.text,
                        "audio_base64": base64.b64encode(kind.audio).decode(),
                        "id": kind.name,
                    },
                )
            body = response.json()
            if response.status_code == 200:
                got = (200, None)
                assert body["utterance_id"] == kind.name
            else:
                assert response.headers["content-type"].startswith("application/problem+json")
                got = (response.status_code, body["reason"])
            if got != (kind.http_status, kind.http_answer):
                wrong.append((kind.name, got, (kind.http_status, kind.http_answer)))
    assert not wrong
