"""What is saved beside an adapter: the training config, versions and git revision
(``training.json``), and the validation metrics (``metrics.json``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from apa import __version__

TRAINING_FILE = "training.json"
METRICS_FILE = "metrics.json"


def git_revision(path: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` of the checkout holding ``path`` (default: the apa package),
    with ``+dirty`` when it has uncommitted changes; ``unknown`` outside a checkout."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {
        "apa": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def read_card(adapter_dir: str | Path) -> dict[str, Any] | None:
    """The ``training.json`` of ``adapter_dir`` as :func:`write_card` wrote it, or ``None``
    where there is none (an adapter trained elsewhere). Raises ``ValueError`` for a file that
    is not JSON."""
    path = Path(adapter_dir) / TRAINING_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_card(
    adapter_dir: str | Path, *, config: dict[str, Any], metrics: dict[str, Any], extra: dict
) -> None:
    """Write ``training.json`` (config, versions, git revision, ``extra``) and
    ``metrics.json`` into ``adapter_dir``."""
    out = Path(adapter_dir)
    card = {"config": config, "versions": versions(), "git_revision": git_revision(), **extra}
    (out / TRAINING_FILE).write_text(json.dumps(card, indent=2, default=str) + "\n")
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
