"""helm/generate.py (a script beside the chart, not a package) loaded as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PATH = Path(__file__).resolve().parents[2] / "helm" / "generate.py"
_spec = importlib.util.spec_from_file_location("helm_generate", PATH)
assert _spec is not None and _spec.loader is not None
generate = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = generate  # dataclasses look their module up
_spec.loader.exec_module(generate)
