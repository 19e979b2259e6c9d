"""The answer format of the audio LMMs: what a model is asked and what it answers.

- :mod:`apa.lmm.vocab`: the dedicated answer tokens (``<|s0|>`` ... ``<|s10|>``, ``<|na|>``,
  ``<|ok|>``, ``<|del|>``, ``<|ph:AA|>`` ... ``<|ph:ZH|>``, ``<|ph:unk|>``, ``<|slot|>``) and
  how they join a tokenizer and a model's embeddings, one token each.
- :mod:`apa.lmm.answer`: the answer template fixed by the reference (words and canonical
  phones), rendering an assessment into answer text and soft per-slot targets, and parsing
  answer text or per-slot probability distributions back into an assessment.
- :mod:`apa.lmm.prompt`: the family-neutral user-turn instruction.

Pure text and numbers: the families (:mod:`apa.models`) and the engine that asks and reads
(:mod:`apa.engine`) sit above it. The format is documented in ``docs/answer-format.md``.
Importing this package imports neither torch nor transformers.
"""
