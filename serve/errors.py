"""Errors as answers: RFC 9457 problem details (``application/problem+json``).

Every refusal carries ``type``, ``title``, ``status``, ``detail`` and a ``reason``: the same
``stage.code`` strings as the batch job's error rows (``audio.too_long``,
``lexicon.unknown_word``), plus the service's own ``request.*``, ``auth.*``, ``client.*``
and ``server.*``. A client's mistake is always a 4xx (``client.rate_limited``, 429: this
client has too many requests in flight); a 5xx means the service is overloaded or not ready
(503, both with ``Retry-After``), cannot load its model (503 ``server.model_load_failed``,
no ``Retry-After``: it needs a new deployment) or broken (500, ``server.error``).

>>> status_for("audio.too_long"), status_for("audio.too_large"), status_for("model.failed")
(422, 413, 500)
>>> [status_for(r) for r in ("request.timeout", "client.rate_limited", "server.overloaded")]
[408, 429, 503]
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "urn:apa:error:"
"""``type`` is a URN naming the reason (RFC 9457 allows any URI; no page to dereference)."""

_TITLES: dict[int, str] = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}

# Exact reasons first, then stages; a reason in neither is the server's fault (500).
_STATUS_BY_REASON: dict[str, int] = {
    "audio.too_large": 413,
    "request.too_large": 413,
    "request.unsupported_media_type": 415,
    "request.malformed": 400,
    "request.too_deep": 400,
    "request.too_complex": 400,
    "request.timeout": 408,
    "request.not_found": 404,
    "request.method_not_allowed": 405,
    "auth.missing_key": 401,
    "auth.invalid_key": 401,
    "client.rate_limited": 429,
    "server.overloaded": 503,
    "server.not_ready": 503,
    "server.model_load_failed": 503,
}
_STATUS_BY_STAGE: dict[str, int] = {
    "input": 422,
    "audio": 422,
    "lexicon": 422,
    "request": 422,
    # The audio does not fit the text well enough to align: what the speaker said, not us.
    "alignment": 422,
}


def status_for(reason: str) -> int:
    """The HTTP status of a refusal with this ``stage.code`` reason."""
    if reason in _STATUS_BY_REASON:
        return _STATUS_BY_REASON[reason]
    return _STATUS_BY_STAGE.get(reason.split(".", 1)[0], 500)


class Problem(Exception):
    """A refusal to answer with problem JSON; raise it anywhere in a request."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status if status is not None else status_for(reason)
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {
            "type": TYPE_BASE + self.reason,
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "reason": self.reason,
            **self.extra,
        }

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.body(), status_code=self.status, headers=self.headers, media_type=PROBLEM_JSON
        )
