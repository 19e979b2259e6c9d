"""The LMM scoring engine's format layer: what an audio LMM is asked and what it answers.

- :mod:`apa.lmm.vocab`: the dedicated answer tokens (``<|s0|>`` ... ``<|s10|>``, ``<|na|>``,
  ``<|ok|>``, ``<|del|>``, ``<|ph:AA|>`` ... ``<|ph:ZH|>``, ``<|ph:unk|>``, ``<|slot|>``) and
  how they join a tokenizer and a model's embeddings, one token each.
- :mod:`apa.lmm.answer`: the answer template fixed by the reference (words and canonical
  phones), rendering an assessment into answer text and soft per-slot targets, and parsing
  answer text or per-slot probability distributions back into an assessment.
- :mod:`apa.lmm.prompt`: the backend-neutral user-turn instruction.
- :mod:`apa.lmm.backends`: what differs between Qwen2-Audio and Phi-4-multimodal (chat
  template, audio placeholder and features), and the padded model inputs of a batch.
- :mod:`apa.lmm.engine`: :class:`~apa.lmm.engine.LmmScorer`, the scorer that fills each
  utterance's answer by constrained decoding (``generate``) or in one forward pass
  (``one-pass``) and reads scores as expected values.

The format is documented in ``docs/answer-format.md``. Importing this package imports
neither torch nor transformers; the backends and the engine do.
"""
