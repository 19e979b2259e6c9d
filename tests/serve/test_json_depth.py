"""The JSON depth and item bounds: the vectorised scan equals a plain byte-by-byte scanner
on any input and any chunking; a deep body is refused as ``request.too_deep`` before (and
even without) the depth check, never as a ``RecursionError``; a body of millions of tiny
values is refused as ``request.too_complex`` before it is parsed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serve.app import _parse_json
from serve.errors import Problem
from serve.json_depth import JsonShape, json_depth, json_shape


def reference_shape(body: bytes) -> JsonShape:
    """Byte by byte: brackets and commas outside strings; a backslash in a string escapes
    the next byte."""
    deepest = depth = items = 0
    in_string = escaped = False
    for byte in body:
        char = chr(byte)
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            items += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
        elif char == ",":
            items += 1
    return JsonShape(deepest, items)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab"\\[]{} \u00e9', max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet='k"\\[{', max_size=4), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(value=json_values, chunk=st.integers(1, 9), ascii_only=st.booleans())
def test_scan_equals_the_reference_on_json(value, chunk, ascii_only) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert json_shape(body, chunk_bytes=chunk) == reference_shape(body)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    body=st.binary(max_size=64) | st.text(alphabet='"\\[]{}x', max_size=64).map(str.encode),
    chunk=st.integers(1, 9),
)
def test_scan_equals_the_reference_on_any_bytes(body, chunk) -> None:
    """Invalid JSON too, up to its first backslash: outside a string a backslash is already
    an error where the parser stops, and there the scan may read it as an escape."""
    if b"\\" in body:
        body = body[: body.index(b"\\")]
    assert json_shape(body, chunk_bytes=chunk) == reference_shape(body)


def test_escaped_quotes_and_backslash_runs_across_chunk_edges() -> None:
    body = b'["' + b"\\" * 5 + b'"[[[", ["' + b"\\" * 4 + b'", [[]]]]'
    for chunk in range(1, len(body) + 1):
        shape = json_shape(body, chunk_bytes=chunk)
        assert shape == reference_shape(body) and shape.depth == 4, chunk


def test_scan_stops_early_once_over_the_bound() -> None:
    body = b"[" * 40 + b"]" * 40 + b"[" * 10_000
    assert 32 < json_shape(body, max_depth=32, chunk_bytes=16).depth < 10_000
    assert json_depth(body) == 10_000
    many = b"[" + b"[]," * 10_000 + b"[]]"
    assert 100 < json_shape(many, max_items=100, chunk_bytes=64).items < 20_000
    assert json_shape(many) == (2, 20_002)


@pytest.mark.parametrize("depth", [33, 1_000, 100_000])
def test_deep_bodies_are_request_too_deep(depth) -> None:
    body = b'{"text": "a", "audio_base64": "", "x": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(Problem) as caught:
        _parse_json(body, 32, 1000)
    assert caught.value.status == 400 and caught.value.reason == "request.too_deep"


@pytest.mark.parametrize("filler", [b"[],", b"1,", b'"",'])
def test_bodies_of_many_items_are_request_too_complex(filler) -> None:
    """16 MiB of tiny values would be millions of Python objects (hundreds of MB) once
    parsed: refused before parsing."""
    items = (16 * 1024 * 1024) // len(filler)
    body = b'{"text": "a", "audio_base64": "", "x": [' + filler * items + b"1]}"
    with pytest.raises(Problem) as caught:
        _parse_json(body, 32, 1000)
    assert caught.value.status == 400 and caught.value.reason == "request.too_complex"


def test_recursion_past_the_check_is_still_request_too_deep() -> None:
    """With a bound above Python's recursion limit the parser itself recurses too deep:
    that too is the client's 400, not a server error."""
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(Problem) as caught:
        _parse_json(body, 1_000_000, 1_000_000)
    assert caught.value.status == 400 and caught.value.reason == "request.too_deep"


def test_a_request_is_three_deep_five_items_and_passes() -> None:
    body = json.dumps(
        {"text": "hello", "audio_base64": "AAAA", "options": {"levels": ["sentence"]}}
    ).encode()
    assert json_shape(body) == (3, 5)
    assert _parse_json(body, 3, 5).options.levels == ["sentence"]
