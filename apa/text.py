"""Reference text normalisation: the one place that decides what the words of a sentence are.

>>> words_of("Mark is going to see the elephant.")
['MARK', 'IS', 'GOING', 'TO', 'SEE', 'THE', 'ELEPHANT']
>>> words_of("  it's  \\"OK\\", Tom! ")
["IT'S", 'OK', 'TOM']
"""

import re

from apa.phones import STRESS_DIGITS

# Punctuation that may cling to a word's edges; apostrophes inside a word are kept ("IT'S").
_EDGE_PUNCTUATION = re.compile(r"^[^\w']+|[^\w']+$")


DEFAULT_MAX_TEXT_CHARS = 1000
"""Longest reference text scored, in characters. A read sentence is well under 300; the work
of scoring grows with the text (a 5,000-character text took minutes and gigabytes for one
row), so a longer one is refused as ``input.text_too_long`` before any of it is done."""


def normalize_word(word: str) -> str:
    """Upper-case a word and strip punctuation from its edges (and stray edge apostrophes)."""
    return _EDGE_PUNCTUATION.sub("", word).strip("'").upper()


def words_of(text: str) -> list[str]:
    """The words of a reference text, normalised; tokens that are only punctuation vanish."""
    words = (normalize_word(token) for token in text.split())
    return [w for w in words if w]


def strip_stress(phone: str) -> str:
    """ARPAbet phone without its stress digit: ``AO0`` -> ``AO``.

    >>> strip_stress("AO1"), strip_stress("K")
    ('AO', 'K')
    """
    return phone.rstrip(STRESS_DIGITS)
