"""Score math shared by every surface: how a continuous score becomes an integer."""

from __future__ import annotations

import math


def nearest_score(x: float) -> int:
    """The integer nearest ``x``, halves up: the greedy target and the displayed value.
    It is the argmax of :func:`apa.lmm.answer.soft_target` with ties broken toward the
    higher score.

    >>> nearest_score(7.5), nearest_score(7.49), nearest_score(0.0)
    (8, 7, 0)
    """
    lo = math.floor(x)
    return lo + (1 if x - lo >= 0.5 else 0)
