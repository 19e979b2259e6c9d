"""Admission control in each ingress replica: overload is answered by our code, at once, as
problem JSON with ``Retry-After``, before any work is done for the request.

- ``client.rate_limited`` (429): this client (its API key; its host when authentication is
  off) already has ``max_in_flight_per_client`` assessments in flight here.
- ``server.overloaded`` (503): the replica already has ``max_in_flight_requests``
  assessments in flight (reading, decoding, waiting for or in the model), or
  ``max_slow_uploads`` bodies still arriving after ``slow_upload_s``.

A request is "in flight" from admission to its answer, its body upload included. Slow uploads
get their own, smaller bound so that a few clients trickling bytes can hold at most that many
of the in-flight places: a body that arrives at once never needs an upload place, so fast
clients keep being served while slow ones are refused (or time out, ``body_timeout_s``).

Ray Serve's own limits (``ingress_max_ongoing_requests`` and ``ingress_max_queued_requests``,
answered by Ray's proxy as a text/plain 503) are set far above these and are only the last
resort. The counters live in the replica's event loop: no lock is needed, as nothing awaits
between a check and its increment.

>>> gate = Admission(max_in_flight=2, max_per_client=1, max_slow_uploads=1, retry_after_s=3)
>>> with gate.admit("alice"):
...     with gate.admit("alice"):
...         pass
Traceback (most recent call last):
...
serve.errors.Problem: this client already has 1 assessment(s) in flight: retry after 3 s
>>> with gate.admit("alice"), gate.admit("bob"), gate.admit("carol"):
...     pass
Traceback (most recent call last):
...
serve.errors.Problem: the service has 2 assessments in flight: retry after 3 s
>>> gate.in_flight, gate.clients
(0, {})
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from serve.errors import Problem


class Admission:
    """Bounds on what one ingress replica has in flight; see the module docstring."""

    def __init__(
        self, *, max_in_flight: int, max_per_client: int, max_slow_uploads: int, retry_after_s: int
    ) -> None:
        self.max_in_flight = max_in_flight
        self.max_per_client = max_per_client
        self.max_slow_uploads = max_slow_uploads
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.slow_uploads = 0
        self.clients: dict[str, int] = {}

    @property
    def _refusal_headers(self) -> dict[str, str]:
        # Refused before its body is read (or in the middle of it): the connection cannot
        # carry another request, and closing it sheds the rest of the upload.
        return {"Retry-After": str(self.retry_after_s), "Connection": "close"}

    @contextmanager
    def admit(self, client: str) -> Iterator[None]:
        """Hold one in-flight place for ``client`` for the duration of the block; raise the
        429 or 503 :class:`Problem` instead when there is none. The client's own share is
        checked first: a client over it is told so, even when the service is full too."""
        held = self.clients.get(client, 0)
        if held >= self.max_per_client:
            raise Problem(
                "client.rate_limited",
                f"this client already has {held} assessment(s) in flight: retry after "
                f"{self.retry_after_s} s",
                headers=self._refusal_headers,
            )
        if self.in_flight >= self.max_in_flight:
            raise Problem(
                "server.overloaded",
                f"the service has {self.in_flight} assessments in flight: retry after "
                f"{self.retry_after_s} s",
                headers=self._refusal_headers,
            )
        self.in_flight += 1
        self.clients[client] = held + 1
        try:
            yield
        finally:
            self.in_flight -= 1
            left = self.clients[client] - 1
            if left:
                self.clients[client] = left
            else:
                del self.clients[client]  # the map holds only clients with requests in flight

    @contextmanager
    def slow_upload(self) -> Iterator[None]:
        """Hold one place for a body that is still arriving; raise the 503 :class:`Problem`
        when every place is taken (the caller then stops reading)."""
        if self.slow_uploads >= self.max_slow_uploads:
            raise Problem(
                "server.overloaded",
                f"{self.slow_uploads} slow uploads are already in progress: retry after "
                f"{self.retry_after_s} s",
                headers=self._refusal_headers,
            )
        self.slow_uploads += 1
        try:
            yield
        finally:
            self.slow_uploads -= 1


def client_identity(authorization: str | None, host: str | None, *, keyed: bool) -> str:
    """Who a request counts against: a digest of its (already checked) bearer key when keys
    are required (the key itself is never kept), else the client's host. Behind a load
    balancer without keys every request may share one host, and so one share.

    >>> client_identity("Bearer k1", "10.0.0.1", keyed=True) == client_identity(
    ...     "Bearer k1", "10.0.0.2", keyed=True)
    True
    >>> client_identity(None, "10.0.0.1", keyed=False)
    'host:10.0.0.1'
    """
    if keyed:
        token = (authorization or "").partition(" ")[2].strip()
        return "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return f"host:{host or 'unknown'}"
