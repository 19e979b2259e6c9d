"""Audio LMMs: where a model comes from and how it is loaded.

A model is named by a Hugging Face Hub id, a local directory, an ``s3://bucket/prefix``
(fetched once into the cache, :mod:`apa.models.cache`) or a built-in tiny model
(``builtin:tiny-qwen2-audio``, ``builtin:tiny-phi4mm``; :mod:`apa.models.builtin`), and
loaded by :func:`apa.models.loading.load_model` into a
:class:`~apa.models.loading.LoadedModel`, optionally with a LoRA adapter.

Two families are supported: Qwen2-Audio (``Qwen2AudioForConditionalGeneration``) and
Phi-4-multimodal (transformers' native ``Phi4MultimodalForCausalLM``).

Importing this package does not import torch or transformers; its modules do.
"""
