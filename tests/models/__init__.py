"""Tests of model loading: the cache, the built-in tiny models and ``load_model``."""
