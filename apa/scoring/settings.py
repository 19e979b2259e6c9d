"""Scoring settings: one pydantic model, filled from ``APA_*`` environment variables and
overridden by CLI flags or job/service config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from apa.lmm.prompt import AlignmentUse
from apa.text import DEFAULT_MAX_TEXT_CHARS

DEFAULT_MODEL = "auto"


class ScoringSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APA_", frozen=True, extra="forbid")

    model: str = Field(
        default=DEFAULT_MODEL,
        description="builtin:gop, builtin:tiny-qwen2-audio, builtin:tiny-phi4mm, a hub id, a "
        "local directory or s3://bucket/prefix; 'auto' picks builtin:gop on a machine "
        "without a GPU",
    )
    adapter: str | None = Field(default=None, description="LoRA adapter: local path or s3://")
    merge_adapter: bool = Field(default=False, description="merge the adapter into the weights")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="the model's weights and compute dtype; auto: bfloat16 on CUDA, float32 "
        "elsewhere",
    )
    device: str = Field(default="auto", description="auto (CUDA when available), cpu, cuda, cuda:N")
    batch_size: int = Field(default=8, ge=1, description="utterances per model call")
    max_text_chars: int = Field(
        default=DEFAULT_MAX_TEXT_CHARS,
        gt=0,
        description="longest reference text in characters; longer is refused as "
        "input.text_too_long (apa score, the batch job and the service alike)",
    )
    mode: Literal["one-pass", "generate"] | None = Field(
        default=None,
        description="LMM decoding: 'generate' fills the answer slot by slot with constrained "
        "decoding (works for any instruct model, zero-shot included; one forward pass per "
        "slot); 'one-pass' reads every slot from a single forward pass over the answer with "
        "<|slot|> placeholders (needs a model fine-tuned in that format); unset: one-pass for an "
        "adapter trained by 'apa finetune' (its training card says so), generate otherwise",
    )
    scores: Literal["expected", "greedy"] = Field(
        default="expected",
        description="LMM scores: 'expected' is the expected value over the allowed score "
        "tokens (continuous), 'greedy' the most probable score (an integer)",
    )
    alignment: AlignmentUse | None = Field(
        default=None,
        description="LMM with the forced alignment in hand: 'spans' force-aligns each "
        "utterance (pocketsphinx) and adds each canonical phone's audio at its place in the "
        "answer ('+next': also the next phone's audio just before it; '+words': each word's "
        "audio where its scores are read; for an adapter trained so: apa finetune --set "
        "alignment=...); an "
        "utterance the aligner cannot align is scored on the plain path (column "
        "scoring_path); unset: as the adapter was trained (its training card), else 'off'",
    )
    gop_calibration: str | None = Field(
        default=None,
        description="builtin:gop calibration JSON from 'apa calibrate' (path or s3://); "
        "default: the documented defaults in apa.gop.calibration",
    )
    self_check: bool = Field(
        default=True,
        description="score a one-second probe utterance right after loading: a model that "
        "loads but cannot score fails at load (model.cannot_run) instead of on every input",
    )
    timings: bool = Field(
        default=False,
        description="add word and phone start/end times from the GOP aligner to backends "
        "that give none (the LMMs); builtin:gop always has them",
    )
