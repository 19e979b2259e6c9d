"""Flags declared from settings fields (apa.cli_options): every setting of `apa score` and of
the batch job has its flag, and every such flag's help, type and name come from its field,
so that they cannot drift apart. Flags override the environment; flags not given leave it."""

from __future__ import annotations

import inspect
import sys
import types
import typing
from typing import Any

import pytest
import typer
from pydantic import BaseModel
from pydantic_settings import BaseSettings
from typer.testing import CliRunner

from apa.batch.settings import BatchSettings
from apa.cli import app as apa_app
from apa.cli_options import flag_type, given, setting_flags, setting_help, setting_option
from apa.finetune.config import TrainConfig
from apa.scoring.settings import ScoringSettings
from ray_jobs.batch_score import app as batch_app
from ray_jobs.batch_score import main as batch_main

runner = CliRunner()

BATCH_FIELDS = set(BatchSettings.model_fields) - {"scoring"}  # scoring: its own fields

# command -> (its settings models, must every field have a flag, its flags that are no setting)
COMMANDS: dict[str, tuple[tuple[type[BaseModel], ...], bool, set[str]]] = {
    "apa score": ((ScoringSettings,), True, {"input", "output", "limit"}),
    "batch_score": ((BatchSettings, ScoringSettings), True, set()),
    "apa finetune": ((TrainConfig,), False, {"config", "set_", "resume"}),
}


def _command(name: str) -> Any:
    if name == "batch_score":
        return typer.main.get_command(batch_app)
    return typer.main.get_command(apa_app).commands[name.removeprefix("apa ")]  # type: ignore[attr-defined]


def _callback(name: str) -> Any:
    if name == "batch_score":
        return batch_main
    return {c.name or c.callback.__name__: c.callback for c in apa_app.registered_commands}[
        name.removeprefix("apa ")
    ]


def _model_of(name: str, models: tuple[type[BaseModel], ...]) -> type[BaseModel] | None:
    owners = [m for m in models if name in m.model_fields and name != "scoring"]
    assert len(owners) <= 1, f"{name} is a field of several models: {owners}"
    return owners[0] if owners else None


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_setting_has_a_flag_and_every_flag_its_fields_help(command: str) -> None:
    models, complete, others = COMMANDS[command]
    params = {p.name: p for p in _command(command).params if p.param_type_name == "option"}
    params.pop("help", None)
    signature = inspect.signature(_callback(command), eval_str=True)
    assert "flags" not in params
    settings_flags = set()
    for name, param in params.items():
        model = _model_of(name, models)
        if model is None:
            assert name in others, f"{command} --{name}: neither a setting nor a known flag"
            continue
        settings_flags.add(name)
        field = model.model_fields[name]
        assert param.help == setting_help(model, name), f"{command} --{name}: help typed by hand"
        assert param.help.startswith(field.description or ""), f"{command} --{name}"
        assert param.opts == ["--" + name.replace("_", "-")], f"{command} --{name}: renamed"
        assert param.default is None, f"{command} --{name}: a default hides the environment"
        declared = typing.get_args(signature.parameters[name].annotation)[0]
        assert set(typing.get_args(declared)) == {flag_type(field), type(None)}, f"--{name}"
    if complete:
        fields = {f for m in models for f in m.model_fields if f != "scoring"}
        assert fields - settings_flags == set(), f"{command}: settings without a flag"
    assert others <= set(params)


def test_settings_models_share_no_field_name() -> None:
    """The batch job's flags are flat: a name in both models would be ambiguous."""
    assert BATCH_FIELDS & set(ScoringSettings.model_fields) == set()


def test_help_is_the_description_with_bounds_default_and_environment() -> None:
    assert setting_help(ScoringSettings, "batch_size") == (
        "utterances per model call (x>=1; default: 8; env: APA_BATCH_SIZE)"
    )
    assert setting_help(BatchSettings, "forward_env").endswith(
        "(default: on; env: APA_BATCH_FORWARD_ENV)"
    )
    assert setting_help(TrainConfig, "model") == (
        "Base model reference. (default: builtin:tiny-qwen2-audio)"
    )
    with pytest.raises(KeyError, match="no field 'nope'"):
        setting_option(ScoringSettings, "nope")


def test_given_keeps_the_models_fields_that_were_given() -> None:
    flags = {"model": "builtin:gop", "batch_size": None, "timings": False, "limit": 3}
    assert given(ScoringSettings, flags) == {"model": "builtin:gop", "timings": False}


class _Stop(Exception):
    pass


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``apa score`` and the batch job up to their settings: what they would run with."""
    seen: dict[str, Any] = {}

    def run_scoring(input_uri, output_uri, settings, **kwargs):
        seen["scoring"] = settings
        raise ValueError("stopped by the test")

    def run_batch(settings):
        seen["batch"] = settings
        raise ValueError("stopped by the test")

    monkeypatch.setattr("apa.scoring.run.run_scoring", run_scoring)
    monkeypatch.setattr("ray_jobs.batch_score.run_batch", run_batch)
    fake_ray = types.ModuleType("ray")
    fake_ray.is_initialized = lambda: True  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    for name in ("APA_BATCH_SIZE", "APA_TIMINGS", "APA_MODEL", "APA_BATCH_ROWS_PER_PART"):
        monkeypatch.delenv(name, raising=False)
    return seen


def _score(*args: str):
    return runner.invoke(apa_app, ["score", "--input", "in.jsonl", "--output", "out", *args])


def _batch(*args: str):
    return runner.invoke(batch_app, ["--input", "in.jsonl", "--output", "out", *args])


def test_score_flags_override_the_environment_and_absent_ones_leave_it(
    captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APA_BATCH_SIZE", "3")
    monkeypatch.setenv("APA_TIMINGS", "true")
    result = _score()
    assert result.exit_code == 2 and "stopped by the test" in result.output
    assert captured["scoring"] == ScoringSettings(batch_size=3, timings=True)
    _score("--no-timings", "--model", "builtin:gop", "--max-text-chars", "50", "--mode", "generate")
    assert captured["scoring"] == ScoringSettings(
        batch_size=3, timings=False, model="builtin:gop", max_text_chars=50, mode="generate"
    )


def test_batch_flags_override_the_environment_and_absent_ones_leave_it(
    captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APA_BATCH_ROWS_PER_PART", "7")
    monkeypatch.setenv("APA_BATCH_SIZE", "3")
    result = _batch()
    assert result.exit_code == 2 and "stopped by the test" in result.output
    settings: BatchSettings = captured["batch"]
    assert (settings.rows_per_part, settings.scoring.batch_size) == (7, 3)
    assert settings.forward_env and settings.scoring.model == "auto"
    _batch(
        "--rows-per-part", "9", "--no-forward-env", "--num-gpus", "0.5", "--dtype", "float16",
        "--model", "builtin:gop", "--object-store-mib", "256", "--timings",
    )  # fmt: skip
    settings = captured["batch"]
    assert (settings.rows_per_part, settings.forward_env, settings.num_gpus) == (9, False, 0.5)
    assert settings.object_store_mib == 256 and settings.scoring.batch_size == 3
    assert settings.scoring == ScoringSettings(
        model="builtin:gop", dtype="float16", batch_size=3, timings=True
    )


@pytest.mark.parametrize(
    ("invoke", "args", "message"),
    [
        (_score, ["--batch-size", "0"], "greater than or equal to 1"),
        (_score, ["--mode", "beam"], "'one-pass' or 'generate'"),
        (_batch, ["--object-store-mib", "8"], "greater than or equal to 64"),
        (_batch, ["--cpus-per-actor", "0"], "greater than 0"),
        (_batch, ["--dtype", "float64"], "'auto', 'float32', 'bfloat16' or 'float16'"),
    ],
)
def test_a_bad_value_fails_as_its_flags_error(
    captured: dict[str, Any], invoke: Any, args: list[str], message: str
) -> None:
    result = invoke(*args)
    assert result.exit_code == 2 and captured == {}
    text = " ".join(result.output.replace("│", " ").split())  # rich's error box unwrapped
    assert f"Invalid value for '{args[0]}'" in text and message in text


def test_a_plain_model_has_no_environment_variable() -> None:
    assert issubclass(ScoringSettings, BaseSettings) and not issubclass(TrainConfig, BaseSettings)
    assert "env:" not in setting_help(TrainConfig, "epochs")


def test_setting_flags_refuses_a_flag_named_twice() -> None:
    def command(model: str | None = None, *, flags: dict[str, Any]) -> None:
        pass

    with pytest.raises(TypeError, match="a flag named twice"):
        setting_flags(ScoringSettings)(command)
