"""The phone inventory: the one place the ARPAbet phones and vowels are typed.

It is CMUdict's: 39 ARPAbet phones (15 vowels, 24 consonants), a vowel carrying a stress
digit (``0`` unstressed, ``1`` primary, ``2`` secondary) in a canonical phone (``AO1``) and
none in a pronounced one (``AO``). Speechocean762, the lexicon, pocketsphinx's US-English
acoustic model (the GOP aligner), the LMMs' answer vocabulary and the synthetic corpus all
use this set. It sits at the bottom layer and imports nothing from ``apa``.

>>> len(PHONES), len(VOWELS), len(CONSONANTS)
(39, 15, 24)
>>> STRESSED_VOWELS[:3]
('AA0', 'AA1', 'AA2')
"""

from __future__ import annotations

PHONES: tuple[str, ...] = tuple(
    (
        "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
        "UH UW V W Y Z ZH"
    ).split()
)
"""The 39 ARPAbet phones of CMUdict, without stress digits, in alphabetical order."""

VOWELS: tuple[str, ...] = tuple("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())
"""The 15 vowels of :data:`PHONES` (in its order): the phones that carry a stress digit."""

CONSONANTS: tuple[str, ...] = tuple(p for p in PHONES if p not in VOWELS)
"""The 24 consonants of :data:`PHONES` (in its order)."""

STRESS_DIGITS = "012"
"""A vowel's stress digit in a canonical phone: 0 unstressed, 1 primary, 2 secondary."""

STRESSED_VOWELS: tuple[str, ...] = tuple(v + s for v in VOWELS for s in STRESS_DIGITS)
"""Every vowel with every stress digit: ``AA0 AA1 AA2 AE0 ... UW2``."""
