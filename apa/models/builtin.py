"""``builtin:`` model references: a family's tiny model (:mod:`apa.models.tiny`), built
into the cache on first use and reused after."""

from __future__ import annotations

import os
from pathlib import Path

from apa.models.cache import build_atomically, cache_root, is_complete
from apa.models.families import BUILTIN_NAMES, by_tiny_name
from apa.models.tiny import MARKER, RECIPE

BUILTIN_PREFIX = "builtin:"


def ensure_builtin(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory of the built-in model ``name`` (:data:`apa.models.families.
    BUILTIN_NAMES`), built into the cache on first use and reused after.

    Raises ``ValueError`` for an unknown name.
    """
    family = by_tiny_name(name)
    if family is None:
        known = ", ".join(BUILTIN_NAMES)
        raise ValueError(f"unknown built-in model {name!r}: expected one of {known}")
    final = cache_root(cache_dir) / "builtin" / f"{name[len(BUILTIN_PREFIX) :]}-r{RECIPE}"
    if is_complete(final, MARKER):
        return final
    return build_atomically(final, family.build_tiny, marker=MARKER)
