"""docs/reliability.md lists every kind of the hostile-input catalogue the tests run."""

from __future__ import annotations

from pathlib import Path

from apa.testing.adversarial import kinds

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


def test_every_catalogued_kind_is_documented_with_its_answer() -> None:
    lines = {
        line.split("|")[1].strip(): line
        for line in DOC.read_text().splitlines()
        if line.startswith("| ")
    }
    missing = [k.name for k in kinds() if k.name not in lines]
    assert not missing
    wrong = [k.name for k in kinds() if (k.reason or "scored") not in lines[k.name]]
    assert not wrong
    assert len(kinds()) >= 40
