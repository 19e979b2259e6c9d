"""The answer format: template from the reference, render, parse, round trips, errors."""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apa.errors import ApaError
from apa.lmm.answer import (
    AnswerError,
    AnswerTemplate,
    Slot,
    expected_score,
    parse_distributions,
    parse_text,
    render,
    soft_target,
)
from apa.lmm.vocab import ANSWER_TOKENS, NA, PRONOUNCED_TOKENS, SCORE_TOKENS, SLOT
from apa.schema import (
    Assessment,
    InsertedPhone,
    PhoneAssessment,
    SentenceScores,
    WordAssessment,
)
from apa.testing.strategies import assessments

DOCS = Path(__file__).resolve().parents[2] / "docs" / "answer-format.md"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
in_scope = assessments(allow_none=True, insertions=False).map(
    lambda a: a.model_copy(update={"scoring_path": None})
)
"""The answer format's scope: no inserted phones, and no scoring path (the scorer sets it
after reading the answer)."""


def bear() -> Assessment:
    """The example of docs/answer-format.md."""
    p = PhoneAssessment
    return Assessment(
        utterance_id="000010011",
        text="WE CALL IT BEAR",
        sentence=SentenceScores(
            accuracy=8.0, fluency=9.0, prosody=8.6, completeness=10.0, total=8.4
        ),
        words=[
            WordAssessment(
                text="WE", accuracy=10.0, stress=10.0, total=10.0,
                phones=[p(phone="W", accuracy=2.0), p(phone="IY0", accuracy=2.0)],
            ),
            WordAssessment(
                text="CALL", accuracy=6.4, stress=10.0, total=6.6,
                phones=[
                    p(phone="K", accuracy=2.0),
                    p(phone="AO0", accuracy=1.2, error="substitution", pronounced="OW"),
                    p(phone="L", accuracy=1.6),
                ],
            ),
            WordAssessment(
                text="IT", accuracy=8.0, stress=10.0, total=8.0,
                phones=[p(phone="IH0", accuracy=2.0), p(phone="T", accuracy=0.4, error="deletion")],
            ),
            WordAssessment(
                text="BEAR", accuracy=7.8, stress=10.0, total=7.8,
                phones=[
                    p(phone="B", accuracy=0.8, error="substitution", pronounced="P"),
                    p(phone="EH0", accuracy=1.8),
                    p(phone="R", accuracy=2.0),
                ],
            ),
        ],
    )  # fmt: skip


def meta(a: Assessment) -> dict:
    return {
        "utterance_id": a.utterance_id,
        "reference_text": a.text,
        "model": a.model,
        "model_is_random": a.model_is_random,
    }


def assert_close(got: object, want: object, path: str = "") -> None:
    """Equal, floats to 1e-9."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), path
        for key in want:
            assert_close(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{path}.{k}")
    elif isinstance(want, float):
        assert isinstance(got, float) and math.isclose(got, want, rel_tol=0, abs_tol=1e-9), (
            f"{path}: {got!r} != {want!r}"
        )
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def half_up(x: float | None) -> float | None:
    if x is None:
        return None
    return float(Decimal(x).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def quantised(a: Assessment) -> Assessment:
    """``a`` with every score rounded to the nearest integer, halves up."""
    data = a.model_dump()
    for aspect, value in data["sentence"].items():
        data["sentence"][aspect] = half_up(value)
    for word in data["words"]:
        for aspect in ("accuracy", "stress", "total"):
            word[aspect] = half_up(word[aspect])
        for phone in word["phones"]:
            phone["accuracy"] = half_up(phone["accuracy"])
    return Assessment.model_validate(data)


# --- the documented example --------------------------------------------------------------


def test_documented_example_is_what_render_writes() -> None:
    answer = render(bear())
    docs = DOCS.read_text()
    assert f"```\n{answer.text}\n```" in docs
    assert f"```\n{answer.template.placeholder_text()}\n```" in docs
    assert answer.text.splitlines()[1] == (
        "CALL: K<|s2|><|ok|> AO0<|s1|><|ph:OW|> L<|s2|><|ok|> "
        "| accuracy<|s6|> stress<|s10|> total<|s7|>"
    )
    assert len(answer.template.slots) == 37
    slots = answer.template.slots
    assert [slots[k].location for k in (0, 1, 4, 36)] == [
        "words.0.phones.0.accuracy",
        "words.0.phones.0.pronounced",
        "words.0.accuracy",
        "sentence.total",
    ]
    call_accuracy = slots.index(Slot("score10", "word", "accuracy", 1))
    assert answer.targets[call_accuracy] == pytest.approx([0] * 6 + [0.6, 0.4] + [0] * 3)
    ao = slots.index(Slot("score2", "phone", "accuracy", 1, 1))
    assert answer.targets[ao] == pytest.approx([0.0, 0.8, 0.2])
    assert answer.targets[ao + 1] == tuple(float(t == "<|ph:OW|>") for t in PRONOUNCED_TOKENS)


def test_example_round_trips() -> None:
    a = bear()
    answer = render(a)
    assert_close(parse_distributions(answer.template, answer.targets, **meta(a)).model_dump(),
                 a.model_dump())  # fmt: skip
    assert parse_text(answer.template, answer.text, **meta(a)) == quantised(a)


# --- the template ------------------------------------------------------------------------


@FAST
@given(in_scope)
def test_slot_count_order_and_template_from_reference_only(a: Assessment) -> None:
    template = render(a).template
    n_phones = sum(len(w.phones) for w in a.words)
    assert len(template.slots) == 5 + 3 * len(a.words) + 2 * n_phones
    assert template.slots[-1] == Slot("score10", "sentence", "total")
    assert [s.aspect for s in template.slots[-5:]] == [
        "accuracy", "fluency", "prosody", "completeness", "total"
    ]  # fmt: skip
    # bottom-up: a word's phone slots, then its word slots; all words before the sentence
    rank = {"phone": 0, "word": 1}
    keys = [(s.word, rank[s.level]) for s in template.slots if s.level != "sentence"]
    assert keys == sorted(keys)
    assert all(s.level == "sentence" for s in template.slots[len(keys) :])
    # a function of the reference only
    same = AnswerTemplate.from_reference(
        [w.text for w in a.words], [[p.phone for p in w.phones] for w in a.words]
    )
    assert same == template and hash(same) == hash(template)
    assert same.segments == template.segments
    placeholders = template.placeholder_text()
    assert placeholders.count(SLOT) == len(template.slots)
    assert "<|" not in "".join(s for s in template.segments if isinstance(s, str))


@settings(FAST, max_examples=50)
@given(st.data())
def test_two_assessments_of_one_reference_share_the_structure(data: st.DataObject) -> None:
    a = data.draw(in_scope)
    other = data.draw(in_scope)
    # other's scores, a's words and phones
    b = a.model_copy(
        update={
            "sentence": other.sentence,
            "words": [
                w.model_copy(update={"accuracy": o.accuracy, "stress": o.stress, "total": o.total})
                for w, o in zip(a.words, other.words * len(a.words), strict=False)
            ],
        }
    )
    ra, rb = render(a), render(b)
    assert ra.template == rb.template
    structure = re.compile("|".join(re.escape(t) for t in ANSWER_TOKENS))
    assert structure.sub("#", ra.text) == structure.sub("#", rb.text)
    assert structure.sub("#", ra.text) == structure.sub("#", ra.template.placeholder_text())


def test_allowed_tokens_per_kind() -> None:
    template = render(bear()).template
    assert template.allowed_tokens(0) == SCORE_TOKENS[:3]
    assert template.allowed_tokens(1) == PRONOUNCED_TOKENS and len(PRONOUNCED_TOKENS) == 42
    assert template.allowed_tokens(template.slots[-1]) == SCORE_TOKENS
    assert all(NA not in template.allowed_tokens(s) for s in template.slots)


@pytest.mark.parametrize(
    ("words", "phones", "message"),
    [
        (["WE", "IT"], [["W"]], "2 words"),
        (["WE IT"], [["W"]], "whitespace"),
        (["WE"], [["W", ""]], "non-empty"),
        (["A<|s1|>"], [["W"]], "answer token"),
        (["WE"], [["<|ok|>"]], "answer token"),
    ],
)
def test_template_refuses_bad_references(words, phones, message) -> None:
    with pytest.raises(ValueError, match=message):
        AnswerTemplate.from_reference(words, phones)


def test_sentence_only_assessment() -> None:
    a = bear().model_copy(update={"words": []})
    answer = render(a)
    assert answer.text == (
        "sentence: accuracy<|s8|> fluency<|s9|> prosody<|s9|> completeness<|s10|> total<|s8|>"
    )
    assert_close(parse_distributions(answer.template, answer.targets, **meta(a)).model_dump(),
                 a.model_dump())  # fmt: skip
    with pytest.raises(ValueError, match="reference_text"):
        parse_text(answer.template, answer.text, utterance_id="u")


# --- round trips -------------------------------------------------------------------------


@FAST
@given(in_scope)
def test_distributions_round_trip(a: Assessment) -> None:
    answer = render(a)
    back = parse_distributions(answer.template, answer.targets, **meta(a))
    assert_close(back.model_dump(), a.model_dump())


@FAST
@given(in_scope)
def test_text_round_trip_gives_the_quantised_assessment(a: Assessment) -> None:
    answer = render(a)
    assert answer.template.read_text(answer.text) == answer.tokens
    assert answer.template.render_text(answer.tokens) == answer.text
    assert parse_text(answer.template, answer.text, **meta(a)) == quantised(a)
    greedy = parse_distributions(answer.template, answer.targets, greedy=True, **meta(a))
    assert greedy == quantised(a)


@FAST
@given(st.floats(0, 10), st.sampled_from([2, 10]))
def test_soft_target_is_a_two_point_distribution_with_mean_x(x: float, high: int) -> None:
    x = min(x, high)
    probs = soft_target(x, high)
    assert len(probs) == high + 1 and all(p >= 0 for p in probs)
    assert math.fsum(probs) == pytest.approx(1.0, abs=1e-15)
    support = [k for k, p in enumerate(probs) if p > 0]
    assert len(support) <= 2 and (len(support) < 2 or support[1] == support[0] + 1)
    assert abs(expected_score(probs) - x) <= 1e-12


def test_soft_target_refuses_out_of_range() -> None:
    for bad in (-0.5, 2.5, math.nan, math.inf):
        with pytest.raises(ValueError):
            soft_target(bad, 2)


def test_none_scores_render_as_na_and_are_masked() -> None:
    a = bear().model_copy(update={"sentence": bear().sentence.model_copy(update={"prosody": None})})
    answer = render(a)
    assert "prosody<|na|>" in answer.text
    assert answer.targets[-3] is None and answer.tokens[-3] == NA
    assert parse_text(answer.template, answer.text, **meta(a)).sentence.prosody is None


# --- scope: what v1 does not carry ---------------------------------------------------------


def test_strict_render_refuses_insertions_timings_and_lossy_phones() -> None:
    a = bear()
    words = list(a.words)
    with_insertion = words[0].model_copy(
        update={"insertions": [InsertedPhone(position=0, phone="AH")]}
    )
    timed = words[0].model_copy(update={"start": 0.1, "end": 0.4})
    b = words[3].phones[0]
    mark = words[3].model_copy(
        update={"phones": [b.model_copy(update={"pronounced": "R*"}), *words[3].phones[1:]]}
    )
    stressed = words[3].model_copy(
        update={"phones": [b.model_copy(update={"pronounced": "P0"}), *words[3].phones[1:]]}
    )
    w = words[1].phones[0]
    timed_phone = words[1].model_copy(
        update={"phones": [w.model_copy(update={"start": 0.1, "end": 0.2}), *words[1].phones[1:]]}
    )
    for k, word, message, pronounced in [
        (0, with_insertion, "insertions or timings", "P"),
        (0, timed, "insertions or timings", "P"),
        (1, timed_phone, "insertions or timings", "P"),
        (3, mark, "'R\\*' would be read back as '<unk>'", "<unk>"),
        (3, stressed, "'P0' would be read back as 'P'", "P"),
    ]:
        lossy = a.model_copy(update={"words": [*words[:k], word, *words[k + 1 :]]})
        with pytest.raises(ValueError, match=message):
            render(lossy)
        answer = render(lossy, strict=False)
        back = parse_text(answer.template, answer.text, **meta(a))
        assert back.words[0].insertions == [] and back.words[0].start is None
        assert back.words[1].phones[0].start is None
        assert back.words[3].phones[0].pronounced == pronounced


def test_render_against_the_prompt_template() -> None:
    a = bear()
    prompt = AnswerTemplate.from_reference(
        ["WE", "CALL", "IT", "BEAR"],
        [["W", "IY1"], ["K", "AO1", "L"], ["IH0", "T"], ["B", "EH1", "R"]],
    )
    answer = render(a, template=prompt)
    assert answer.template is prompt and "AO1<|s1|><|ph:OW|>" in answer.text
    assert answer.tokens == render(a).tokens
    other = AnswerTemplate.from_reference(["WE", "CALL"], [["W", "IY0"], ["K", "AO0", "L"]])
    with pytest.raises(ValueError, match="does not fit"):
        render(a, template=other)


# --- pronounced phones ---------------------------------------------------------------------


def tokens_with(tokens: dict[int, str]) -> list[str]:
    values = list(render(bear()).tokens)
    for k, token in tokens.items():
        values[k] = token
    return values


def test_canonical_phone_token_is_not_a_substitution() -> None:
    a = bear()
    template = render(a).template
    w = template.slots.index(Slot("pronounced", "phone", "pronounced", 0, 0))
    text = template.render_text(tokens_with({w: "<|ph:W|>", w + 2: "<|ph:IY|>"}))
    back = parse_text(template, text, **meta(a))
    assert back.words[0].phones[0].error is None and back.words[0].phones[0].pronounced is None
    assert back.words[0].phones[1].error is None
    # in distributions the canonical phone's mass joins <|ok|>
    targets = list(render(a).targets)
    targets[w] = {"<|ok|>": 0.3, "<|ph:W|>": 0.3, "<|ph:V|>": 0.4}
    assert parse_distributions(template, targets, **meta(a)).words[0].phones[0].error is None
    targets[w] = {"<|ok|>": 0.3, "<|ph:W|>": 0.05, "<|ph:V|>": 0.4, "<|del|>": 0.25}
    phone = parse_distributions(template, targets, **meta(a)).words[0].phones[0]
    assert (phone.error, phone.pronounced) == ("substitution", "V")
    targets[w] = {"<|del|>": 1.0}
    assert parse_distributions(template, targets, **meta(a)).words[0].phones[0].error == "deletion"
    targets[w] = {"<|ph:unk|>": 1.0}
    assert (
        parse_distributions(template, targets, **meta(a)).words[0].phones[0].pronounced == "<unk>"
    )


# --- distributions -------------------------------------------------------------------------


def test_distributions_unnormalised_mappings_greedy_and_bad_values() -> None:
    a = bear()
    answer = render(a)
    template = answer.template
    targets = list(answer.targets)
    # unnormalised (probabilities of the whole vocabulary restricted to the slot)
    targets[-1] = [0.0] * 8 + [0.06, 0.04, 0.0]
    assert parse_distributions(template, targets, **meta(a)).sentence.total == pytest.approx(8.4)
    targets[-1] = {"<|s3|>": 0.5, "<|s4|>": 0.5}
    assert parse_distributions(template, targets, **meta(a)).sentence.total == pytest.approx(3.5)
    assert parse_distributions(template, targets, greedy=True, **meta(a)).sentence.total == 4.0
    targets[-1] = None
    assert parse_distributions(template, targets, **meta(a)).sentence.total is None
    for bad in ([math.nan] + [0.0] * 10, [-0.1] + [0.1] * 10, [0.0] * 11, [math.inf] * 11):
        targets[-1] = bad
        with pytest.raises(AnswerError) as caught:
            parse_distributions(template, targets, **meta(a))
        assert caught.value.reason == "answer.invalid_distribution"
    for bad in ([0.5, 0.5], {"<|ok|>": 1.0}):
        targets[-1] = bad
        with pytest.raises(ValueError, match="sentence.total"):
            parse_distributions(template, targets, **meta(a))
    with pytest.raises(ValueError, match="36 distributions for 37 slots"):
        parse_distributions(template, answer.targets[:-1], **meta(a))
    targets = list(answer.targets)
    targets[1] = None
    with pytest.raises(ValueError, match="needs a distribution"):
        parse_distributions(template, targets, **meta(a))


def test_distributions_take_numpy_and_torch_vectors() -> None:
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    a = bear()
    answer = render(a)
    as_numpy = [None if t is None else np.array(t) for t in answer.targets]
    as_torch = [None if t is None else torch.tensor(t, dtype=torch.float64) for t in answer.targets]
    want = parse_distributions(answer.template, answer.targets, **meta(a))
    assert parse_distributions(answer.template, as_numpy, **meta(a)) == want
    assert parse_distributions(answer.template, as_torch, **meta(a)) == want


# --- malformed answers ---------------------------------------------------------------------


def reason_of(template: AnswerTemplate, text: str) -> str:
    with pytest.raises(AnswerError) as caught:
        parse_text(template, text, utterance_id="u", reference_text="WE CALL IT BEAR")
    assert caught.value.raw == text
    return caught.value.reason


def test_malformed_answers() -> None:
    answer = render(bear())
    t, text = answer.template, answer.text
    assert reason_of(t, "") == "answer.truncated"
    assert reason_of(t, text[:-3]) == "answer.truncated"
    assert reason_of(t, text.split("\n")[0]) == "answer.truncated"
    assert reason_of(t, text + " thanks") == "answer.malformed"
    assert reason_of(t, text.replace("CALL:", "CAL:")) == "answer.malformed"
    assert reason_of(t, text.replace("W<|s2|>", "W <|s2|>")) == "answer.malformed"
    assert reason_of(t, text.replace("W<|s2|>", "W2")) == "answer.malformed"
    assert reason_of(t, text.replace("W<|s2|>", "W<|s7|>")) == "answer.invalid_value"
    assert reason_of(t, text.replace("W<|s2|><|ok|>", "W<|s2|><|s2|>")) == "answer.invalid_value"
    assert reason_of(t, text.replace("W<|s2|>", "W<|ok|>")) == "answer.invalid_value"
    assert reason_of(t, t.placeholder_text()) == "answer.invalid_value"
    assert reason_of(t, text.replace("W<|s2|>", "W<|zz|>")) == "answer.invalid_value"
    # surrounding whitespace is fine
    spaced = parse_text(t, f"\n  {text}\n", utterance_id="u", reference_text="WE CALL IT BEAR")
    assert spaced == parse_text(t, text, utterance_id="u", reference_text="WE CALL IT BEAR")


def test_answer_error_is_an_apa_error_with_a_record() -> None:
    template = render(bear()).template
    with pytest.raises(AnswerError) as caught:
        template.read_text("WE: W<|s2|><|ok|> IY0<|s9|>")
    error = caught.value
    assert isinstance(error, ApaError) and error.stage == "answer"
    assert error.reason == "answer.invalid_value" and error.position == len("WE: W<|s2|><|ok|> IY0")
    record = error.record("u1")
    assert (record.stage, record.reason, record.raw) == (
        "answer", "answer.invalid_value", "WE: W<|s2|><|ok|> IY0<|s9|>"
    )  # fmt: skip


@FAST
@given(in_scope, st.data())
def test_every_truncation_is_reported_as_truncated(a: Assessment, data: st.DataObject) -> None:
    answer = render(a)
    cut = data.draw(st.integers(0, len(answer.text) - 1))
    assert reason_of(answer.template, answer.text[:cut]) == "answer.truncated"


garbage = st.lists(
    st.sampled_from(list("<|>: \n\t*0123456789sphAEIOUWTKL|") + list(ANSWER_TOKENS)),
    max_size=30,
).map("".join) | st.text(max_size=40)


@FAST
@given(in_scope, st.data())
def test_fuzzed_text_gives_an_assessment_or_an_answer_error(
    a: Assessment, data: st.DataObject
) -> None:
    answer = render(a)
    text = answer.text
    mutation = data.draw(st.sampled_from(["garbage", "insert", "delete", "replace", "swap"]))
    if mutation == "garbage":
        text = data.draw(garbage)
    else:
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 12)))
        piece = data.draw(garbage)
        text = {
            "insert": text[:i] + piece + text[i:],
            "delete": text[:i] + text[j:],
            "replace": text[:i] + piece + text[j:],
            "swap": text[:i] + text[j:] + text[i:j],
        }[mutation]
    try:
        back = parse_text(answer.template, text, **meta(a))
    except AnswerError as error:
        assert error.raw == text and error.reason.startswith("answer.")
        assert error.reason in {"answer.truncated", "answer.malformed", "answer.invalid_value"}
    else:
        assert isinstance(back, Assessment)
        assert answer.template.render_text(answer.template.read_text(text)) == text.strip()
