"""The built-in tiny models' scores on four sample utterances, pinned.

The engine is rebuilt for speed now and then (stages, batching, features on the device,
constrained generation's feeds); none of that may change a score. This test holds the scores
that the tiny models (built from their recipes on first use, random weights) give today, in
both decoding modes, to 1e-4: a change in the engine, the prompts, the answer format or the
tiny models' recipes that moves a score fails here, and is then either a bug or a change to
explain in its commit (and the file is rewritten)::

    .venv/bin/python -m tests.engine.test_pinned_scores --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from apa.data.speechocean762 import prepare_speechocean762
from apa.engine.scorer import LmmScorer, load_lmm_scorer
from apa.models.families import TINY_PHI4MM, TINY_QWEN2_AUDIO
from apa.models.loading import LoadedModel
from apa.prepare import prepare
from apa.schema import Assessment
from tests.conftest import SAMPLE

PINNED = Path(__file__).with_name("pinned_scores.json")
SETUPS = [
    (model, mode, prompt)
    for model in (TINY_QWEN2_AUDIO, TINY_PHI4MM)
    for mode, prompt in (("one-pass", "brief"), ("generate", "rubric"))
]


def flat(assessment: Assessment) -> dict:
    """Every score and phone the assessment holds, in order."""
    s = assessment.sentence
    return {
        "sentence": [s.accuracy, s.fluency, s.prosody, s.completeness, s.total],
        "words": [[w.accuracy, w.stress, w.total] for w in assessment.words],
        "phones": [[p.accuracy, p.pronounced] for w in assessment.words for p in w.phones],
    }


def scores(loaded: LoadedModel, mode: str, prompt: str, utterances: list) -> dict[str, dict]:
    """The first four utterances' scores."""
    results = LmmScorer(loaded, mode=mode, prompt=prompt).score(
        [prepare(u) for u in utterances[:4]]
    )
    assert all(isinstance(r, Assessment) for r in results), results
    return {r.utterance_id: flat(r) for r in results}


def close(got, want, path: str = "") -> list[str]:
    """Where ``got`` differs from ``want`` (numbers by more than 1e-4)."""
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: {got!r} != {want!r}"]
        return [
            d
            for i, (g, w) in enumerate(zip(got, want, strict=True))
            for d in close(g, w, f"{path}[{i}]")
        ]
    if isinstance(want, dict):
        if set(got) != set(want):
            return [f"{path}: keys {sorted(got)} != {sorted(want)}"]
        return [d for k in want for d in close(got[k], want[k], f"{path}.{k}")]
    if isinstance(want, float) and isinstance(got, (int, float)):
        return [] if abs(got - want) <= 1e-4 else [f"{path}: {got} != {want}"]
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


@pytest.mark.parametrize(("model", "mode", "prompt"), SETUPS)
def test_tiny_model_scores_are_unchanged(
    loaded_models, test_utterances, model, mode, prompt
) -> None:
    """The models are built from their recipes into this session's cache (as on a new
    machine), so a change in how they are built shows here too."""
    want = json.loads(PINNED.read_text())[f"{model} {mode} {prompt}"]
    differences = close(scores(loaded_models[model], mode, prompt, test_utterances), want)
    assert not differences, f"{len(differences)} scores moved, first: {differences[:5]}"


def test_the_comparison_sees_a_moved_score() -> None:
    want = {"u": {"sentence": [7.5, 8.0], "phones": [[1.9, None], [2.0, "AH"]]}}
    assert close(want, want) == []
    assert (
        close({"u": {"sentence": [7.5, 8.00009], "phones": [[1.9, None], [2.0, "AH"]]}}, want) == []
    )
    assert close({"u": {"sentence": [7.5, 8.001], "phones": [[1.9, None], [2.0, "AH"]]}}, want)
    assert close({"u": {"sentence": [7.5, 8.0], "phones": [[1.9, None], [2.0, "IH"]]}}, want)
    assert close({"u": {"sentence": [7.5, 8.0], "phones": [[1.9, None]]}}, want)


if __name__ == "__main__" and "--write" in sys.argv:
    utterances = prepare_speechocean762(SAMPLE, ["test"]).utterances
    lines = []
    for model, mode, prompt in SETUPS:
        table = scores(load_lmm_scorer(model, device="cpu").loaded, mode, prompt, utterances)
        table = json.loads(json.dumps(table), parse_float=lambda s: round(float(s), 6))
        body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in table.items())
        lines.append(f" {json.dumps(f'{model} {mode} {prompt}')}: {{\n{body}\n }}")
    PINNED.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"wrote {PINNED}")
