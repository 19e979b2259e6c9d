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


def test_a_model_load_error_is_read_back_from_the_text_it_leaves_in_a_traceback() -> None:
    error = ModelLoadError("not_found", 'no model at "/nowhere"\n(a second line)')
    traceback = f"Traceback (most recent call last):\n  ...\nRuntimeError: {error.as_text()}\n"
    back = ModelLoadError.in_text(traceback)
    assert back is not None
    assert (back.reason, back.message) == ("model.not_found", error.message)
    assert ModelLoadError.in_text("RuntimeError: model not found") is None


def test_a_model_load_error_is_found_anywhere_in_a_chain_of_causes() -> None:
    def failed() -> BaseException:
        try:
            try:
                raise RuntimeError(ModelLoadError("unknown_builtin", "no such model").as_text())
            except RuntimeError as inner:
                raise ValueError("the actor died") from inner
        except ValueError as outer:
            try:
                raise KeyError("while handling it") from None
            except KeyError as last:
                last.__context__ = outer
                return last

    found = ModelLoadError.behind(failed())
    assert found is not None and found.reason == "model.unknown_builtin"
    assert ModelLoadError.behind(ValueError("no model here")) is None
