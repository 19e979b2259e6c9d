"""Command-line options declared from settings fields, so that a setting is typed once.

:func:`setting_flags` gives a typer command one flag for every field of its settings models
and hands it the flags that were given::

    @app.command()
    @setting_flags(ScoringSettings)
    def score(limit: int | None = None, *, flags: dict[str, Any]) -> None:
        settings = ScoringSettings(**given(ScoringSettings, flags))

:func:`setting_option` declares the flag of a single field, where a command takes only some::

    epochs: Annotated[int | None, setting_option(TrainConfig, "epochs")] = None

A flag's help is its field's description, followed by the field's bounds, its default and
(for a settings model) its environment variable; its value is checked by the field's own
type and constraints (a bad value fails as that flag's error). It defaults to ``None``: a
flag that is not given leaves the setting to the environment or the field's default, one
that is given overrides both. ``apa`` (:mod:`apa.cli`) and the batch job
(:mod:`ray_jobs.batch_score`) declare theirs this way; ``tests/test_cli_options.py`` fails
when a settings field lacks its flag or a flag's help is typed by hand.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Mapping
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import annotated_types
import typer
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

_BOUNDS: tuple[tuple[type, str, str], ...] = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
)


def _field(model: type[BaseModel], name: str) -> FieldInfo:
    try:
        return model.model_fields[name]
    except KeyError:
        raise KeyError(f"{model.__name__} has no field {name!r}") from None


def _bounds(field: FieldInfo) -> list[str]:
    """The field's numeric bounds as click writes a range: ``x>=1``."""
    return [
        f"x{op}{getattr(item, attr)}"
        for item in field.metadata
        for kind, attr, op in _BOUNDS
        if isinstance(item, kind)
    ]


def _choices(field: FieldInfo) -> tuple[str, ...] | None:
    """The values of a ``Literal`` field (``None`` dropped), else ``None``."""
    for arg in (field.annotation, *get_args(field.annotation)):
        if get_origin(arg) is Literal:
            return tuple(str(a) for a in get_args(arg))
    return None


def _is_bool(field: FieldInfo) -> bool:
    return field.annotation is bool or set(get_args(field.annotation)) == {bool, type(None)}


def flag_type(field: FieldInfo) -> Any:
    """The type a field's flag is declared with: the field's, ``None`` dropped, and ``str``
    for a ``Literal`` (the flag's parser checks the value)."""
    if _choices(field):
        return str
    if get_origin(field.annotation) in (Union, UnionType):
        (base,) = set(get_args(field.annotation)) - {type(None)}
        return base
    return field.annotation


def env_var(model: type[BaseModel], name: str) -> str | None:
    """The environment variable a settings model reads ``name`` from (``None`` for a plain
    model): ``APA_BATCH_SIZE``."""
    if not issubclass(model, BaseSettings):
        return None
    return f"{model.model_config.get('env_prefix', '')}{name}".upper()


def _default(field: FieldInfo) -> str | None:
    if field.default is PydanticUndefined or field.default is None:
        return None
    if isinstance(field.default, bool):
        return "on" if field.default else "off"
    return str(field.default)


def setting_help(model: type[BaseModel], name: str) -> str:
    """A flag's help: the field's description, then its bounds, default and environment
    variable (in parentheses: typer's rich help would take square brackets for markup).

    >>> from pydantic import Field
    >>> class S(BaseSettings):
    ...     model_config = {"env_prefix": "X_"}
    ...     n: int = Field(1, ge=1, description="how many")
    >>> setting_help(S, "n")
    'how many (x>=1; default: 1; env: X_N)'
    """
    field = _field(model, name)
    notes = _bounds(field)
    default = _default(field)
    if default is not None:
        notes.append(f"default: {default}")
    env = env_var(model, name)
    if env is not None:
        notes.append(f"env: {env}")
    text = field.description or ""
    if notes:
        text = f"{text} ({'; '.join(notes)})".lstrip()
    return text


def _parser(model: type[BaseModel], name: str) -> Callable[[str], Any]:
    """A flag's value checked and converted by the field's type and constraints."""
    field = _field(model, name)
    annotation = field.annotation
    if field.metadata:
        annotation = Annotated[(annotation, *field.metadata)]
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)

    def parse(value: str) -> Any:
        try:
            return adapter.validate_python(value)
        except ValidationError as e:
            raise typer.BadParameter("; ".join(err["msg"] for err in e.errors())) from None

    parse.__name__ = name
    return parse


def setting_option(model: type[BaseModel], name: str, *param_decls: str) -> Any:
    """A typer option for field ``name`` of ``model`` (see the module docstring); declare
    the parameter ``T | None = None`` with ``T`` the field's type (``bool | None`` gives
    ``--flag/--no-flag``). ``param_decls`` as for :func:`typer.Option`."""
    field = _field(model, name)
    choices = _choices(field)
    kwargs: dict[str, Any] = {"help": setting_help(model, name), "show_default": False}
    if not _is_bool(field):
        kwargs["parser"] = _parser(model, name)
        kwargs["metavar"] = "|".join(choices) if choices else None
    return typer.Option(*param_decls, **kwargs)


def given(model: type[BaseModel], flags: Mapping[str, Any]) -> dict[str, Any]:
    """The flags among ``flags`` (from :func:`setting_flags`) that are fields of ``model``
    and were given (not ``None``): the keyword arguments that override its settings."""
    return {k: v for k, v in flags.items() if k in model.model_fields and v is not None}


Command = TypeVar("Command", bound=Callable[..., Any])


def setting_flags(
    *models: type[BaseModel], skip: Collection[str] = ()
) -> Callable[[Command], Command]:
    """Decorate a typer command (below ``@app.command()``): every field of ``models`` but
    ``skip`` becomes a flag (:func:`setting_option`), after the command's own parameters.
    The command takes them as its keyword-only parameter ``flags``, a dict of every such
    flag (``None``: not given) for :func:`given`."""

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "flags"]
        added = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[flag_type(field) | None, setting_option(model, name)],
            )
            for model in models
            for name, field in model.model_fields.items()
            if name not in skip
        ]
        names = [p.name for p in own + added]
        if len(set(names)) != len(names):
            raise TypeError(f"{command.__name__}: a flag named twice in {names}")

        @functools.wraps(command)
        def with_flags(**values: Any) -> Any:
            flags = {p.name: values.pop(p.name) for p in added}
            return command(**values, flags=flags)

        with_flags.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
        return with_flags  # type: ignore[return-value]

    return decorate
