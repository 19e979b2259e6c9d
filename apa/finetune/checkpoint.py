"""Training checkpoints that resume exactly: the trainable weights (LoRA and
``modules_to_save``), optimizer, scheduler, every RNG, and where the run stood (optimizer
step, epoch, micro-batch within the epoch; the epoch's data order is a function of the seed
and the epoch, :func:`apa.finetune.data.epoch_order`)."""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"
CHECKPOINTS_DIR = "checkpoints"


@dataclass
class Progress:
    """Where a run stands."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """The epoch in progress (0-based)."""
    micro: int = 0
    """Global micro-batches of that epoch already done."""


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train, by name, copied to the CPU."""
    return {
        n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad
    }


def save_checkpoint(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    progress: Progress,
    config: dict[str, Any],
) -> Path:
    """Write a checkpoint into ``directory`` (created) and return it."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        "trainable": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "progress": vars(progress).copy(),
        "config": config,
    }
    tmp = out / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(out / STATE_FILE)
    return out


def load_checkpoint(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> Progress:
    """Restore a checkpoint written by :func:`save_checkpoint` into the model, optimizer,
    scheduler and RNGs; returns the progress to continue from. Raises ``ValueError`` when
    the checkpoint's trainable parameters are not the model's."""
    state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state["trainable"]):
        missing = sorted(set(params) ^ set(state["trainable"]))[:5]
        raise ValueError(f"checkpoint {directory} does not fit the model (e.g. {missing})")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state["trainable"][name])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return Progress(**state["progress"])


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """A run's checkpoints, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    found = [d for d in root.glob("step-*") if (d / STATE_FILE).is_file()]
    return sorted(found, key=lambda d: int(d.name.split("-")[1]))


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints."""
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
