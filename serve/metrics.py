"""Prometheus metrics through Ray's metrics API (exported by each node's metrics agent, with
Ray's own ``ray_`` prefix: ``ray_apa_requests_total``...).

=================================  =========  =========================================
metric                             kind       tags
=================================  =========  =========================================
apa_requests_total                 counter    route, status (HTTP code)
apa_request_latency_seconds        histogram  route
apa_batch_size                     histogram  (utterances per model call)
apa_audio_seconds                  histogram  (decoded audio length of each request)
apa_audio_seconds_total            counter    (audio seconds scored)
=================================  =========  =========================================
"""

from __future__ import annotations

from ray.util import metrics

LATENCY_BOUNDARIES_S = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64]
AUDIO_BOUNDARIES_S = [1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0]


class IngressMetrics:
    """Created once per ingress replica."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "apa_requests_total",
            description="HTTP requests answered, by route and status code",
            tag_keys=("route", "status"),
        )
        self.latency = metrics.Histogram(
            "apa_request_latency_seconds",
            description="time from request to answer",
            boundaries=LATENCY_BOUNDARIES_S,
            tag_keys=("route",),
        )
        self.audio = metrics.Histogram(
            "apa_audio_seconds",
            description="decoded audio length of each accepted request",
            boundaries=AUDIO_BOUNDARIES_S,
        )

    def answered(self, route: str, status: int, seconds: float) -> None:
        self.requests.inc(tags={"route": route, "status": str(status)})
        self.latency.observe(seconds, tags={"route": route})


class ScorerMetrics:
    """Created once per model replica."""

    def __init__(self) -> None:
        self.batch_size = metrics.Histogram(
            "apa_batch_size",
            description="utterances per model call (dynamic batching)",
            boundaries=BATCH_BOUNDARIES,
        )
        self.audio_total = metrics.Counter(
            "apa_audio_seconds_total", description="seconds of audio scored"
        )

    def batch(self, size: int, audio_seconds: float) -> None:
        self.batch_size.observe(size)
        self.audio_total.inc(audio_seconds)
