"""Scoring: prepared utterances in, assessments or error records out, one per input, in order."""
