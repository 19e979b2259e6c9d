"""Human scores to evaluate against, from whatever form they come in.

- ``scores.json`` (or any ``.json`` object keyed by utterance id, upstream schema);
- a Speechocean762 directory (corpus root or split) holding a ``scores.json``;
- a manifest (JSONL/CSV/Parquet, local or ``s3://``) whose rows carry scores.

Entries that cannot be read become error records, counted and reported by the caller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from apa import storage
from apa.data.inputs import read_utterances
from apa.data.scores_json import assessment_from_upstream
from apa.errors import InputError
from apa.schema import Assessment, ErrorRecord


@dataclass(frozen=True)
class HumanScores:
    source: str
    assessments: list[Assessment]
    errors: list[ErrorRecord]
    unscored: int = 0
    """utterances the source holds without human scores"""


def read_scores_json(uri: str) -> HumanScores:
    """An upstream ``scores.json``: ``{utt_id: entry}``."""
    try:
        table = json.loads(storage.read_bytes(uri))
    except json.JSONDecodeError as e:
        raise ValueError(f"{uri} is not valid JSON: {e}") from e
    if not isinstance(table, dict):
        raise ValueError(f"{uri}: expected an object keyed by utterance id")
    assessments, errors = [], []
    for utt_id, entry in table.items():
        try:
            assessments.append(assessment_from_upstream(str(utt_id), entry))
        except InputError as e:
            errors.append(e.record(str(utt_id)))
    return HumanScores(uri, assessments, errors)


def read_human_scores(uri: str) -> HumanScores:
    """Human scores from a ``scores.json``, a Speechocean762 directory, or a manifest."""
    if uri.lower().endswith(".json"):
        return read_scores_json(uri)
    source = read_utterances(uri)
    scored = [u.human for u in source.utterances if u.human is not None]
    unscored = sum(1 for u in source.utterances if u.human is None)
    return HumanScores(uri, scored, source.errors, unscored)
