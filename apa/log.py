"""Structured logging: one call sets structlog up for a CLI or a job.

Jobs and services log JSON lines (one event per line, machine-readable); an interactive
terminal gets readable console lines. ``APA_LOG_FORMAT`` (``json`` | ``console``) and
``APA_LOG_LEVEL`` override the choice.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal

import structlog

LogFormat = Literal["json", "console"]


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of writing (test runners and CLIs
    swap it), not the stream that was current when logging was configured."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(fmt: LogFormat | None = None, level: str | None = None) -> None:
    """Route structlog (and stdlib logging) to stderr as JSON or console lines."""
    fmt = fmt or os.environ.get("APA_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    if fmt not in ("json", "console"):
        raise ValueError(f"APA_LOG_FORMAT must be 'json' or 'console', not {fmt!r}")
    level_name = (level or os.environ.get("APA_LOG_LEVEL") or "INFO").upper()
    numeric = logging.getLevelName(level_name)
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level_name!r}")
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=numeric, stream=_CurrentStderr(), format="%(name)s %(levelname)s %(message)s"
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
