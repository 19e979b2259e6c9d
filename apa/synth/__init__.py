"""Synthetic speech (espeak-ng) for tests and the synthetic corpus."""
