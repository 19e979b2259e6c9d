"""LoRA fine-tuning of the audio LMMs in the one-pass answer format (``apa finetune``).

:class:`~apa.finetune.config.TrainConfig` holds every setting; :func:`~apa.finetune.loop.finetune`
runs the loop (standalone, or inside a Ray Train worker through
:class:`~apa.finetune.loop.TrainHooks`); ``docs/finetuning.md`` describes the recipe.
"""
