"""The LMM scoring engine: :class:`~apa.engine.scorer.LmmScorer` asks an audio LMM (a
family of :mod:`apa.models`) in the answer format of :mod:`apa.lmm` and reads its answer
into assessments, by constrained decoding or in one forward pass, in three stages (host,
device, host) that callers may overlap (:func:`apa.scoring.pipeline.score_prepared`).

Importing this package imports neither torch nor transformers; its modules do.
"""
