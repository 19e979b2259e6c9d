"""The one settings model of a fine-tuning run, saved beside the adapter it produced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from apa.lmm.prompt import AlignmentUse, PromptStyle

Schedule = Literal["constant", "linear", "cosine"]

TINY_RECIPE: dict[str, object] = {
    "prompt": "brief",
    "loss_weights": {"sentence": 1.0, "word": 0.3, "phone": 0.3, "pronounced": 0.3},
    "modules_to_save": [
        "multi_modal_projector",
        "lm_head",
        "audio_tower.conv1",
        "audio_tower.conv2",
    ],
    "weight_decay": 0.1,
    "dropout": 0.1,
    "expected_score_weights": {"word": 0.2, "phone": 0.2},
}
"""The settings with which the built-in tiny Qwen2-Audio (random weights) learns the
synthetic corpus's rules (``benchmarks/learnability.py``, its test, benchmarks/RESULTS.md
``## Learnability``): sentence slots weigh about 3x the others (at equal weights an
utterance's ~60 word and phone slots drown its 3 sentence slots; at 10x, 0.1, sentence
accuracy was learned on some seeds only, and word accuracy less), and the audio encoder's two input
convolutions train in full beside the projector and the output head (on a random encoder,
LoRA alone does not find the cues); weight decay and LoRA dropout keep the held-out scores
from falling back late in a long run; the expected-score term at 0.2 on word and phone slots
lifts those levels (phone accuracy 0.49-0.68 against 0.35-0.39 without, seeds 0-4) and
leaves the sentence level where it was."""


class TrainConfig(BaseModel):
    """Everything a fine-tuning run depends on (``apa finetune`` flags map onto it).

    Saved as ``training.json`` in the adapter directory with the apa version and git
    revision; unknown keys are refused (``extra="forbid"``) so that a typo is an error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("builtin:tiny-qwen2-audio", description="Base model reference.")
    train: str = Field(description="Training data: Speechocean762 dir or manifest with scores.")
    valid: str | None = Field(None, description="Validation data, evaluated every epoch.")
    out: str = Field(description="Run directory: adapter/, checkpoints/, predictions/.")
    prompt: PromptStyle = Field(
        "brief",
        description="Instruction style trained and scored with (apa.lmm.prompt): 'brief' "
        "(the reference only) or 'rubric' (with the rubric and answer form). Recorded in "
        "training.json; a scorer loading the adapter uses the same.",
    )
    alignment: AlignmentUse = Field(
        "off",
        description="'spans': every utterance is force-aligned (pocketsphinx) and each "
        "canonical phone's audio is added at the phone's place in the answer "
        "(docs/alignment-informed-scoring.md); '+next': also the next phone's audio one "
        "token before each phone's name; '+words': also each word's audio where its scores "
        "are read; recorded in training.json, a scorer loading "
        "the adapter does the same. 'off': the plain path.",
    )
    rank: int = Field(8, ge=1, description="LoRA rank r.")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha (scale alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: list[str] | None = Field(
        None,
        description="Module names (suffixes) given LoRA; None: the model family's "
        "lora_targets (apa/models/<family>/__init__.py).",
    )
    modules_to_save: list[str] | None = Field(
        None, description="Modules trained in full; None: the model family's modules_to_save."
    )
    learning_rate: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Schedule = Field("cosine", description="Learning-rate schedule after warmup.")
    warmup_steps: int = Field(10, ge=0, description="Optimizer steps of linear warmup.")
    epochs: int = Field(3, ge=1)
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (None: all epochs)."
    )
    batch_size: int = Field(8, ge=1, description="Utterances per micro-batch (per worker).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping; None: off.")
    loss_weights: dict[str, float] = Field(
        default_factory=lambda: {"sentence": 1.0, "word": 1.0, "phone": 1.0, "pronounced": 1.0},
        description="Weight of each slot group's mean loss (sentence, word, phone scores; "
        "pronounced phones).",
    )
    expected_score_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Per score group (sentence, word, phone), the weight of a slot's squared "
        "error (in points of 0-10) between the expected score one-pass scoring reads and the "
        "target's, added to its cross-entropy; none by default.",
    )
    bf16: bool = Field(True, description="bfloat16 autocast on CUDA (never on CPU).")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N.")
    seed: int = Field(0, description="Initialisation, data order and dropout follow from it.")
    eval_batch_size: int = Field(16, ge=1)
    eval_resamples: int = Field(200, ge=0, description="Bootstrap resamples of the metrics.")
    eval_every_epochs: int = Field(1, ge=1, description="Validate every N epochs (and last).")
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="Also checkpoint every N optimizer steps (always per epoch)."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Newest checkpoints kept.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's).")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        unknown = set(self.loss_weights) - {"sentence", "word", "phone", "pronounced"}
        if unknown:
            raise ValueError(f"loss_weights: unknown groups {sorted(unknown)}")
        unknown = set(self.expected_score_weights) - {"sentence", "word", "phone"}
        if unknown:
            raise ValueError(f"expected_score_weights: not score groups {sorted(unknown)}")
        if any(w < 0 for w in self.expected_score_weights.values()):
            raise ValueError("expected_score_weights: weights are >= 0")
        if any(w < 0 for w in self.loss_weights.values()) or not any(self.loss_weights.values()):
            raise ValueError("loss_weights must be non-negative and not all zero")
        return self


def parse_sets(items: list[str] | None) -> dict[str, object]:
    """``key=value`` overrides (values parsed as JSON where they are, else strings).

    >>> parse_sets(["rank=16", "target_modules=[\\"q_proj\\"]", "model=builtin:tiny-phi4mm"])
    {'rank': 16, 'target_modules': ['q_proj'], 'model': 'builtin:tiny-phi4mm'}
    """
    out: dict[str, object] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"a setting is key=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


def load_train_config(
    path: str | Path | None = None,
    flags: dict[str, object] | None = None,
    sets: list[str] | None = None,
) -> TrainConfig:
    """A :class:`TrainConfig` from a JSON file (optional), then ``flags`` that are not
    ``None``, then ``key=value`` ``sets``, each overriding the one before. Raises
    ``ValueError`` (pydantic's ``ValidationError`` is one) naming the bad field."""
    fields: dict[str, object] = json.loads(Path(path).read_text()) if path else {}
    fields.update({k: v for k, v in (flags or {}).items() if v is not None})
    fields.update(parse_sets(sets))
    return TrainConfig(**fields)
