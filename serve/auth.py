"""Bearer API keys: ``Authorization: Bearer <key>`` checked against every configured key in
constant time (:func:`hmac.compare_digest`, no early exit on the first match). Keys and the
presented token are never logged or echoed.

>>> check = KeyChecker([b"k1", b"k2"])
>>> check("Bearer k2")
>>> check(None).reason, check("Bearer nope").reason, check("Basic k1").reason
('auth.missing_key', 'auth.invalid_key', 'auth.missing_key')
>>> KeyChecker(None)("anything") is None
True
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from serve.errors import Problem

WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="apa"'}


class KeyChecker:
    """``keys=None``: authentication disabled (``auth: disabled``); else at least one key."""

    def __init__(self, keys: Sequence[bytes] | None) -> None:
        if keys is not None and not keys:
            raise ValueError("authentication needs at least one API key")
        self._keys = tuple(keys) if keys is not None else None

    @property
    def enabled(self) -> bool:
        return self._keys is not None

    def __call__(self, authorization: str | None) -> Problem | None:
        """``None`` when the request may go on, else the 401 problem to answer with."""
        if self._keys is None:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Problem(
                "auth.missing_key",
                "send an API key as 'Authorization: Bearer <key>'",
                headers=WWW_AUTHENTICATE,
            )
        presented = token.encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        if not matched:
            return Problem(
                "auth.invalid_key",
                "the API key is not valid",
                headers={"WWW-Authenticate": 'Bearer realm="apa", error="invalid_token"'},
            )
        return None
