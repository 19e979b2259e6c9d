"""apa.phones: the phone inventory, typed in one place and used everywhere else."""

from __future__ import annotations

import re
from pathlib import Path

from apa.gop.aligner import ARPABET
from apa.lmm.vocab import PHONES as VOCAB_PHONES
from apa.phones import CONSONANTS, PHONES, STRESS_DIGITS, STRESSED_VOWELS, VOWELS
from apa.text import strip_stress

ROOT = Path(__file__).resolve().parents[1]
# three or more phones of the inventory in a row, as a string or as a list of strings
TYPED_RUN = re.compile(r"""\bAA\W{1,4}AE\W{1,4}AH\b""")


def test_inventory_is_cmudicts_39_phones_with_15_stressed_vowels():
    assert len(PHONES) == len(set(PHONES)) == 39 and list(PHONES) == sorted(PHONES)
    assert set(VOWELS) | set(CONSONANTS) == set(PHONES) and not set(VOWELS) & set(CONSONANTS)
    assert len(VOWELS) == 15 and STRESS_DIGITS == "012"
    assert len(STRESSED_VOWELS) == 45 and {strip_stress(p) for p in STRESSED_VOWELS} == set(VOWELS)


def test_the_layers_use_the_one_inventory():
    assert ARPABET == set(PHONES)
    assert VOCAB_PHONES is PHONES


def test_the_inventory_is_typed_nowhere_else():
    typed = [
        str(path.relative_to(ROOT))
        for folder in ("apa", "ray_jobs", "serve", "tests", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != ROOT / "apa" / "phones.py" and TYPED_RUN.search(path.read_text())
    ]
    assert typed == [], f"ARPAbet phones typed outside apa/phones.py: {typed}"
