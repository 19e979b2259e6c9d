"""peft without the warning it prints on every adapter operation."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence the FutureWarning peft 0.21 triggers in transformers 5 on every adapter
    operation (``is_gradient_checkpointing`` is deprecated); it says nothing about us."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
        )
        yield
