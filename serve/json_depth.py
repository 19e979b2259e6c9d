r"""How deeply a JSON text nests, and how many items it holds, measured without parsing it.

Python's ``json`` module and pydantic both recurse once per level of nesting: a body of a few
thousand ``[`` ends in a ``RecursionError`` deep inside them. The ingress measures the depth
first, with a linear, vectorised scan of the bytes (numpy, in chunks so that memory stays
bounded whatever the body), and refuses a body deeper than ``max_json_depth`` before any
recursive code sees it. The same scan counts items, so that a body of millions of tiny
values (each a Python object once parsed) is refused before it is built
(``max_json_items``).

The scan counts ``[`` and ``{`` (down on ``]`` and ``}``) outside strings; a ``"`` opens or
closes a string unless an odd run of backslashes precedes it. For valid JSON that is the
exact nesting depth; for invalid JSON it agrees with the parser up to the first error, where
the parser stops anyway.

>>> json_depth(rb'{"a": [1, {"b": "[[[["}], "c": "\\"}')
3
>>> json_depth(rb'"\"[[[" 1'), json_depth(rb'["\\", [[]]]')
(0, 3)
>>> json_depth(b"[" * 5000), json_depth(b"")
(5000, 0)
>>> json_shape(b'{"text": "a, b", "audio_base64": "", "options": {"levels": ["word"]}}')
JsonShape(depth=3, items=5)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

CHUNK_BYTES = 1 << 20
"""Bytes scanned at once: bounds the scan's memory (a few MiB) for a 16 MiB body."""

_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")
_STEP = np.zeros(256, np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


class JsonShape(NamedTuple):
    depth: int
    """the deepest nesting of arrays and objects (0 for a scalar)"""
    items: int
    """arrays and objects opened plus commas between their members: bounds how many Python
    objects parsing builds (``[[],[],...]`` in 16 MiB would be ~5 M lists, ~400 MB)"""


def json_shape(
    body: bytes,
    *,
    max_depth: int | None = None,
    max_items: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> JsonShape:
    """The shape of ``body``, brackets and commas inside strings not counted. The scan
    stops early once past ``max_depth`` or ``max_items``: the figures returned are then only
    known to be over the bound."""
    deepest = depth = items = 0
    in_string = False
    backslashes = 0  # the run of backslashes that ends the previous chunk
    for start in range(0, len(body), chunk_bytes):
        size = min(chunk_bytes, len(body) - start)
        chunk = np.frombuffer(body, np.uint8, count=size, offset=start)
        # Only brackets, commas and quotes matter: a base64 body has next to none, so the
        # work past these few whole-chunk passes is small.
        is_backslash = chunk == _BACKSLASH
        quotes = np.flatnonzero(chunk == _QUOTE)
        if backslashes or is_backslash.any():
            quotes = quotes[~_escaped(is_backslash, backslashes)[quotes]]
        step = _STEP[chunk]
        brackets = np.flatnonzero(step)
        commas = np.flatnonzero(chunk == _COMMA)
        # Quotes before each bracket or comma, with an open string carried in: odd = inside.
        steps = np.where(_inside(quotes, brackets, in_string), 0, step[brackets])
        levels = depth + np.cumsum(steps, dtype=np.int64)
        if len(levels):
            deepest = max(deepest, int(levels.max()))
            depth = int(levels[-1])
        items += int((steps > 0).sum()) + int((~_inside(quotes, commas, in_string)).sum())
        in_string = (len(quotes) + in_string) % 2 == 1
        backslashes = _trailing_run(is_backslash, backslashes)
        if (max_depth is not None and deepest > max_depth) or (
            max_items is not None and items > max_items
        ):
            break
    return JsonShape(deepest, items)


def json_depth(body: bytes, *, chunk_bytes: int = CHUNK_BYTES) -> int:
    """The deepest nesting of arrays and objects in ``body`` (0 for a scalar)."""
    return json_shape(body, chunk_bytes=chunk_bytes).depth


def _inside(quotes: np.ndarray, positions: np.ndarray, in_string: bool) -> np.ndarray:
    """Whether each position lies inside a string: an odd number of string quotes before it,
    counting a string left open by the previous chunk."""
    return (np.searchsorted(quotes, positions) + in_string) % 2 == 1


def _escaped(is_backslash: np.ndarray, carried: int) -> np.ndarray:
    """For each byte, whether an odd run of backslashes comes right before it; ``carried``
    is the run that ended the previous chunk."""
    positions = np.arange(len(is_backslash))
    # The last byte that is not a backslash, at or before each position (-1: none yet).
    last_other = np.maximum.accumulate(np.where(is_backslash, -1, positions))
    run_through = positions - last_other + np.where(last_other < 0, carried, 0)
    # The run of backslashes that ends just before each byte.
    before = np.concatenate(([carried], run_through[:-1] * is_backslash[:-1]))
    return before % 2 == 1


def _trailing_run(is_backslash: np.ndarray, carried: int) -> int:
    """The run of backslashes at the end of this chunk, counting ``carried`` if the whole
    chunk is backslashes."""
    others = np.flatnonzero(~is_backslash)
    if len(others) == 0:
        return carried + len(is_backslash)
    return len(is_backslash) - 1 - int(others[-1])
