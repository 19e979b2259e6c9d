"""Acoustic core of the GOP baseline: forced alignment of the canonical phones with
pocketsphinx, a free phone loop as the reference, per-phone goodness-of-pronunciation (GOP)
features in nats per frame, timing (silences, pauses, articulation rate) and a rule for
substitutions and deletions. Mapping these features to 0-2 / 0-10 scores is a later step.

Entry point: :class:`apa.gop.aligner.GopAligner` (build once per worker, call
:meth:`~apa.gop.aligner.GopAligner.analyse` per utterance).
"""
