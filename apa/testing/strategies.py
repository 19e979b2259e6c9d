"""Hypothesis strategies that draw valid records of the score schema.

>>> from hypothesis import given
>>> @given(assessments())
... def roundtrips(a):
...     assert Assessment.model_validate_json(a.model_dump_json()) == a
"""

from __future__ import annotations

from hypothesis import strategies as st

from apa.phones import PHONES, STRESS_DIGITS, VOWELS
from apa.schema import (
    Assessment,
    InsertedPhone,
    PhoneAssessment,
    SentenceScores,
    WordAssessment,
)
from apa.text import strip_stress

ARPABET = list(PHONES)


def _score(high: float, *, allow_none: bool) -> st.SearchStrategy[float | None]:
    value = st.floats(min_value=0.0, max_value=high, allow_nan=False, allow_infinity=False)
    return st.one_of(st.none(), value) if allow_none else value


@st.composite
def canonical_phones(draw: st.DrawFn) -> str:
    phone = draw(st.sampled_from(ARPABET))
    return phone + draw(st.sampled_from(STRESS_DIGITS)) if phone in VOWELS else phone


@st.composite
def phone_assessments(draw: st.DrawFn, *, allow_none: bool = False) -> PhoneAssessment:
    phone = draw(canonical_phones())
    error = draw(st.sampled_from([None, None, "substitution", "deletion"]))
    pronounced = None
    if error == "substitution":
        pronounced = draw(
            st.sampled_from([p for p in ARPABET if p != strip_stress(phone)] + ["<unk>"])
        )
    return PhoneAssessment(
        phone=phone,
        accuracy=draw(_score(2.0, allow_none=allow_none)),
        pronounced=pronounced,
        error=error,
    )


@st.composite
def word_assessments(
    draw: st.DrawFn, text: str, *, allow_none: bool = False, insertions: bool = True
) -> WordAssessment:
    """A valid assessment of word ``text`` with 1-6 phones; ``insertions=False`` leaves out
    inserted phones (answer format v1 does not carry them)."""
    phones = draw(st.lists(phone_assessments(allow_none=allow_none), min_size=1, max_size=6))
    inserted = draw(
        st.lists(
            st.builds(
                InsertedPhone,
                position=st.integers(0, len(phones)),
                phone=st.sampled_from(ARPABET),
            ),
            max_size=2 if insertions else 0,
        )
    )
    return WordAssessment(
        text=text,
        accuracy=draw(_score(10.0, allow_none=allow_none)),
        stress=draw(_score(10.0, allow_none=allow_none)),
        total=draw(_score(10.0, allow_none=allow_none)),
        phones=phones,
        insertions=inserted,
    )


WORDS = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8)


@st.composite
def assessments(
    draw: st.DrawFn,
    *,
    utterance_id: str | None = None,
    allow_none: bool = False,
    max_words: int = 6,
    insertions: bool = True,
) -> Assessment:
    """A valid assessment of a random sentence (upper-case words, ARPAbet phones).
    ``insertions=False``: no word has inserted phones."""
    words = draw(st.lists(WORDS, min_size=1, max_size=max_words))
    uid = utterance_id or draw(st.text(alphabet="0123456789abcdef", min_size=1, max_size=10))
    sentence = SentenceScores(
        **{
            aspect: draw(_score(10.0, allow_none=allow_none))
            for aspect in SentenceScores.model_fields
        }
    )
    return Assessment(
        utterance_id=uid,
        text=" ".join(words),
        sentence=sentence,
        words=[
            draw(word_assessments(w, allow_none=allow_none, insertions=insertions)) for w in words
        ],
        model=draw(st.sampled_from([None, "human", "builtin:gop"])),
        model_is_random=draw(st.booleans()),
        scoring_path=draw(st.sampled_from([None, "aligned", "plain"])),
    )
