"""The online service's settings: one pydantic-settings model.

Filled from the environment (``APA_SERVE_<FIELD>``; the scoring and audio parts from the same
``APA_*`` / ``APA_AUDIO_*`` variables as the batch job) and overridden by the Serve config's
application ``args`` (a mapping with these field names; ``scoring`` and ``audio`` are
mappings of :class:`~apa.scoring.settings.ScoringSettings` and
:class:`~apa.audio.AudioConfig` fields, the environment filling what they leave out).

API keys: ``APA_SERVE_API_KEYS`` (comma-separated) and/or ``APA_SERVE_API_KEYS_FILE`` (one
key per line: a mounted Kubernetes Secret). With ``auth="required"`` (the default) the
service refuses to start without a key; ``auth="disabled"`` turns authentication off
explicitly. Keys should come from the environment or a file, never from the Serve config,
which is stored in the cluster in the clear.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from apa.audio import AudioConfig
from apa.scoring.settings import ScoringSettings

_MIB = 1024 * 1024


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APA_SERVE_", frozen=True, extra="forbid")

    scoring: ScoringSettings = Field(
        default_factory=ScoringSettings,
        description="model, adapter, mode, scores...; scoring.batch_size is the largest "
        "dynamic batch (@serve.batch max_batch_size); 1 turns batching off",
    )
    audio: AudioConfig = Field(
        default_factory=AudioConfig,
        description="accepted audio: max_duration_s (default 30 s), min_duration_s, ...",
    )
    lexicon: str | None = Field(
        default=None,
        description="a Kaldi lexicon.txt (path or s3://) tried before CMUdict; default CMUdict",
    )
    batch_wait_timeout_s: float = Field(
        default=0.01,
        ge=0.0,
        le=5.0,
        description="how long the first request of a batch waits for others (@serve.batch)",
    )
    max_upload_bytes: int = Field(
        default=16 * _MIB,
        gt=0,
        description="largest request body (multipart or JSON with base64 audio)",
    )
    max_json_depth: int = Field(
        default=32,
        ge=3,
        description="deepest nesting of a JSON body (a request needs 3); deeper: 400 "
        "request.too_deep, checked before parsing",
    )
    max_json_items: int = Field(
        default=1000,
        ge=16,
        description="most arrays, objects and members in a JSON body (a request has about "
        "10); more: 400 request.too_complex, checked before parsing",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0.0,
        description="the whole request body must arrive within this; else 408 request.timeout",
    )
    slow_upload_s: float = Field(
        default=1.0,
        gt=0.0,
        description="a body still arriving after this is a slow upload and needs one of "
        "max_slow_uploads places",
    )
    max_slow_uploads: int = Field(
        default=16,
        ge=1,
        description="slow uploads at once per ingress replica; past it: 503 server.overloaded "
        "and the body is no longer read",
    )
    max_in_flight_requests: int = Field(
        default=64,
        ge=1,
        description="assessments in flight per ingress replica (upload to answer); past it: "
        "503 server.overloaded with Retry-After",
    )
    max_in_flight_per_client: int = Field(
        default=16,
        ge=1,
        description="assessments in flight per client (API key; host without auth) per "
        "ingress replica; past it: 429 client.rate_limited with Retry-After",
    )
    ingress_replicas: int = Field(default=1, ge=1)
    ingress_num_cpus: float = Field(default=0.25, ge=0.0)
    ingress_max_ongoing_requests: int = Field(
        default=256,
        ge=1,
        description="Ray Serve's limit per ingress replica, a last resort: at least twice "
        "max_in_flight_requests, so that overload is answered by the app (problem JSON)",
    )
    ingress_max_queued_requests: int = Field(
        default=256,
        ge=-1,
        description="Ray Serve's queue in front of the ingress, a last resort: past it Ray's "
        "proxy answers a text/plain 503 (-1: unbounded)",
    )
    scorer_replicas: int = Field(default=1, ge=1)
    scorer_num_cpus: float = Field(default=1.0, ge=0.0)
    scorer_num_gpus: float = Field(default=0.0, ge=0.0, description="GPUs per model replica")
    scorer_max_ongoing_requests: int = Field(
        default=16,
        ge=1,
        description="requests in a model replica at once; at least scoring.batch_size, or "
        "batches can never fill",
    )
    scorer_max_queued_requests: int = Field(
        default=64,
        ge=-1,
        description="requests waiting for a model replica; past it: 503 with Retry-After "
        "(-1: unbounded)",
    )
    retry_after_s: int = Field(
        default=1, ge=0, description="Retry-After on overload (503) and rate limiting (429)"
    )
    health_timeout_s: float = Field(
        default=2.0, gt=0.0, description="how long /-/healthz waits for a model replica"
    )
    auth: Literal["required", "disabled"] = "required"
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="bearer API keys (env: comma-separated)"
    )
    api_keys_file: Path | None = Field(
        default=None, description="a file of bearer API keys, one a line (a mounted Secret)"
    )

    @field_validator("scoring", mode="before")
    @classmethod
    def _scoring_from_env(cls, value: Any) -> Any:
        # A mapping is completed from APA_* like the batch job's settings, not from defaults.
        return ScoringSettings(**value) if isinstance(value, dict) else value

    @field_validator("audio", mode="before")
    @classmethod
    def _audio_from_env(cls, value: Any) -> Any:
        return AudioConfig(**value) if isinstance(value, dict) else value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServeSettings:
        if self.scorer_max_ongoing_requests < self.scoring.batch_size:
            raise ValueError(
                f"scorer_max_ongoing_requests ({self.scorer_max_ongoing_requests}) must be at "
                f"least scoring.batch_size ({self.scoring.batch_size}), or batches never fill"
            )
        if self.ingress_max_ongoing_requests < 2 * self.max_in_flight_requests:
            raise ValueError(
                f"ingress_max_ongoing_requests ({self.ingress_max_ongoing_requests}) must be at "
                f"least twice max_in_flight_requests ({self.max_in_flight_requests}): Ray's limit "
                "is the last resort, the app's own admission control answers overload"
            )
        if self.slow_upload_s >= self.body_timeout_s:
            raise ValueError(
                f"slow_upload_s ({self.slow_upload_s:g}) must be under body_timeout_s "
                f"({self.body_timeout_s:g})"
            )
        return self

    def auth_keys(self) -> list[bytes] | None:
        """The API keys (env/args and file) as bytes for a constant-time compare; ``None``
        when ``auth`` is ``disabled``. Read when called (in the replica that checks them), so
        the model deployment never needs them. Raises ``ValueError`` when auth is required
        and there is no key, or the key file cannot be read."""
        if self.auth == "disabled":
            return None
        keys = [key.get_secret_value().encode() for key in self.api_keys]
        if self.api_keys_file is not None:
            try:
                text = self.api_keys_file.read_text()
            except OSError as e:
                raise ValueError(
                    f"cannot read api_keys_file {self.api_keys_file}: {e.strerror}"
                ) from e
            keys += [line.strip().encode() for line in text.splitlines() if line.strip()]
        if not keys:
            raise ValueError(
                "auth is required but no API key is configured: set APA_SERVE_API_KEYS or "
                "APA_SERVE_API_KEYS_FILE, or APA_SERVE_AUTH=disabled to serve without keys"
            )
        return keys


CHART_EXCLUDED = ("auth", "api_keys", "api_keys_file")
"""Settings the Helm chart never puts in the Serve config: authentication comes from its
``apiKeys`` values (a Secret mounted as a file, and ``APA_SERVE_AUTH``)."""


def args_json_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON schema of the application ``args`` the Helm chart may set, and its ``$defs``
    (referenced as ``#/$defs/<Model>``): what ``helm/apa/values.schema.json`` holds for
    ``serve.args``, kept equal to these settings by the chart tests."""
    schema = ServeSettings.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.pop("$defs")
    for name in CHART_EXCLUDED:
        del schema["properties"][name]
    return schema, defs
