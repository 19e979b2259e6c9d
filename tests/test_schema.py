import math

import pytest
from pydantic import ValidationError

from apa.schema import (
    Assessment,
    ErrorRecord,
    InsertedPhone,
    PhoneAssessment,
    SentenceScores,
    Utterance,
    WordAssessment,
)


def _sentence(**overrides: float | None) -> dict:
    scores = dict(accuracy=8.0, fluency=9.0, prosody=9.0, completeness=10.0, total=8.0)
    scores.update(overrides)
    return scores


def _word(text: str = "CALL", **overrides) -> dict:
    word = dict(
        text=text,
        accuracy=10.0,
        stress=10.0,
        total=10.0,
        phones=[dict(phone="K", accuracy=2.0), dict(phone="AO0", accuracy=1.8)],
    )
    word.update(overrides)
    return word


def test_valid_assessment_roundtrips_through_json() -> None:
    a = Assessment(
        utterance_id="000010011",
        text="we call",
        sentence=_sentence(),
        words=[_word("WE"), _word("call")],
    )
    assert Assessment.model_validate_json(a.model_dump_json()) == a


@pytest.mark.parametrize(
    ("field", "value", "location"),
    [
        ("fluency", 10.5, "sentence.fluency"),
        ("accuracy", -0.1, "sentence.accuracy"),
        ("prosody", math.nan, "sentence.prosody"),
        ("total", math.inf, "sentence.total"),
    ],
)
def test_out_of_range_sentence_score_names_the_field(field, value, location) -> None:
    with pytest.raises(ValidationError) as err:
        Assessment(utterance_id="u", text="x", sentence=_sentence(**{field: value}))
    assert location in str(err.value)


def test_missing_score_is_rejected_but_explicit_none_means_not_estimated() -> None:
    scores = _sentence()
    del scores["prosody"]
    with pytest.raises(ValidationError) as err:
        SentenceScores(**scores)
    assert "prosody" in str(err.value) and "Field required" in str(err.value)
    assert SentenceScores(**_sentence(prosody=None)).prosody is None


def test_phone_score_range_names_the_nested_field() -> None:
    word = _word()
    word["phones"][1]["accuracy"] = 2.5
    with pytest.raises(ValidationError) as err:
        Assessment(utterance_id="u", text="call", sentence=_sentence(), words=[word])
    assert "words.0.phones.1.accuracy" in str(err.value)


def test_word_score_range_names_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        WordAssessment(**_word(stress=11))
    assert "stress" in str(err.value)


def test_words_must_follow_the_reference_text() -> None:
    with pytest.raises(ValidationError, match="do not follow the reference text"):
        Assessment(utterance_id="u", text="we call", sentence=_sentence(), words=[_word("WE")])


def test_substitution_deletion_and_insertion() -> None:
    sub = PhoneAssessment(phone="B", accuracy=0.0, pronounced="P", error="substitution")
    assert sub.pronounced == "P"
    PhoneAssessment(phone="EH0", accuracy=0.0, error="deletion")
    with pytest.raises(ValidationError, match="names the pronounced phone"):
        PhoneAssessment(phone="B", accuracy=0.0, error="substitution")
    with pytest.raises(ValidationError, match="is the canonical one"):
        PhoneAssessment(phone="AO0", accuracy=0.0, pronounced="AO1", error="substitution")
    with pytest.raises(ValidationError, match="only for a substitution"):
        PhoneAssessment(phone="B", accuracy=0.0, pronounced="P", error="deletion")
    word = WordAssessment(**_word(insertions=[InsertedPhone(position=2, phone="L")]))
    assert word.insertions[0].phone == "L"
    with pytest.raises(ValidationError, match="insertion at position 3"):
        WordAssessment(**_word(insertions=[InsertedPhone(position=3, phone="L")]))


def test_timings_must_be_ordered_pairs() -> None:
    PhoneAssessment(phone="K", accuracy=2.0, start=0.1, end=0.2)
    with pytest.raises(ValidationError, match="before start"):
        PhoneAssessment(phone="K", accuracy=2.0, start=0.3, end=0.2)
    with pytest.raises(ValidationError, match="go together"):
        PhoneAssessment(phone="K", accuracy=2.0, start=0.3)


def test_utterance_checks_phones_against_words() -> None:
    u = Utterance(id="u1", text="We call", audio="a.wav", phones=[["W", "IY0"], ["K", "AO0", "L"]])
    assert u.words == ["WE", "CALL"]
    with pytest.raises(ValidationError, match="phones give 1 words but the text has 2"):
        Utterance(id="u1", text="We call", phones=[["W", "IY0"]])
    with pytest.raises(ValidationError, match="has no words"):
        Utterance(id="u1", text=" ... ")
    with pytest.raises(ValidationError) as err:
        Utterance(id="has space", text="x")
    assert "id" in str(err.value)


def test_utterance_human_scores_must_be_its_own() -> None:
    human = Assessment(utterance_id="other", text="x", sentence=_sentence())
    with pytest.raises(ValidationError, match="human scores are for 'other'"):
        Utterance(id="u1", text="x", human=human)


def test_error_record_reason_starts_with_stage() -> None:
    ErrorRecord(utterance_id="u", stage="audio", reason="audio.too_long", message="31 s > 30 s")
    with pytest.raises(ValidationError, match="does not start with stage"):
        ErrorRecord(utterance_id="u", stage="input", reason="audio.too_long", message="")


def test_records_are_immutable() -> None:
    s = SentenceScores(**_sentence())
    with pytest.raises(ValidationError):
        s.accuracy = 1.0  # type: ignore[misc]
