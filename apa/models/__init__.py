"""Audio LMMs: where a model comes from, how it is loaded, and what differs between families.

A model is named by a Hugging Face Hub id, a local directory, an ``s3://bucket/prefix``
(fetched once into the cache, :mod:`apa.models.cache`) or a built-in tiny model
(``builtin:tiny-qwen2-audio``, ``builtin:tiny-phi4mm``; :mod:`apa.models.builtin`), and
loaded by :func:`apa.models.loading.load_model` into a
:class:`~apa.models.loading.LoadedModel`, optionally with a LoRA adapter (whose card,
``training.json``, is :mod:`apa.models.card`).

One folder per family, each exporting a :class:`~apa.models.family.ModelFamily` (loader,
backend, built-in tiny model, LoRA defaults), listed in the table
:mod:`apa.models.families`: :mod:`apa.models.qwen2_audio` (``Qwen2AudioForConditional
Generation``) and :mod:`apa.models.phi4mm` (transformers' native
``Phi4MultimodalForCausalLM``). :mod:`apa.models.inputs` builds a batch's model inputs the
same way for every family.

Importing this package does not import torch or transformers; its modules do.
"""
