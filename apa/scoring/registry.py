"""Model names → loaded scorers. The one place that knows which backends exist."""

from __future__ import annotations

from apa.models.errors import ModelLoadError
from apa.scorer import Scorer
from apa.scoring.self_check import self_check
from apa.scoring.settings import ScoringSettings

GOP = "builtin:gop"
PASSTHROUGH = "builtin:passthrough"
"""scores nothing: for benchmarks of the pipeline only (:mod:`apa.scoring.passthrough`)"""


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def resolve_model_name(name: str) -> str:
    """``auto`` → the embedded default: the GOP baseline on a machine without a GPU.

    There is no trained LMM adapter to default to yet, so ``auto`` is the GOP baseline on a
    GPU machine too; name an LMM explicitly to use one.
    """
    return GOP if name == "auto" else name


def load_scorer(settings: ScoringSettings) -> Scorer:
    """Load the scorer the settings name (once per process or actor): :data:`GOP`,
    :data:`PASSTHROUGH` (benchmarks only), or else
    an audio LMM (``builtin:tiny-qwen2-audio``, ``builtin:tiny-phi4mm``, a directory, an
    ``s3://`` prefix or a Hub id; :func:`apa.engine.scorer.load_lmm_scorer`). With
    ``settings.self_check`` (the default) the scorer then scores a probe utterance
    (:func:`apa.scoring.self_check.self_check`). Raises
    :class:`~apa.models.errors.ModelLoadError` when the model cannot be loaded, or loads and
    cannot score."""
    scorer = _load(settings, resolve_model_name(settings.model))
    if settings.self_check:
        self_check(scorer)
        if hasattr(scorer, "reset_counts"):  # an LMM engine: its counts start after the probe
            scorer.reset_counts()
    if settings.timings:
        from apa.scoring.timings import WithTimings

        return WithTimings(scorer)
    return scorer


def _load(settings: ScoringSettings, name: str) -> Scorer:
    if name == PASSTHROUGH:
        from apa.scoring.passthrough import PassThroughScorer

        return PassThroughScorer()
    if name == GOP:
        if settings.adapter:
            raise ModelLoadError("adapter", "builtin:gop takes no adapter")
        from apa.gop.scorer import GopScorer, load_calibration

        return GopScorer(calibration=load_calibration(settings.gop_calibration))
    from apa.engine.scorer import load_lmm_scorer

    return load_lmm_scorer(
        name,
        adapter=settings.adapter,
        merge_adapter=settings.merge_adapter,
        dtype=settings.dtype,
        device=settings.device,
        mode=settings.mode,
        scores=settings.scores,
        alignment=settings.alignment,
    )
