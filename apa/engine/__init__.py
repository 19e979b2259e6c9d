"""The LMM scoring engine: :class:`~apa.engine.scorer.LmmScorer` asks an audio LMM (a
family of :mod:`apa.models`) in the answer format of :mod:`apa.lmm` and reads its answer
into assessments, by constrained decoding or in one forward pass;
:mod:`apa.engine.feature_memo` keeps each clip's audio features for fine-tuning.

Importing this package imports neither torch nor transformers; its modules do.
"""
