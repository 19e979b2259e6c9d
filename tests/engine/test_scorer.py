"""LmmScorer end to end on the tiny models: both backends, both modes, batching, adapters,
hand-set logits, pass counts and error paths."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from apa.audio import Audio
from apa.engine.scorer import Encoded, LmmScorer, load_lmm_scorer, step_feeds
from apa.lexicon import Lexicon
from apa.lmm.answer import AnswerTemplate
from apa.lmm.vocab import PRONOUNCED_TOKENS, SCORE_TOKENS, phone_token
from apa.models.families import TINY_PHI4MM, TINY_QWEN2_AUDIO
from apa.prepare import prepare
from apa.schema import Assessment, ErrorRecord, Utterance
from apa.scorer import PreparedUtterance, Scorer
from apa.scoring.pipeline import length_batches, score_prepared, score_utterances

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

NAMES = (TINY_QWEN2_AUDIO, TINY_PHI4MM)
MODES = ("one-pass", "generate")
LORA_TARGETS = {TINY_QWEN2_AUDIO: ["q_proj", "v_proj"], TINY_PHI4MM: ["qkv_proj", "o_proj"]}


def n_slots(utterance: Utterance) -> int:
    return len(AnswerTemplate.from_reference(utterance.words, utterance.phones or []).slots)


def scores_of(a: Assessment) -> list[float | None]:
    return [
        *a.sentence.model_dump().values(),
        *[s for w in a.words for s in (w.accuracy, w.stress, w.total)],
        *[p.accuracy for w in a.words for p in w.phones],
    ]


def phones_of(a: Assessment) -> list[tuple[str | None, str | None]]:
    return [(p.error, p.pronounced) for w in a.words for p in w.phones]


@pytest.fixture(scope="module")
def scored(loaded_models, test_utterances):
    """``scored(name, mode, batch_size)``: the 8 test utterances through the pipeline, with
    the scorer that scored them; each combination is scored once per module."""

    @cache
    def run(name: str, mode: str, batch_size: int = 4) -> tuple[LmmScorer, list]:
        scorer = LmmScorer(loaded_models[name], mode=mode)
        results = list(score_utterances(test_utterances, scorer, batch_size=batch_size))
        return scorer, results

    return run


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_sample_utterances_get_complete_assessments(scored, test_utterances, name, mode) -> None:
    scorer, results = scored(name, mode)
    assert isinstance(scorer, Scorer)
    assert scorer.info.backend == {TINY_QWEN2_AUDIO: "qwen2-audio", TINY_PHI4MM: "phi4mm"}[name]
    assert scorer.info.model_is_random is True
    assert len(results) == len(test_utterances) >= 8
    for utterance, result in zip(test_utterances, results, strict=True):
        assert isinstance(result, Assessment), result
        assert result.utterance_id == utterance.id
        assert (result.model, result.model_is_random) == (name, True)
        assert [w.text for w in result.words] == utterance.words
        assert [[p.phone for p in w.phones] for w in result.words] == utterance.phones
        values = scores_of(result)
        assert len(values) == n_slots(utterance) - sum(len(p) for p in utterance.phones or [])
        assert all(v is not None and math.isfinite(v) for v in values)  # every slot filled
        assert all(0.0 <= p.accuracy <= 2.0 for w in result.words for p in w.phones)
        assert all(0.0 <= v <= 10.0 for v in values)
        # Expected values, not integers.
        assert any(v != round(v) for v in values)


@pytest.mark.parametrize("name", NAMES)
def test_forward_passes_one_pass_versus_generate(scored, test_utterances, name) -> None:
    one_pass, _ = scored(name, "one-pass")
    generate, _ = scored(name, "generate")
    slots = [n_slots(u) for u in test_utterances]
    assert one_pass.utterances == generate.utterances == len(test_utterances)
    assert one_pass.forward_passes == len(test_utterances)
    assert one_pass.forward_passes_per_utterance == 1.0
    assert generate.forward_passes == sum(slots)  # one per slot
    assert generate.forward_passes_per_utterance >= min(slots) > 1


def test_generate_feeds_continue_each_row_where_it_stopped(loaded_models, test_utterances) -> None:
    """Constrained generation's later passes are built up front (step_feeds); each pass
    feeds every row still answering its value's place and its next chunk, left-padded,
    at the positions right after the row's tokens so far. Checked against the row-by-row
    construction on references of different lengths (rows that finish early)."""
    scorer = LmmScorer(loaded_models[TINY_QWEN2_AUDIO], mode="generate")
    encoded = [e for e in scorer.encode([prepare(u) for u in test_utterances[:5]])]
    assert all(isinstance(e, Encoded) for e in encoded)
    lengths = {len(e.job.kinds) for e in encoded}
    assert len(lengths) > 1, "the references should end at different steps"
    feeds = step_feeds(encoded, pad_id=-1)
    assert len(feeds) == max(lengths) - 1
    seen = [len(e.ids) for e in encoded]
    for k, feed in enumerate(feeds, start=1):
        width = feed.ids.shape[1]
        fed_rows = []
        for i, e in enumerate(encoded):
            if k >= len(e.job.kinds):  # this row has answered every slot
                assert not feed.mask[i].any() and (feed.ids[i] == -1).all()
                assert not feed.positions[i].any()
                continue
            chunk = e.job.chunks[k]
            n = 1 + len(chunk)  # the previous slot's value, then the chunk
            assert feed.mask[i].tolist() == [0] * (width - n) + [1] * n
            assert feed.ids[i].tolist() == [-1] * (width - n + 1) + list(chunk)
            assert feed.positions[i].tolist() == [0] * (width - n) + list(
                range(seen[i], seen[i] + n)
            )
            seen[i] += n
            fed_rows.append((i, width - n))
        assert width == max(width - col for _, col in fed_rows)
        assert (
            list(zip(feed.value_rows.tolist(), feed.value_cols.tolist(), strict=True)) == fed_rows
        )
        assert feed.rows == len(fed_rows)


def _reference(words: list[tuple[str, list[str]]], uid: str, audio: str) -> Utterance:
    return Utterance(
        id=uid, text=" ".join(w for w, _ in words), audio=audio, phones=[p for _, p in words]
    )


@pytest.mark.parametrize("name", NAMES)
def test_one_pass_is_one_forward_whatever_the_length(loaded_models, test_utterances, name) -> None:
    pool = [(w, p) for u in test_utterances for w, p in zip(u.words, u.phones or [], strict=True)]
    audio = test_utterances[0].audio
    assert audio is not None
    short = _reference(pool[:1], "one-word", audio)
    long = _reference(pool[:12], "twelve-words", audio)
    for mode in MODES:
        for batch_size in (1, 2):
            scorer = LmmScorer(loaded_models[name], mode=mode)
            results = list(score_utterances([short, long], scorer, batch_size=batch_size))
            assert all(isinstance(r, Assessment) for r in results)
            assert len(results[1].words) == 12
            if mode == "one-pass":
                assert scorer.forward_passes == 2
            else:
                assert scorer.forward_passes == n_slots(short) + n_slots(long)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_batched_results_equal_single_ones(scored, name, mode) -> None:
    _, batched = scored(name, mode, 4)
    _, single = scored(name, mode, 1)
    for a, b in zip(batched, single, strict=True):
        assert scores_of(a) == pytest.approx(scores_of(b), abs=1e-4)
        assert phones_of(a) == phones_of(b)


def test_greedy_scores_are_integers_of_the_same_answer(loaded_models, test_utterances) -> None:
    expected = LmmScorer(loaded_models[TINY_QWEN2_AUDIO], mode="generate")
    greedy = LmmScorer(loaded_models[TINY_QWEN2_AUDIO], mode="generate", scores="greedy")
    [a] = list(score_utterances(test_utterances[:1], expected))
    [b] = list(score_utterances(test_utterances[:1], greedy))
    assert all(v == int(v) for v in scores_of(b))
    assert scores_of(a) != scores_of(b)
    assert phones_of(a) == phones_of(b)


class ConstantHead(torch.nn.Module):
    """An output head whose logits are the same chosen vector at every position."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(len(logits), 1), requires_grad=False)
        self.register_buffer("logits", logits)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*hidden.shape[:-1], -1)


@pytest.fixture()
def hand_set_logits(loaded_models):
    """Put ``logits`` (a vector over the vocabulary) at every position of a model's output;
    the real head is put back after the test. (``monkeypatch.setattr`` would delete a
    submodule on undo instead: it is not in the module's ``__dict__``.)"""
    replaced = []

    def install(name: str, logits: torch.Tensor) -> None:
        model = loaded_models[name].model
        replaced.append((model, model.lm_head))
        model.lm_head = ConstantHead(logits)

    yield install
    for model, head in replaced:
        model.lm_head = head


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_expected_values_are_exact_for_hand_set_logits(
    loaded_models, test_utterances, hand_set_logits, name, mode
) -> None:
    tokenizer = loaded_models[name].processor.tokenizer
    vocab = loaded_models[name].model.get_output_embeddings().weight.shape[0]
    logits = torch.full((vocab,), 5.0)  # high everywhere else: restricting must drop these
    score_logits = [0.0, 1.5, -2.0, 3.0, 0.25, -1.0, 2.0, 0.5, -0.75, 1.0, 2.5]  # s0..s10
    for token, value in zip(SCORE_TOKENS, score_logits, strict=True):
        logits[tokenizer.convert_tokens_to_ids(token)] = value
    for token in PRONOUNCED_TOKENS:
        logits[tokenizer.convert_tokens_to_ids(token)] = -1.0
    logits[tokenizer.convert_tokens_to_ids(phone_token("K"))] = 2.0  # every phone is said as K
    hand_set_logits(name, logits)

    weights = [math.exp(x) for x in score_logits]
    expected10 = math.fsum(k * w for k, w in enumerate(weights)) / math.fsum(weights)
    expected2 = math.fsum(k * w for k, w in enumerate(weights[:3])) / math.fsum(weights[:3])
    for scores, value10, value2 in [("expected", expected10, expected2), ("greedy", 3.0, 1.0)]:
        scorer = LmmScorer(loaded_models[name], mode=mode, scores=scores)
        results = list(score_utterances(test_utterances[:2], scorer, batch_size=2))
        for result in results:
            assert isinstance(result, Assessment), result
            for value in [*result.sentence.model_dump().values()]:
                assert value == pytest.approx(value10, abs=1e-12)
            for word in result.words:
                for value in (word.accuracy, word.stress, word.total):
                    assert value == pytest.approx(value10, abs=1e-12)
                for phone in word.phones:
                    assert phone.accuracy == pytest.approx(value2, abs=1e-12)
                    if phone.phone == "K":
                        assert (phone.error, phone.pronounced) == (None, None)
                    else:
                        assert (phone.error, phone.pronounced) == ("substitution", "K")


@pytest.fixture(scope="module")
def adapters(loaded_models, tmp_path_factory) -> dict[str, Path]:
    """A LoRA per tiny model (on the model with the answer tokens), random ``lora_B``."""
    from peft import LoraConfig, get_peft_model

    from apa.models.peft_quiet import quiet_peft

    root = tmp_path_factory.mktemp("lmm-adapters")
    made = {}
    for name in NAMES:
        loaded = loaded_models[name]
        base = type(loaded.model).from_pretrained(loaded.path)
        with quiet_peft(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(2)
            peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=LORA_TARGETS[name]))
            for param_name, param in peft_model.named_parameters():
                if "lora_B" in param_name:
                    torch.nn.init.normal_(param, std=0.2)
            made[name] = root / name.split(":")[1]
            peft_model.save_pretrained(made[name])
    return made


@pytest.mark.parametrize("name", NAMES)
def test_adapter_applied_and_merged_give_the_same_scores(
    scored, adapters, test_utterances, name
) -> None:
    utterances = test_utterances[:3]
    applied = load_lmm_scorer(name, adapter=str(adapters[name]), mode="one-pass")
    merged = load_lmm_scorer(name, adapter=str(adapters[name]), merge_adapter=True, mode="one-pass")
    assert applied.info.adapter == str(adapters[name])
    assert hasattr(applied.loaded.model, "peft_config")
    assert not hasattr(merged.loaded.model, "peft_config")
    with_applied = list(score_utterances(utterances, applied, batch_size=3))
    with_merged = list(score_utterances(utterances, merged, batch_size=3))
    _, base = scored(name, "one-pass")
    for a, m, b in zip(with_applied, with_merged, base, strict=False):
        assert scores_of(a) == pytest.approx(scores_of(m), abs=1e-5)
        assert max(abs(x - y) for x, y in zip(scores_of(a), scores_of(b), strict=True)) > 1e-3


def test_bad_inputs_are_error_rows_end_to_end(loaded_models, test_utterances, tmp_path) -> None:
    good = test_utterances[0]
    lexicon = Lexicon({w: [p] for w, p in zip(good.words, good.phones or [], strict=True)})
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    inputs = [
        good.model_copy(update={"phones": None}),
        Utterance(id="corrupt", text=good.text, audio=str(tmp_path / "corrupt.wav")),
        Utterance(id="missing", text=good.text, audio=str(tmp_path / "none.wav")),
        Utterance(id="oov", text="ZZYZXQ " + good.text, audio=good.audio),
    ]
    scorer = LmmScorer(loaded_models[TINY_PHI4MM], mode="generate")
    results = list(score_utterances(inputs, scorer, lexicon=lexicon))
    assert [r.utterance_id for r in results] == [u.id for u in inputs]
    assert isinstance(results[0], Assessment)
    assert {r.utterance_id: r.reason for r in results[1:]} == {
        "corrupt": "audio.undecodable",
        "missing": "audio.not_found",
        "oov": "lexicon.unknown_word",
    }
    assert scorer.utterances == 1


def _longer(good: PreparedUtterance, seconds: float) -> PreparedUtterance:
    """``good``'s reading repeated past ``seconds``, as utterance ``long``."""
    samples = np.tile(good.audio.samples, int(seconds * 16_000 / len(good.audio.samples)) + 1)
    return PreparedUtterance(
        utterance=good.utterance.model_copy(update={"id": "long"}),
        audio=Audio(samples, 16_000, 16_000, 1, "WAV"),
    )


def test_qwen2_audio_refuses_clips_over_30_seconds(loaded_models, test_utterances) -> None:
    good = prepare(test_utterances[0])
    assert isinstance(good, PreparedUtterance)
    long = _longer(good, 31)
    results = LmmScorer(loaded_models[TINY_QWEN2_AUDIO]).score([long, good])
    assert isinstance(results[0], ErrorRecord) and results[0].reason == "audio.too_long"
    assert isinstance(results[1], Assessment)


def test_phi4mm_scores_a_clip_past_40_seconds_batched_as_alone(
    loaded_models, test_utterances
) -> None:
    """Past 40 s (500 encoder positions) Phi-4's encoder folds a clip into chunks, and a
    batch holding such a clip is encoded clip by clip by transformers' code
    (apa.models.phi4mm.backend._encode_one_by_one): every clip of that batch scores as it
    does alone."""
    from apa.models.phi4mm import backend as phi4mm_backend

    long = _longer(prepare(test_utterances[0]), 41)
    short = prepare(test_utterances[1])
    scorer = LmmScorer(loaded_models[TINY_PHI4MM], mode="one-pass")
    calls = []
    one_by_one = phi4mm_backend._encode_one_by_one

    def spy(*args):
        calls.append(len(args[2]))
        return one_by_one(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(phi4mm_backend, "_encode_one_by_one", spy)
        together = scorer.score([long, short])
    assert calls == [2], "the batch with the long clip should go clip by clip"
    alone = [scorer.score([item])[0] for item in (long, short)]
    assert all(isinstance(r, Assessment) for r in together + alone), together + alone
    for a, b in zip(together, alone, strict=True):
        assert scores_of(a) == pytest.approx(scores_of(b), abs=1e-4)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("MARK: M<|s2|><|ok|> AA0", "answer.truncated"),
        ("MARK: M<|s7|>", "answer.invalid_value"),
        ("I think it was quite good.", "answer.malformed"),
    ],
)
def test_an_answer_that_does_not_fit_is_an_answer_error_with_its_text(
    loaded_models, test_utterances, monkeypatch, text, reason
) -> None:
    scorer = LmmScorer(loaded_models[TINY_QWEN2_AUDIO], mode="generate")
    monkeypatch.setattr(scorer.tokenizer, "decode", lambda ids, **kwargs: text)
    [result] = list(score_utterances(test_utterances[:1], scorer))  # "MARK IS GOING ..."
    assert isinstance(result, ErrorRecord)
    assert (result.stage, result.reason, result.raw) == ("answer", reason, text)


def test_unreadable_distributions_are_answer_errors(
    loaded_models, test_utterances, hand_set_logits
) -> None:
    vocab = loaded_models[TINY_PHI4MM].model.get_output_embeddings().weight.shape[0]
    hand_set_logits(TINY_PHI4MM, torch.full((vocab,), float("nan")))
    [result] = LmmScorer(loaded_models[TINY_PHI4MM], mode="one-pass").score(
        [prepare(test_utterances[0])]  # type: ignore[list-item]
    )
    assert isinstance(result, ErrorRecord)
    assert result.reason == "answer.invalid_distribution"
    assert result.raw is not None and result.raw.startswith("MARK: M<|")


def test_scorer_asks_the_way_its_adapter_was_trained(adapters, tmp_path) -> None:
    import shutil

    from apa.models.card import TRAINING_FILE
    from apa.models.errors import ModelLoadError

    adapter = tmp_path / "adapter"
    shutil.copytree(adapters[TINY_QWEN2_AUDIO], adapter)
    plain = load_lmm_scorer(TINY_QWEN2_AUDIO, adapter=str(adapter))  # no apa finetune card
    assert (plain.prompt, plain.mode) == ("rubric", "generate")
    (adapter / TRAINING_FILE).write_text('{"config": {"prompt": "brief"}}')  # an older card
    carded = load_lmm_scorer(TINY_QWEN2_AUDIO, adapter=str(adapter))
    assert (carded.prompt, carded.mode) == ("brief", "one-pass")
    forced = load_lmm_scorer(
        TINY_QWEN2_AUDIO, adapter=str(adapter), prompt="rubric", mode="generate"
    )
    assert (forced.prompt, forced.mode) == ("rubric", "generate")
    (adapter / TRAINING_FILE).write_text('{"config": {}, "mode": "generate"}')
    assert load_lmm_scorer(TINY_QWEN2_AUDIO, adapter=str(adapter)).mode == "generate"
    assert load_lmm_scorer(TINY_QWEN2_AUDIO).mode == "generate"  # no adapter: zero-shot
    for bad in ("{not json", '{"config": {}, "mode": "beam"}'):
        (adapter / TRAINING_FILE).write_text(bad)
        with pytest.raises(ModelLoadError) as raised:
            load_lmm_scorer(TINY_QWEN2_AUDIO, adapter=str(adapter))
        assert raised.value.reason == "model.adapter_failed"


def test_scorer_needs_the_answer_tokens(model_cache) -> None:
    from apa.models.loading import load_model

    loaded = load_model(TINY_QWEN2_AUDIO)
    with pytest.raises(ValueError, match="answer token"):
        LmmScorer(loaded)
    with pytest.raises(ValueError, match="mode"):
        LmmScorer(loaded, mode="beam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prompt"):
        LmmScorer(loaded, prompt="long")  # type: ignore[arg-type]


def test_brief_prompt_is_shorter_and_scores(loaded_models, test_utterances) -> None:
    """The brief style drops the rubric and form from the prompt (far fewer tokens) and
    still reads every slot."""
    item = prepare(test_utterances[0])
    assert isinstance(item, PreparedUtterance)
    rubric = LmmScorer(loaded_models[TINY_QWEN2_AUDIO], mode="one-pass")
    brief = LmmScorer(loaded_models[TINY_QWEN2_AUDIO], mode="one-pass", prompt="brief")
    long_ids = rubric.tokenizer.encode(rubric.job(item).prompt)
    short_ids = brief.tokenizer.encode(brief.job(item).prompt)
    assert item.utterance.text.strip() in brief.job(item).prompt
    assert len(short_ids) * 4 < len(long_ids)
    [a], [b] = rubric.score([item]), brief.score([item])
    assert isinstance(a, Assessment) and isinstance(b, Assessment)
    assert len(b.words) == len(item.utterance.words)
    assert abs(a.sentence.fluency - b.sentence.fluency) > 1e-6  # the prompt reached the model


def test_importing_apa_lmm_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, apa.lmm; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("name", "mode"),
    [(TINY_QWEN2_AUDIO, "one-pass"), (TINY_PHI4MM, "one-pass"), (TINY_PHI4MM, "generate")],
)
def test_a_reference_is_prepared_once_and_cached_scores_equal_uncached(
    loaded_models, test_utterances, name, mode
) -> None:
    """Many learners read the same sentence: its template, prompt and placeholder chunks
    are built once (an LRU per scorer); with the cache off, every score is the same."""
    loaded = loaded_models[name]
    base = test_utterances[0]
    same_text = [
        prepare(u.model_copy(update={"text": base.text, "phones": base.phones, "id": u.id}))
        for u in test_utterances[:5]
    ]
    cached = LmmScorer(loaded, mode=mode)
    uncached = LmmScorer(loaded, mode=mode, reference_cache_size=0)
    first = cached.score(same_text)
    info = cached.reference.cache_info()
    assert (info.misses, info.hits) == (1, 4)
    assert [r.model_dump() for r in first] == [r.model_dump() for r in uncached.score(same_text)]
    assert uncached.reference.cache_info().hits == 0
    jobs = [cached.job(item) for item in same_text]
    assert all(job.reference is jobs[0].reference for job in jobs)


def test_batches_group_utterances_of_similar_token_length(loaded_models, test_utterances) -> None:
    """A row is padded to its batch's longest token sequence, which depends on the reference
    as much as on the audio: batches cut by the engine's cost (its first pass's tokens) pad
    less than batches cut by audio length, and score the same."""
    scorer = LmmScorer(loaded_models[TINY_QWEN2_AUDIO], mode="one-pass")
    items = [prepare(u) for u in test_utterances]
    costs = [scorer.cost(item) for item in items]
    assert costs == [len(e.ids) for e in scorer.encode(items)]

    def padding(batches: list[list[int]]) -> int:
        return sum(len(b) * max(costs[i] for i in b) - sum(costs[i] for i in b) for b in batches)

    by_tokens, by_audio = length_batches(items, 2, scorer.cost), length_batches(items, 2)
    assert padding(by_tokens) < padding(by_audio)
    bucketed = score_prepared(scorer, items, 2)
    for item, result in zip(items, bucketed, strict=True):
        (alone,) = scorer.score([item])
        assert result.sentence.total == pytest.approx(alone.sentence.total, abs=1e-3)
        assert [p.accuracy for w in result.words for p in w.phones] == pytest.approx(
            [p.accuracy for w in alone.words for p in w.phones], abs=1e-3
        )
