"""The backend-neutral instruction."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings

from apa.engine.scorer import adapter_prompt
from apa.lmm.answer import AnswerTemplate, render
from apa.lmm.prompt import instruction
from apa.models.card import TRAINING_FILE
from apa.schema import SENTENCE_ASPECTS
from apa.testing.strategies import assessments

WORDS = ["WE", "CALL", "IT", "BEAR"]
PHONES = [["W", "IY0"], ["K", "AO0", "L"], ["IH0", "T"], ["B", "EH0", "R"]]


def test_instruction_carries_reference_phones_rubric_and_form() -> None:
    text = instruction("We call it bear.", WORDS, PHONES)
    assert "We call it bear." in text
    for word, phones in zip(WORDS, PHONES, strict=True):
        line = f"{word}: " + " ".join(f"{p}<score><said>" for p in phones)
        assert f"\n{line} | accuracy<score> stress<score> total<score>\n" in text
    form = "sentence: " + " ".join(f"{a}<score>" for a in SENTENCE_ASPECTS)
    assert text.endswith(form)
    for scale in ("Phone accuracy, 0-2", "Word accuracy, 0-10", "Word stress, 0-10"):
        assert scale in text
    for aspect in SENTENCE_ASPECTS:
        assert f"Sentence {aspect}, 0-10" in text
    for token in ("<|s0|>", "<|s10|>", "<|ok|>", "<|del|>", "<|ph:unk|>"):
        assert token in text
    # backend-neutral: no chat markup, no audio placeholder
    assert not re.search(r"<\|(im_start|im_end|AUDIO|audio|user|assistant)\|>", text)
    assert "<|slot|>" not in text


@settings(max_examples=40, deadline=None)
@given(assessments(insertions=False))
def test_the_form_is_the_answer_structure(a) -> None:
    """Replacing the marks by values gives the answer text: prompt and answer agree."""
    answer = render(a)
    words = [w.text for w in a.words]
    phones = [[p.phone for p in w.phones] for w in a.words]
    text = instruction(a.text, words, phones)
    form = text[text.index(f"\n{words[0]}: ") + 1 :]
    values = iter(answer.tokens)
    filled = re.sub(
        r"<score><said>|<score>",
        lambda m: next(values) + (next(values) if m.group() == "<score><said>" else ""),
        form,
    )
    assert filled == answer.text
    assert answer.template == AnswerTemplate.from_reference(words, phones)


@pytest.mark.parametrize(
    ("text", "words", "phones", "message"),
    [
        ("  ", ["WE"], [["W"]], "empty"),
        ("we call", ["WE", "CALL"], [["W", "IY0"]], "2 words"),
        ("we", ["WE"], [[]], "no canonical phones"),
    ],
)
def test_instruction_refuses_bad_references(text, words, phones, message) -> None:
    with pytest.raises(ValueError, match=message):
        instruction(text, words, phones)


def test_brief_instruction_is_the_reference_only() -> None:
    text = instruction("We call it bear.", WORDS, PHONES, style="brief")
    assert text == "Score the pronunciation of this reading: We call it bear."
    with pytest.raises(ValueError, match="prompt style"):
        instruction("We call it bear.", WORDS, PHONES, style="short")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        instruction(" ", WORDS, PHONES, style="brief")


def test_adapter_prompt_reads_the_training_card(tmp_path) -> None:
    assert adapter_prompt(None) == "rubric"
    assert adapter_prompt(tmp_path) == "rubric"  # no card: an adapter from elsewhere
    card = tmp_path / TRAINING_FILE
    card.write_text(json.dumps({"config": {"rank": 8}}))
    assert adapter_prompt(tmp_path) == "rubric"  # a card from before the field
    card.write_text(json.dumps({"config": {"prompt": "brief"}}))
    assert adapter_prompt(str(tmp_path)) == "brief"
    card.write_text(json.dumps({"config": {"prompt": "poem"}}))
    with pytest.raises(ValueError, match="poem"):
        adapter_prompt(tmp_path)
