"""Fuzzing the running service on loopback: requests generated from its own OpenAPI
document (schemathesis: schema-conforming and schema-violating bodies) and hand-shaped JSON
and multipart bodies with arbitrary text (lone surrogates, control characters, huge numbers).
Whatever comes in, the answer is never a 5xx, and every error is problem JSON with a reason.

Bounded and deterministic: a fixed number of examples per test, ``derandomize=True``, no
example database, no shrinking (a failure prints the example that caused it)."""

from __future__ import annotations

import base64
import json
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.serve.conftest import KEYS

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
AUTH = {"Authorization": f"Bearer {KEYS[0]}"}
BOUNDED = settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)


def check(status: int, content_type: str, body: bytes, seen: Counter) -> None:
    """No 5xx; a 4xx is problem JSON whose ``status`` is the HTTP status."""
    seen[status] += 1
    assert status < 500, body[:500]
    if status >= 400:
        assert content_type.startswith(PROBLEM), (status, content_type, body[:200])
        problem = json.loads(body)
        assert problem["status"] == status and problem["reason"], problem


@pytest.fixture(scope="module")
def api(service):
    return schemathesis.openapi.from_url(f"{service.url}/openapi.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_requests_from_the_openapi_document_never_fail_the_server(api, mode) -> None:
    """Every operation with schema-conforming inputs, and the assessment route (the only
    one with inputs to violate) with non-conforming bodies."""
    seen: Counter = Counter()
    operations = [result.ok() for result in api.get_all_operations()]
    if mode is GenerationMode.NEGATIVE:
        operations = [op for op in operations if op.method == "post"]
    assert operations
    for operation in operations:

        @BOUNDED
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case) -> None:
            response = case.call(headers=AUTH, timeout=60)
            content_type = response.headers.get("content-type", [""])[0]
            check(response.status_code, content_type, response.content, seen)

        fuzz()
    print(f"openapi {mode.value}: {sum(seen.values())} requests, statuses {dict(seen)}")
    assert sum(seen.values()) >= 100


# JSON strings of any code point, lone surrogates (which json.dumps escapes) made common;
# joined from a list, as st.text() leaves surrogates out.
any_text = st.lists(
    st.characters(exclude_categories=()) | st.sampled_from(["\ud800", "\udfff", "\x00"]),
    max_size=40,
).map("".join)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | any_text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def audio_choices(samples) -> list[bytes]:
    return [b"", b"RIFF\x00\x00not audio", samples[0].audio]


def test_arbitrary_json_and_multipart_bodies_never_fail_the_server(
    service, samples, audio_choices
) -> None:
    """Bodies near the real ones: the known fields (and strays) holding any JSON value, text
    of any code point, real or broken audio; the same fields as multipart parts."""
    seen: Counter = Counter()
    encoded = st.sampled_from([base64.b64encode(audio).decode() for audio in audio_choices])
    fields = st.fixed_dictionaries(
        {
            "text": st.one_of(
                st.just(samples[0].text),
                any_text,
                any_text.map(lambda tail: f"{samples[0].text} {tail}"),
                json_values,
            ),
            "audio_base64": st.one_of(encoded, encoded, json_values),
        },
        optional={
            "id": st.from_regex(r"\A\S{1,20}\Z") | any_text | json_values,
            "options": st.fixed_dictionaries(
                {},
                optional={
                    "levels": st.lists(st.sampled_from(["sentence", "word", "phone", "x"]))
                    | json_values,
                    "scores": st.sampled_from(["continuous", "integer", "x"]) | json_values,
                },
            )
            | json_values,
            "extra": json_values,
        },
    )

    with httpx.Client(base_url=service.url, headers=AUTH, timeout=60) as client:

        @BOUNDED
        @given(body=fields, as_multipart=st.booleans(), audio=st.sampled_from(audio_choices))
        def fuzz(body, as_multipart, audio) -> None:
            if as_multipart:
                data = {k: v for k, v in body.items() if isinstance(v, str) and k != "audio_base64"}
                data = {k: v.encode("utf-8", "surrogatepass") for k, v in data.items()}
                files = {"audio": ("a.flac", audio), **{k: (None, v) for k, v in data.items()}}
                response = client.post("/v1/assessments", files=files)
            else:
                response = client.post(
                    "/v1/assessments",
                    content=json.dumps(body).encode(),
                    headers={"content-type": "application/json"},
                )
            content_type = response.headers.get("content-type", "")
            check(response.status_code, content_type, response.content, seen)

        fuzz()
    print(f"hand-shaped bodies: {sum(seen.values())} requests, statuses {dict(seen)}")
    assert sum(seen.values()) == 100
