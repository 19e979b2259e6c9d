"""A rendered RayJob's entrypoint parsed by the job's own command line into its settings
(for the chart's tests and for the manifests in k8s/)."""

from __future__ import annotations

import importlib
import shlex
from typing import Any

from apa.batch.settings import BatchSettings
from apa.cli_options import given
from apa.finetune.config import TrainConfig, load_train_config
from apa.scoring.settings import ScoringSettings


def parse_entrypoint(rayjob: dict[str, Any], module: str) -> dict[str, Any]:
    """The RayJob's entrypoint parsed by the job's own command line (flags unknown to it or
    values it refuses fail here): the parameters it was given."""
    import typer.main

    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", module]
    command = typer.main.get_command(importlib.import_module(module).app)
    params = command.make_context(module, argv[3:]).params
    return {k: v for k, v in params.items() if v is not None}


def batch_settings(rayjob: dict[str, Any]) -> BatchSettings:
    flags = parse_entrypoint(rayjob, "ray_jobs.batch_score")
    scoring = ScoringSettings(**given(ScoringSettings, flags))
    return BatchSettings(scoring=scoring, **given(BatchSettings, flags))


def finetune_settings(rayjob: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """The TrainConfig a fine-tuning RayJob trains with, and its other options."""
    params = parse_entrypoint(rayjob, "ray_jobs.finetune")
    flags = {k: params.pop(k, None) for k in ("train", "valid", "out", "model")}
    return load_train_config(params.pop("config", None), flags, params.pop("set_", [])), params
