"""ServeSettings: environment, Serve-config args over it, API keys, fail-closed auth."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve.auth import KeyChecker
from serve.errors import status_for
from serve.settings import ServeSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("APA_") and name != "APA_CACHE_DIR":
            monkeypatch.delenv(name)


def test_keys_from_env_comma_separated_and_from_a_file(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("APA_SERVE_API_KEYS", " alpha-key-1 , beta-key-2 ,")
    keys_file = tmp_path / "api-keys"
    keys_file.write_text("gamma-key-3\n\n  delta-key-4  \n")
    monkeypatch.setenv("APA_SERVE_API_KEYS_FILE", str(keys_file))
    settings = ServeSettings()
    assert settings.auth_keys() == [b"alpha-key-1", b"beta-key-2", b"gamma-key-3", b"delta-key-4"]
    assert "alpha-key-1" not in repr(settings) and "alpha-key-1" not in str(settings.model_dump())


def test_auth_fails_closed_without_keys_unless_disabled(monkeypatch) -> None:
    with pytest.raises(ValueError, match="no API key is configured"):
        ServeSettings().auth_keys()
    monkeypatch.setenv("APA_SERVE_AUTH", "disabled")
    assert ServeSettings().auth_keys() is None
    assert KeyChecker(None)("Bearer whatever") is None


def test_unreadable_key_file_is_an_error(tmp_path) -> None:
    settings = ServeSettings(api_keys_file=tmp_path / "missing")
    with pytest.raises(ValueError, match="cannot read api_keys_file"):
        settings.auth_keys()


def test_args_override_env_and_env_fills_the_rest(monkeypatch) -> None:
    monkeypatch.setenv("APA_MODEL", "builtin:tiny-phi4mm")
    monkeypatch.setenv("APA_SCORES", "greedy")
    monkeypatch.setenv("APA_SERVE_SCORER_REPLICAS", "3")
    monkeypatch.setenv("APA_AUDIO_MAX_DURATION_S", "12")
    settings = ServeSettings(scoring={"model": "builtin:tiny-qwen2-audio"}, scorer_replicas=2)
    assert settings.scoring.model == "builtin:tiny-qwen2-audio"  # args win
    assert settings.scoring.scores == "greedy"  # the environment fills what args leave out
    assert settings.scorer_replicas == 2
    assert settings.audio.max_duration_s == 12
    assert ServeSettings().scorer_replicas == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"scoring": {"batch_size": 32}}, "scorer_max_ongoing_requests"),
        ({"scoring": {"modle": "x"}}, "modle"),
        ({"max_upload_bytes": 0}, "max_upload_bytes"),
        ({"retry_after": 3}, "retry_after"),
        ({"audio": {"max_duration_s": -1}}, "max_duration_s"),
        ({"max_json_depth": 2}, "max_json_depth"),
        ({"max_in_flight_requests": 200}, "ingress_max_ongoing_requests"),
        ({"slow_upload_s": 5, "body_timeout_s": 5}, "slow_upload_s"),
    ],
)
def test_bad_settings_are_refused_with_the_field_named(args, message) -> None:
    with pytest.raises(ValidationError, match=message):
        ServeSettings(**args)


def test_reasons_map_to_client_or_server_statuses() -> None:
    assert {r: status_for(r) for r in ("input.empty_text", "lexicon.unknown_word")} == {
        "input.empty_text": 422,
        "lexicon.unknown_word": 422,
    }
    assert status_for("request.too_large") == 413 and status_for("auth.invalid_key") == 401
    assert status_for("server.overloaded") == 503 and status_for("answer.malformed") == 500
    assert status_for("request.too_deep") == 400 and status_for("request.timeout") == 408
    assert status_for("request.too_complex") == 400
    assert status_for("client.rate_limited") == 429


def test_key_compare_checks_every_key() -> None:
    check = KeyChecker([b"first-key", b"second-key"])
    assert check("Bearer second-key") is None and check("bearer first-key") is None
    problem = check("Bearer first-keyX")
    assert problem is not None and problem.status == 401 and problem.reason == "auth.invalid_key"
    assert "first-key" not in str(problem.body())
    with pytest.raises(ValueError):
        KeyChecker([])


@pytest.mark.parametrize(
    "module", ["serve.auth", "serve.errors", "serve.admission", "serve.json_depth"]
)
def test_doctests(module: str) -> None:
    import doctest
    import importlib

    results = doctest.testmod(importlib.import_module(module))
    assert results.attempted > 0 and results.failed == 0
