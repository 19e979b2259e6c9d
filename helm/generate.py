"""Generate what the Helm chart derives from the code and from its own values, or check it.

    .venv/bin/python helm/generate.py           # rewrite the files below
    .venv/bin/python helm/generate.py --check   # exit 1 naming the stale ones (tests/helm too)

1. ``helm/apa/values.schema.json``: the schemas of the maps that hold a Python program's own
   settings (:data:`SETTINGS_MAPS`) and their ``$defs``, from the pydantic models and the
   fine-tuning job's command line. The rest of the schema is written by hand.
2. ``helm/apa/values.yaml``: the ``# --`` comment above each key of those maps, from the
   field's description (or the option's help). A field without one keeps its hand-written
   comment.
3. ``helm/apa/README.md``: a table of every documented key (key, type, default, description),
   helm-docs style, from the ``# --`` comments of values.yaml.
4. ``k8s/rayjob-*.yaml``: the chart's RayJobs rendered by ``helm template`` with the values
   files ``k8s/values-*.yaml`` (:data:`MANIFESTS`), so that no manifest is kept by hand.

The comment convention is helm-docs': a ``# -- description`` line directly above a key,
continued by the ``#`` lines up to the key; comment lines above the ``# --`` line are free
text. A documented map whose children carry no ``# --`` comment (a Kubernetes object such as
``resources``) is one row, its whole value the default; otherwise each child is a row and
must be documented (:func:`undocumented`).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import subprocess
import sys
import textwrap
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter

REPO = Path(__file__).resolve().parents[1]
# Run as a script, helm/ comes first on sys.path, and the chart's folder helm/apa would
# shadow the package apa: the repository goes first instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)
CHART = REPO / "helm" / "apa"
VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"
README = CHART / "README.md"
HELM = Path(os.environ.get("HELM", REPO / ".tools" / "helm"))
WIDTH = 100  # the repository's line length

MANIFESTS = {
    REPO / "k8s" / "rayjob-batch-score.yaml": (
        REPO / "k8s" / "values-batch-score.yaml",
        "templates/rayjob-batch-score.yaml",
    ),
    REPO / "k8s" / "rayjob-finetune.yaml": (
        REPO / "k8s" / "values-finetune.yaml",
        "templates/rayjob-finetune.yaml",
    ),
}
"""Checked-in manifest -> (its values file, the chart template it renders)."""

BATCH_EXCLUDED = ("address", "demo", "demo_dir")
"""BatchSettings fields a RayJob never sets: KubeRay gives the job its cluster's address, and
the demo corpus is for a local run."""

FINETUNE_TRAIN_CONFIG = ("set",)
"""ray_jobs.finetune options the chart does not take in finetuneJob.args: ``--set`` is
finetuneJob.trainConfig."""

FINETUNE_FLAGS_IN_ARGS = ("train", "valid", "out", "model")
"""TrainConfig fields with their own ray_jobs.finetune option, so in finetuneJob.args (not
in finetuneJob.trainConfig)."""


# --- the settings maps: schema and descriptions ----------------------------------------------


@dataclass(frozen=True)
class SettingsMap:
    """A values map holding a program's settings: its JSON schema (with ``$defs``) and the
    description of the key at a path below it (``None``: the field has none)."""

    schema: Callable[[], tuple[dict[str, Any], dict[str, Any]]]
    describe: Callable[[tuple[str, ...]], str | None]


def _model_schema(
    model: type[BaseModel], drop: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = model.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.pop("$defs", {})
    for name in drop:
        schema["properties"].pop(name, None)
    if "required" in schema:
        schema["required"] = [n for n in schema["required"] if n not in drop]
        if not schema["required"]:
            del schema["required"]
    return schema, defs


def _model_description(model: type[BaseModel], path: tuple[str, ...]) -> str | None:
    """The description of the field at ``path`` (through nested models)."""
    name, *rest = path
    if name not in model.model_fields:
        raise KeyError(f"{model.__name__} has no field {name!r}")
    field = model.model_fields[name]
    if not rest:
        return field.description
    if not (inspect.isclass(field.annotation) and issubclass(field.annotation, BaseModel)):
        raise KeyError(f"{model.__name__}.{name} is not a model: no field {rest[0]!r}")
    return _model_description(field.annotation, tuple(rest))


@functools.cache
def _serve() -> SettingsMap:
    from serve.settings import ServeSettings, args_json_schema

    return SettingsMap(args_json_schema, lambda path: _model_description(ServeSettings, path))


@functools.cache
def _batch() -> SettingsMap:
    from apa.batch.settings import BatchSettings

    return SettingsMap(
        lambda: _model_schema(BatchSettings, BATCH_EXCLUDED),
        lambda path: _model_description(BatchSettings, path),
    )


@functools.cache
def _train_config() -> SettingsMap:
    from apa.finetune.config import TrainConfig

    return SettingsMap(
        lambda: _model_schema(TrainConfig, FINETUNE_FLAGS_IN_ARGS),
        lambda path: _model_description(TrainConfig, path),
    )


@functools.cache
def finetune_options() -> dict[str, tuple[Any, str | None, Any]]:
    """ray_jobs.finetune's options but ``--set``, by key (the flag in snake_case): the
    parameter's type, help and lower bound."""
    import typer.main

    from ray_jobs.finetune import app, main

    hints = typing.get_type_hints(main, include_extras=True)
    options = {}
    for param in typer.main.get_command(app).params:
        key = param.opts[0].removeprefix("--").replace("-", "_")
        if key in FINETUNE_TRAIN_CONFIG:
            continue
        annotation, info = typing.get_args(hints[param.name])[:2]
        options[key] = (annotation, param.help, info.min)
    return options


@functools.cache
def _finetune_args() -> SettingsMap:
    def schema() -> tuple[dict[str, Any], dict[str, Any]]:
        properties = {}
        for key, (annotation, help_text, minimum) in finetune_options().items():
            prop = TypeAdapter(annotation).json_schema()
            prop.pop("format", None)  # a Path is a string in the chart
            if minimum is not None:
                prop["minimum"] = minimum
            properties[key] = {**prop, "description": help_text}
        return {"type": "object", "additionalProperties": False, "properties": properties}, {}

    def describe(path: tuple[str, ...]) -> str | None:
        (key,) = path
        return finetune_options()[key][1]

    return SettingsMap(schema, describe)


SETTINGS_MAPS: dict[tuple[str, ...], Callable[[], SettingsMap]] = {
    ("serve", "args"): _serve,
    ("batchJob", "args"): _batch,
    ("finetuneJob", "args"): _finetune_args,
    ("finetuneJob", "trainConfig"): _train_config,
}
"""Values maps of a program's settings (snake_case keys) -> where their schema and key
descriptions come from."""


def schema_text(current: str) -> str:
    """values.schema.json with every settings map's schema and ``$defs`` regenerated."""
    schema = json.loads(current)
    defs: dict[str, Any] = {}
    for path, source in SETTINGS_MAPS.items():
        part, part_defs = source().schema()
        node = schema
        for key in path[:-1]:
            node = node["properties"][key]
        node["properties"][path[-1]] = part
        for name, definition in part_defs.items():
            if defs.setdefault(name, definition) != definition:
                raise ValueError(f"two different $defs named {name}")
    schema["$defs"].update(defs)
    return json.dumps(schema, indent=2) + "\n"


# --- values.yaml: keys and their comments ----------------------------------------------------


@dataclass(frozen=True)
class Key:
    path: tuple[str, ...]
    line: int  # 0-based line of the key in the file
    indent: int
    value: Any
    description: str | None
    children: tuple[Key, ...]


def _comment(lines: list[str], line: int) -> tuple[int, str | None]:
    """The ``# --`` comment directly above ``line``: its first line and its text."""
    start, text = line, None
    i = line - 1
    while i >= 0 and lines[i].lstrip().startswith("#"):
        if lines[i].lstrip().startswith("# --"):
            start = i
            parts = [lines[i].lstrip().removeprefix("# --")]
            parts += [lines[j].lstrip().removeprefix("#") for j in range(i + 1, line)]
            text = " ".join(p.strip() for p in parts if p.strip())
            break
        i -= 1
    return start, text


def parse_values(text: str) -> list[Key]:
    """The keys of a values file (not inside lists), with their ``# --`` comments."""
    lines = text.splitlines()

    def walk(node: yaml.MappingNode, prefix: tuple[str, ...]) -> tuple[Key, ...]:
        keys = []
        for key_node, value_node in node.value:
            children: tuple[Key, ...] = ()
            if isinstance(value_node, yaml.MappingNode):
                children = walk(value_node, (*prefix, key_node.value))
            value = yaml.safe_load(yaml.serialize(value_node))
            _, description = _comment(lines, key_node.start_mark.line)
            keys.append(
                Key(
                    path=(*prefix, key_node.value),
                    line=key_node.start_mark.line,
                    indent=key_node.start_mark.column,
                    value=value,
                    description=description,
                    children=children,
                )
            )
        return tuple(keys)

    root = yaml.compose(text)
    return list(walk(root, ())) if root is not None else []


def _whole(key: Key) -> bool:
    """Documented as one row: a documented map none of whose children is documented."""
    return key.description is not None and not any(c.description for c in key.children)


def rows(keys: list[Key] | tuple[Key, ...]) -> Iterator[Key]:
    """The keys the README lists, depth first."""
    for key in keys:
        yield key
        if key.children and not _whole(key):
            yield from rows(key.children)


def undocumented(text: str) -> list[str]:
    """Dotted paths of the keys that need a ``# --`` comment and have none."""
    return [".".join(k.path) for k in rows(parse_values(text)) if k.description is None]


def values_text(current: str) -> str:
    """values.yaml with the ``# --`` comment of every settings-map key from its field."""
    lines = current.splitlines()
    edits = []
    for key in _all(parse_values(current)):
        for prefix, source in SETTINGS_MAPS.items():
            if len(key.path) > len(prefix) and key.path[: len(prefix)] == prefix:
                description = source().describe(key.path[len(prefix) :])
                if description:
                    edits.append((key, description))
    for key, description in sorted(edits, key=lambda e: -e[0].line):
        start, _ = _comment(lines, key.line)
        pad = " " * key.indent
        wrapped = textwrap.wrap(
            " ".join(description.split()),
            width=WIDTH,
            initial_indent=f"{pad}# -- ",
            subsequent_indent=f"{pad}# ",
            break_on_hyphens=False,
        )
        lines[start : key.line] = wrapped
    return "\n".join(lines) + "\n"


def _all(keys: list[Key] | tuple[Key, ...]) -> Iterator[Key]:
    for key in keys:
        yield key
        yield from _all(key.children)


# --- README.md --------------------------------------------------------------------------------


def _type(value: Any) -> str:
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string")):
        if isinstance(value, kind):
            return name
    return {list: "list", dict: "object", type(None): "null"}.get(type(value), "object")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def readme_text(values: str) -> str:
    """The chart's README: what it renders, how to render the manifests, the values table."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    table = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for key in rows(parse_values(values)):
        listed_children = key.children and not _whole(key)
        default = "" if listed_children else f"`{_cell(json.dumps(key.value))}`"
        table.append(
            f"| `{'.'.join(key.path)}` | {_type(key.value)} | {default} "
            f"| {_cell(key.description or '')} |"
        )
    manifests = "\n".join(
        f"    .tools/helm template apa helm/apa -f {values.relative_to(REPO)} "
        f"--show-only {template}"
        for values, template in MANIFESTS.values()
    )
    operator = chart.get("annotations", {}).get("kuberay.io/operator-version", "?")
    return f"""<!-- Generated by helm/generate.py from values.yaml: do not edit. -->
# {chart["name"]}

{chart["description"]}

Chart {chart["version"]}, app {chart["appVersion"]}; Kubernetes {chart["kubeVersion"]}; \
validated against the CRDs of the KubeRay operator {operator}.

```bash
.tools/helm install apa helm/apa --set image.repository=<registry>/apa --set image.tag=<tag>
.tools/helm install apa helm/apa -f helm/apa/ci/ci-values.yaml   # GPU groups, batch job
```

The RayJob manifests in `k8s/` are this chart rendered with the values files beside them
(generated, never edited by hand; a test fails when they drift from the chart):

{manifests}

Keys are camelCase, except in the maps that hold a program's own settings (`serve.args`,
`batchJob.args`, `finetuneJob.args`, `finetuneJob.trainConfig`), which keep its snake_case
names; `values.schema.json` checks every value, those maps against the programs' own settings.
The descriptions below are the `# --` comments of `values.yaml` (for those maps: the fields'
descriptions); after editing it run `.venv/bin/python helm/generate.py`.

## Values

{chr(10).join(table)}
"""


# --- k8s/ manifests ---------------------------------------------------------------------------


def manifest_text(values: Path, template: str) -> str:
    """``helm template`` of one job with its values file, headed by that file's own comment
    (what the manifest is and how to use it) and where it comes from."""
    if not HELM.exists():
        raise FileNotFoundError(f"helm not found at {HELM}: run `make tools`")
    done = subprocess.run(
        [str(HELM), "template", "apa", str(CHART), "-f", str(values), "--show-only", template],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"helm template with {values}: {done.stderr}")
    header = []
    for line in values.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    source = values.relative_to(REPO)
    return (
        "\n".join(
            [
                f"# Generated by helm/generate.py from {source}: do not edit. It is",
                f"#   .tools/helm template apa helm/apa -f {source} --show-only {template}",
                "#",
                *header,
                done.stdout.rstrip("\n"),
            ]
        )
        + "\n"
    )


# --- all of it ---------------------------------------------------------------------------------


def outputs() -> dict[Path, str]:
    """Every generated file and the text it should have now (values.yaml first: the README
    and the manifests are made from its updated text)."""
    out = {SCHEMA: schema_text(SCHEMA.read_text()), VALUES: values_text(VALUES.read_text())}
    out[README] = readme_text(out[VALUES])
    for manifest, (values, template) in MANIFESTS.items():
        out[manifest] = manifest_text(values, template)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    check = parser.parse_args().check
    changed = []
    if not check:  # the schema and values.yaml first: helm template and the README read them
        for path, make in ((SCHEMA, schema_text), (VALUES, values_text)):
            text = make(path.read_text())
            if path.read_text() != text:
                path.write_text(text)
                changed.append(path)
    for path, text in outputs().items():
        if not path.exists() or path.read_text() != text:
            changed.append(path)
            if not check:
                path.write_text(text)
    for path in dict.fromkeys(changed):
        print(f"{'stale' if check else 'written'}: {path.relative_to(REPO)}")
    missing = undocumented(VALUES.read_text())
    for name in missing:
        print(f"no `# --` comment: {name} in {VALUES.relative_to(REPO)}", file=sys.stderr)
    return 1 if missing or (check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
