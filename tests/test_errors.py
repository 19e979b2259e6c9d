"""Typed errors survive pickling (Ray sends them between processes) with reason and message."""

from __future__ import annotations

import pickle

import pytest

from apa.errors import ApaError, AudioError, InputError
from apa.lmm.answer import AnswerError
from apa.models.errors import ModelLoadError


@pytest.mark.parametrize(
    "error",
    [
        ApaError("bad", "a message", raw="x"),
        AudioError("too_long", "31.0 s is over the 30 s limit"),
        InputError("empty_text", "no text"),
        ModelLoadError("not_found", "no model at /nowhere"),
        AnswerError("malformed", "not the template", raw="<|s3|>"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_round_trip_through_pickle(error: ApaError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (back.reason, back.message, back.raw, str(back)) == (
        error.reason,
        error.message,
        error.raw,
        str(error),
    )
    assert back.record("u1") == error.record("u1")
