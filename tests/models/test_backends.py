"""The two backends: chat format, the padded batch layout, and audio reaching the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apa.lmm.answer import AnswerTemplate, render
from apa.lmm.vocab import SLOT
from apa.models.families import TINY_PHI4MM, TINY_QWEN2_AUDIO, by_name
from apa.models.inputs import build_batch, positions, text_model_and_head
from apa.models.qwen2_audio.backend import Qwen2AudioBackend
from apa.schema import Assessment, PhoneAssessment, SentenceScores, WordAssessment

SR = 16_000
ASSISTANT_PREFIX = {TINY_QWEN2_AUDIO: "<|im_start|>assistant\n", TINY_PHI4MM: "<|assistant|>"}
AUDIO_TOKENS_PER_SECOND = {TINY_QWEN2_AUDIO: 25, TINY_PHI4MM: 13}
TEMPLATE = AnswerTemplate.from_reference(["WE", "CALL"], [["W", "IY0"], ["K", "AO0", "L"]])
ASSESSMENT = Assessment(
    utterance_id="u1",
    text="we call",
    sentence=SentenceScores(accuracy=7.6, fluency=8.0, prosody=6.0, completeness=10.0, total=7.5),
    words=[
        WordAssessment(
            text="WE",
            accuracy=9.0,
            stress=10.0,
            total=9.0,
            phones=[
                PhoneAssessment(phone="W", accuracy=2.0),
                PhoneAssessment(phone="IY0", accuracy=1.2, error="substitution", pronounced="IH"),
            ],
        ),
        WordAssessment(
            text="CALL",
            accuracy=6.0,
            stress=10.0,
            total=6.4,
            phones=[
                PhoneAssessment(phone="K", accuracy=2.0),
                PhoneAssessment(phone="AO0", accuracy=1.8),
                PhoneAssessment(phone="L", accuracy=0.0, error="deletion"),
            ],
        ),
    ],
)


def sine(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("name", [TINY_QWEN2_AUDIO, TINY_PHI4MM])
def test_prompt_has_one_audio_placeholder_and_ends_at_the_assistant_prefix(
    loaded_models, name
) -> None:
    loaded = loaded_models[name]
    backend = by_name(loaded.family).backend()
    assert backend.family == loaded.family
    text = backend.prompt(loaded.processor, "Rate it.")
    assert text.count(loaded.processor.audio_token) == 1
    assert text.endswith(
        "Rate it."
        + {"qwen2-audio": "<|im_end|>\n", "phi4mm": "<|end|>"}[loaded.family]
        + ASSISTANT_PREFIX[name]
    )
    assert backend.end_of_turn in loaded.processor.tokenizer.get_vocab()


@pytest.mark.parametrize("name", [TINY_QWEN2_AUDIO, TINY_PHI4MM])
def test_batch_is_left_padded_with_each_answer_right_after_its_prompt(loaded_models, name) -> None:
    loaded = loaded_models[name]
    processor, tokenizer = loaded.processor, loaded.processor.tokenizer
    backend = by_name(loaded.family).backend()
    prompts = [backend.prompt(processor, "Rate it."), backend.prompt(processor, "Rate it, please.")]
    answers = [TEMPLATE.placeholder_text(), render(ASSESSMENT).text]
    clips = [sine(440, 2.0), sine(440, 1.0)]
    batch = build_batch(processor, prompts, clips, answers, backend=backend)

    width = batch.input_ids.shape[1]
    for i, (answer, clip) in enumerate(zip(answers, clips, strict=True)):
        row, mask = batch.input_ids[i], batch.attention_mask[i]
        real = int(mask.sum())
        assert mask[width - real :].all() and not mask[: width - real].any()  # left padding
        answer_ids = tokenizer.encode(answer, add_special_tokens=False)
        start = batch.answer_starts[i]
        assert start == width - len(answer_ids)
        assert row[start:].tolist() == answer_ids
        # The tokens just before the answer are the assistant prefix.
        prefix = tokenizer.encode(ASSISTANT_PREFIX[name], add_special_tokens=False)
        assert row[start - len(prefix) : start].tolist() == prefix
        audio_tokens = int((row == processor.audio_token_id).sum())
        assert abs(audio_tokens - AUDIO_TOKENS_PER_SECOND[name] * len(clip) / SR) <= 1
        assert batch.position_ids[i, width - real :].tolist() == list(range(real))
    assert torch.equal(batch.position_ids, positions(batch.attention_mask))


def test_answers_are_the_placeholder_chunks_with_the_values_between(loaded_models) -> None:
    """Generate mode feeds the placeholder answer's chunks with slot values between them;
    that is exactly how a rendered answer tokenizes (what training teaches)."""
    tokenizer = loaded_models[TINY_QWEN2_AUDIO].processor.tokenizer
    slot_id = tokenizer.convert_tokens_to_ids(SLOT)
    ids = tokenizer.encode(TEMPLATE.placeholder_text(), add_special_tokens=False)
    rendered = render(ASSESSMENT)
    values = tokenizer.convert_tokens_to_ids(list(rendered.tokens))
    it = iter(values)
    filled = [next(it) if t == slot_id else t for t in ids]
    assert filled == tokenizer.encode(rendered.text, add_special_tokens=False)
    assert ids.count(slot_id) == len(TEMPLATE.slots)


@pytest.mark.parametrize("name", [TINY_QWEN2_AUDIO, TINY_PHI4MM])
def test_first_pass_gives_each_clip_the_same_states_alone_or_batched(loaded_models, name) -> None:
    """Phi-4-mm's native audio encoder is not invariant to batch padding; the backend
    encodes a batch with each clip's padding zeroed and masked
    (:func:`apa.models.phi4mm.backend.encode_audio`), so a short clip batched with a long
    one is unchanged."""
    loaded = loaded_models[name]
    backend = by_name(loaded.family).backend()
    text_model, _ = text_model_and_head(loaded.model)
    prompt = backend.prompt(loaded.processor, "Rate it.")
    short, long = sine(300, 1.0), sine(500, 2.5)

    def states(clips: list[np.ndarray]) -> list[torch.Tensor]:
        batch = build_batch(
            loaded.processor, [prompt] * len(clips), clips, ["WE:"] * len(clips), backend=backend
        )
        with torch.inference_mode():
            out = text_model(
                **backend.first_pass_inputs(text_model, batch),
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
            )
        real = batch.attention_mask.sum(1).tolist()
        width = batch.input_ids.shape[1]
        return [out.last_hidden_state[i, width - n :] for i, n in enumerate(real)]

    alone, batched = states([short])[0], states([short, long])[0]
    assert torch.allclose(alone, batched, atol=1e-5)
    # ... and the audio matters.
    assert (states([sine(900, 1.0)])[0] - alone).abs().max() > 1e-4


def test_text_model_and_head_see_through_a_peft_wrapper(loaded_models) -> None:
    from peft import LoraConfig, get_peft_model

    from apa.models.peft_quiet import quiet_peft

    loaded = loaded_models[TINY_QWEN2_AUDIO]
    text_model, head = text_model_and_head(loaded.model)
    assert type(text_model).__name__ == "Qwen2AudioModel"
    assert head is loaded.model.get_output_embeddings()
    base = type(loaded.model).from_pretrained(loaded.path)
    with quiet_peft():
        wrapped = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))
    inner, _ = text_model_and_head(wrapped)
    assert inner is base.model


def test_unknown_family() -> None:
    with pytest.raises(ValueError, match="no model family 'whisper'"):
        by_name("whisper")


def test_build_batch_wants_one_of_each(loaded_models) -> None:
    processor = loaded_models[TINY_QWEN2_AUDIO].processor
    with pytest.raises(ValueError, match="one of each"):
        build_batch(processor, ["a"], [], ["b"], backend=Qwen2AudioBackend())


def test_phi4mm_clips_of_nearly_equal_length_batch_and_match_one_by_one(loaded_models) -> None:
    """Before: transformers' batched Phi-4 feature extractor sliced past the last frame of
    the longest clip when another was nearly as long ("The size of tensor a (570) must
    match the size of tensor b (571)"), and every such batch was retried clip by clip."""
    loaded = loaded_models[TINY_PHI4MM]
    backend = by_name(loaded.family).backend()
    text_model, _ = text_model_and_head(loaded.model)
    prompt = backend.prompt(loaded.processor, "Rate it.")
    rng = np.random.default_rng(1)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (85_834, 176_989, 177_005)]

    def embeds(batch_clips: list[np.ndarray]) -> torch.Tensor:
        batch = build_batch(
            loaded.processor,
            [prompt] * len(batch_clips),
            batch_clips,
            [""] * len(batch_clips),
            backend=backend,
        )
        with torch.inference_mode():
            return backend.first_pass_inputs(text_model, batch)["inputs_embeds"]

    together = embeds(clips)
    for i, clip in enumerate(clips):
        alone = embeds([clip])[0]
        assert torch.allclose(together[i, -alone.shape[0] :], alone, atol=1e-5)


def test_phi4mm_batched_audio_encoder_equals_transformers_clip_by_clip(loaded_models) -> None:
    """The batch's clips encoded together (padding zeroed between the subsampling stages,
    padded keys masked) equal transformers' encoder run on each clip alone."""
    from apa.models.phi4mm.backend import _encode_one_by_one, encode_audio

    loaded = loaded_models[TINY_PHI4MM]
    backend = by_name(loaded.family).backend()
    text_model, _ = text_model_and_head(loaded.model)
    embedding = text_model.embed_tokens_extend.audio_embed
    rng = np.random.default_rng(3)
    lengths = (4_000, 16_000, 41_234, 85_834, 176_989)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    audio = backend.audio_features(loaded.processor, clips, "cpu")
    features, frames = audio["audio_input_features"], audio["audio_attention_mask"]
    with torch.inference_mode():
        together = encode_audio(embedding, features, frames)
        one_by_one = _encode_one_by_one(embedding, features, frames.sum(-1))
    for i, size in enumerate(audio["audio_embed_sizes"].tolist()):
        torch.testing.assert_close(together[i, :size], one_by_one[i, :size], atol=1e-5, rtol=1e-4)
