"""Factories and hypothesis strategies for tests of apa and of code built on it.

``apa.testing.strategies`` needs ``hypothesis`` (the ``test`` extra)."""
