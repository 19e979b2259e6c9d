"""The one error of model loading (its own module: every family's loader raises it)."""

from __future__ import annotations

from apa.errors import ApaError
from apa.schema import Stage


class ModelLoadError(ApaError):
    """A model, processor or adapter that cannot be found or loaded."""

    stage: Stage = "model"
