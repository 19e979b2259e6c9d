"""Answer tokens in a Qwen2-like byte-level BPE tokenizer and a tiny Qwen2 model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from apa.lmm.answer import AnswerTemplate
from apa.lmm.prompt import instruction
from apa.lmm.vocab import (
    ANSWER_TOKENS,
    NATURAL_TEXT,
    PHONES,
    PRONOUNCED_TOKENS,
    SCORE_TOKENS,
    SLOT,
    add_answer_tokens,
    check_single_tokens,
    phone_of,
    phone_token,
    score_of,
    score_token,
)

# Qwen2's pre-tokenizer pattern: digits are split one by one (\p{N} alone).
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TEMPLATE = AnswerTemplate.from_reference(
    ["WE", "CALL", "IT", "BEAR"], [["W", "IY0"], ["K", "AO0", "L"], ["IH0", "T"], ["B", "EH0", "R"]]
)
ANSWER = """\
WE: W<|s2|><|ok|> IY0<|s2|><|ok|> | accuracy<|s10|> stress<|s10|> total<|s10|>
CALL: K<|s2|><|ok|> AO0<|s1|><|ph:OW|> L<|s2|><|ok|> | accuracy<|s6|> stress<|s10|> total<|s7|>
IT: IH0<|s2|><|ok|> T<|s0|><|del|> | accuracy<|s8|> stress<|s10|> total<|s8|>
BEAR: B<|s1|><|ph:P|> EH0<|s2|><|ok|> R<|s2|><|ok|> | accuracy<|s8|> stress<|s10|> total<|s8|>
sentence: accuracy<|s8|> fluency<|s9|> prosody<|s9|> completeness<|s10|> total<|s8|>"""
CORPUS = [
    "we call it bear 10 7 same deleted unknown none ? accuracy stress total sentence fluency",
    "WE: W IY0 | CALL: K AO0 L | IT: IH0 T | BEAR: B EH0 R | prosody completeness 0 1 2 3",
    " ".join(PHONES) + " " + " ".join(f"{p}0 {p}1 {p}2" for p in PHONES),
    "Assess the pronunciation of a non-native English learner reading this sentence aloud.",
]


def qwen2_like_tokenizer():
    """A few hundred byte-level BPE tokens behind Qwen2's pre-tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def tiny_qwen2(vocab_size: int, *, tied: bool):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=tied,
    )
    return Qwen2ForCausalLM(config).eval()


def test_format_modules_do_not_import_torch_or_transformers() -> None:
    code = (
        "import sys, apa.lmm, apa.lmm.vocab, apa.lmm.answer, apa.lmm.prompt\n"
        "print(','.join(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_token_maps() -> None:
    assert len(ANSWER_TOKENS) == len(set(ANSWER_TOKENS)) == 55
    assert len(PHONES) == 39 and len(PRONOUNCED_TOKENS) == 42
    assert [score_of(score_token(k)) for k in range(11)] == list(range(11))
    assert all(phone_of(phone_token(p)) == p for p in PHONES)
    assert phone_token("EH1") == "<|ph:EH|>" and phone_of(phone_token("R*")) == "<unk>"
    assert set(NATURAL_TEXT) == set(ANSWER_TOKENS)
    for bad in (-1, 11, 2.0, True):
        with pytest.raises(ValueError):
            score_token(bad)


def test_without_answer_tokens_a_score_of_10_is_two_tokens() -> None:
    tokenizer = qwen2_like_tokenizer()
    assert len(tokenizer.encode("10", add_special_tokens=False)) == 2
    with pytest.raises(ValueError, match="not single tokens"):
        check_single_tokens(tokenizer)


def test_added_tokens_are_single_ids_and_slots_line_up(tmp_path) -> None:
    tokenizer = qwen2_like_tokenizer()
    before = len(tokenizer)
    ids = add_answer_tokens(tokenizer)
    assert len(tokenizer) == before + 55
    assert list(ids) == list(ANSWER_TOKENS) and len(set(ids.values())) == 55
    assert check_single_tokens(tokenizer) == ids
    # idempotent
    assert add_answer_tokens(tokenizer) == ids and len(tokenizer) == before + 55

    encoded = tokenizer.encode(ANSWER, add_special_tokens=False)
    answer_ids = set(ids.values())
    assert [i for i in encoded if i in answer_ids] == [ids[t] for t in TEMPLATE.read_text(ANSWER)]
    assert tokenizer.decode(encoded, skip_special_tokens=False) == ANSWER
    placeholders = tokenizer.encode(TEMPLATE.placeholder_text(), add_special_tokens=False)
    assert placeholders.count(ids[SLOT]) == len(TEMPLATE.slots) == 37
    assert [i for i in placeholders if i in answer_ids] == [ids[SLOT]] * 37
    # the structure tokenizes the same way whatever the values
    strip = [i for i in encoded if i not in answer_ids]
    assert strip == [i for i in placeholders if i != ids[SLOT]]
    # the instruction names the tokens as the same single ids
    prompt = tokenizer.encode(
        instruction("We call it bear.", TEMPLATE.words, TEMPLATE.phones),
        add_special_tokens=False,
    )
    assert ids["<|s10|>"] in prompt and ids["<|ok|>"] in prompt

    tokenizer.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    assert check_single_tokens(AutoTokenizer.from_pretrained(tmp_path)) == ids


@pytest.mark.parametrize("tied", [False, True])
def test_model_embeddings_grow_and_start_at_the_natural_text(tied: bool) -> None:
    import torch

    tokenizer = qwen2_like_tokenizer()
    model = tiny_qwen2(len(tokenizer), tied=tied)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    ids = add_answer_tokens(tokenizer, model)
    emb_in = model.get_input_embeddings().weight
    emb_out = model.get_output_embeddings().weight
    assert emb_in.shape[0] == emb_out.shape[0] == len(tokenizer) == len(old_in) + 55
    assert (emb_in.data_ptr() == emb_out.data_ptr()) is tied
    assert torch.equal(emb_in[: len(old_in)], old_in)
    assert torch.equal(emb_out[: len(old_out)], old_out)
    for token in ("<|s7|>", "<|s10|>", "<|ph:AA|>", "<|ok|>", "<|del|>", "<|ph:unk|>", SLOT):
        natural = tokenizer.encode(NATURAL_TEXT[token], add_special_tokens=False)
        assert torch.equal(emb_in[ids[token]], old_in[natural].mean(0))
        assert torch.equal(emb_out[ids[token]], (old_in if tied else old_out)[natural].mean(0))
    assert len(tokenizer.encode("10", add_special_tokens=False)) == 2  # "<|s10|>" averages two
    # idempotent: nothing moves on a second call
    snapshot = emb_in.detach().clone()
    assert add_answer_tokens(tokenizer, model) == ids
    assert torch.equal(model.get_input_embeddings().weight, snapshot)
    # the model runs on an answer
    with torch.no_grad():
        out = model(torch.tensor([tokenizer.encode(ANSWER, add_special_tokens=False)]))
    assert out.logits.shape[-1] == len(tokenizer)


def test_a_padded_table_is_not_resized_but_new_rows_are_initialised() -> None:
    import torch

    tokenizer = qwen2_like_tokenizer()
    padded = len(tokenizer) + 64  # like Qwen2's 151936-row table for ~151.6k tokens
    model = tiny_qwen2(padded, tied=False)
    old_in = model.get_input_embeddings().weight.detach().clone()
    ids = add_answer_tokens(tokenizer, model)
    assert model.get_input_embeddings().weight.shape[0] == padded
    for token in SCORE_TOKENS:
        natural = tokenizer.encode(NATURAL_TEXT[token], add_special_tokens=False)
        assert torch.equal(model.get_input_embeddings().weight[ids[token]], old_in[natural].mean(0))
