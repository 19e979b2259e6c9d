"""The batch job's settings: one pydantic model, filled from ``APA_BATCH_*`` environment
variables (the scorer's from ``APA_*``, :class:`~apa.scoring.settings.ScoringSettings`) and
overridden by the job's command-line flags."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from apa.scoring.settings import ScoringSettings


class BatchSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APA_BATCH_", frozen=True, extra="forbid")

    input: str | None = Field(
        default=None,
        description="a manifest (JSONL/CSV/Parquet), a Speechocean762 directory, or a "
        "directory/prefix of audio files (with --texts); local or s3://",
    )
    output: str | None = Field(
        default=None, description="directory (local or s3://) for the score tables"
    )
    texts: str | None = Field(
        default=None,
        description="reference texts for a directory/prefix of audio files: JSONL/CSV/"
        "Parquet rows id,text or a Kaldi 'text' file; ids are the audio files' stems",
    )
    limit: int | None = Field(
        default=None, ge=1, description="score only the first N utterances not yet done"
    )
    address: str | None = Field(
        default=None,
        description="Ray cluster address; default: RAY_ADDRESS (set by 'ray job submit'), "
        "else a local Ray started for the job",
    )
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs per scorer actor")
    cpus_per_actor: float = Field(default=1.0, gt=0, description="CPUs per scorer actor")
    cpus_per_task: float = Field(
        default=0.5,
        gt=0,
        description="CPUs per read/decode/write task; a value equal to cpus_per_actor (with "
        "no GPUs) lets Ray Data fold reading and decoding into the scorer actors",
    )
    min_actors: int = Field(default=1, ge=1, description="scorer actor pool: fewest actors")
    max_actors: int = Field(default=1, ge=1, description="scorer actor pool: most actors")
    actor_batch_rows: int | None = Field(
        default=None,
        ge=1,
        description="rows per scorer actor call, sorted by length into model calls of "
        "--batch-size; default 4 x --batch-size",
    )
    rows_per_part: int = Field(
        default=256, ge=1, description="rows per written part set (Parquet part + commit)"
    )
    rows_per_read_block: int = Field(
        default=16, ge=1, description="rows per block through the read and decode tasks"
    )
    object_store_mib: int = Field(
        default=1024,
        ge=64,
        description="cap on the job's Ray Data object-store use (MiB): decoded audio waits "
        "for the scorers instead of filling the object store, so memory stays flat",
    )
    max_passes: int = Field(
        default=3,
        ge=1,
        description="passes over inputs that are still not committed after a pass (lost to "
        "a concurrent run into the same output); past it the job fails, naming them",
    )
    progress_interval_s: float = Field(
        default=10.0, gt=0, description="seconds between structured progress log lines"
    )
    stale_inputs_after_s: float = Field(
        default=900.0,
        ge=60,
        description="input shards of another run into the same output whose heartbeat is "
        "older than this (a run killed outright) are deleted at start; a running job "
        "beats every 30 s",
    )
    forward_env: bool = Field(
        default=True,
        description="pass the driver's APA_* and AWS_* variables to the job's workers (a "
        "cluster's workers do not see the driver's environment otherwise). They show in "
        "the job's runtime_env: turn off where credentials reach every pod from a Secret",
    )
    demo: bool = Field(
        default=False,
        description="generate the espeak-ng demo corpus into --demo-dir and score it",
    )
    demo_dir: str = Field(default="batch-demo", description="where --demo writes")
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)

    @model_validator(mode="after")
    def _consistent(self) -> BatchSettings:
        if self.min_actors > self.max_actors:
            raise ValueError(f"min_actors {self.min_actors} > max_actors {self.max_actors}")
        if not self.demo and (self.input is None or self.output is None):
            raise ValueError("give --input and --output (or --demo)")
        return self

    @property
    def input_uri(self) -> str:
        return self.input or f"{self.demo_dir.rstrip('/')}/corpus/manifest.jsonl"

    @property
    def output_uri(self) -> str:
        return self.output or f"{self.demo_dir.rstrip('/')}/scores"

    @property
    def rows_per_actor_call(self) -> int:
        return self.actor_batch_rows or 4 * self.scoring.batch_size
