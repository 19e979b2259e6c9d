"""A loaded scorer scores one probe utterance before it is handed out.

A model can load and still be unable to score anything: a processor whose feature extractor
does not match the model (an 80-mel Whisper extractor beside Qwen2-Audio's 128-mel encoder
loads cleanly and fails every forward pass), a dtype the device cannot compute in, a card
too small for one forward pass. Without a check each input then fails on its own: the batch
job writes an error row ``model.failed`` for every row of the corpus, and the service
answers every request with it while reporting itself ready. :func:`self_check` scores one
short probe through the scorer right after loading, so such a model fails where a model
that cannot load fails (:class:`~apa.models.errors.ModelLoadError`, reason
``model.cannot_run``): the batch job stops with exit 2 before committing anything, the
service answers 503 ``server.model_load_failed``, ``apa score`` exits 2. On a GPU the
probe's forward pass should also be the one that pays for loading the kernels, in place of
the first real request (not measured here: no GPU).
"""

from __future__ import annotations

import numpy as np

from apa.audio import Audio
from apa.models.errors import ModelLoadError
from apa.schema import ErrorRecord, Utterance
from apa.scorer import PreparedUtterance, Scorer
from apa.scoring.pipeline import checked_results

PROBE_SECONDS = 1.0
PROBE_ID = "apa-self-check"


def probe() -> PreparedUtterance:
    """One second of quiet, seeded noise read as "hello" (canonical phones given, so no
    lexicon is needed): the same input on every call."""
    rate = 16_000
    samples = np.random.default_rng(0).standard_normal(int(PROBE_SECONDS * rate)) * 0.01
    audio = Audio(
        samples=samples.astype(np.float32),
        sample_rate=rate,
        source_sample_rate=rate,
        source_channels=1,
        source_format="probe",
    )
    utterance = Utterance(id=PROBE_ID, text="hello", phones=[["HH", "AH0", "L", "OW1"]])
    return PreparedUtterance(utterance=utterance, audio=audio)


def self_check(scorer: Scorer) -> None:
    """Score :func:`probe` through ``scorer``; raise :class:`ModelLoadError` (``cannot_run``)
    when the scorer raises, breaks its contract (:func:`apa.scoring.pipeline.
    checked_results`) or returns a ``model`` error for the probe. Any other result passes: an
    assessment, or an error of the input's own (the GOP aligner may find no speech in the
    probe's noise)."""
    batch = [probe()]
    try:
        (result,) = checked_results(scorer, batch, scorer.score(batch))
    except Exception as e:  # noqa: BLE001 - whatever the backend raised is the reason
        raise _cannot_run(f"{type(e).__name__}: {e}") from e
    if isinstance(result, ErrorRecord) and result.stage == "model":
        raise _cannot_run(f"{result.reason}: {result.message}")


def _cannot_run(why: str) -> ModelLoadError:
    return ModelLoadError(
        "cannot_run", f"the model loaded but cannot score a one-second probe utterance: {why}"
    )
