"""Alignment-informed scoring (``LmmScorer(alignment="spans")``) on the tiny models: the
phones' audio reaches the model where their slots are read, the plain path for what the
aligner cannot align, timings from the same alignment, the adapter card, batching."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
import torch

from apa.audio import Audio
from apa.engine.scorer import LmmScorer, load_lmm_scorer
from apa.gop.analysis import Alignment
from apa.models.families import TINY_PHI4MM, TINY_QWEN2_AUDIO
from apa.prepare import prepare
from apa.schema import Assessment
from apa.scorer import PreparedUtterance
from apa.scoring.pipeline import score_prepared

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

NAMES = (TINY_QWEN2_AUDIO, TINY_PHI4MM)


def scores_of(a: Assessment) -> list[float | None]:
    return [
        *a.sentence.model_dump().values(),
        *[s for w in a.words for s in (w.accuracy, w.stress, w.total)],
        *[p.accuracy for w in a.words for p in w.phones],
    ]


@pytest.fixture(scope="module")
def items(test_utterances) -> list[PreparedUtterance]:
    return [prepare(u) for u in test_utterances[:4]]


@pytest.fixture(scope="module")
def scored(loaded_models, items):
    """``scored(name, alignment, batch_size)``: the items scored once per combination."""

    @cache
    def run(name: str, alignment: str, batch_size: int = 4) -> tuple[LmmScorer, list]:
        scorer = LmmScorer(loaded_models[name], mode="one-pass", alignment=alignment)
        return scorer, score_prepared(scorer, items, batch_size)

    return run


@pytest.mark.parametrize("name", NAMES)
def test_aligned_scores_carry_the_path_and_the_alignments_timings(scored, items, name) -> None:
    scorer, aligned = scored(name, "spans")
    _, plain = scored(name, "off")
    changed = 0.0
    for item, a, p in zip(items, aligned, plain, strict=True):
        assert isinstance(a, Assessment) and isinstance(p, Assessment)
        assert (a.scoring_path, p.scoring_path) == ("aligned", None)
        alignment = scorer.align(item)
        assert isinstance(alignment, Alignment)
        assert [(w.start, w.end) for w in a.words] == [
            (round(w.start_s, 3), round(w.end_s, 3)) for w in alignment.words
        ]
        assert all(ph.start is not None for w in a.words for ph in w.phones)
        assert all(ph.start is None for w in p.words for ph in w.phones)
        diffs = [abs(x - y) for x, y in zip(scores_of(a), scores_of(p), strict=True)]
        changed = max(changed, *diffs)
    assert changed > 1e-3  # the phones' audio reached the model


@pytest.mark.parametrize("name", NAMES)
def test_aligned_batches_equal_single_utterances(scored, name) -> None:
    _, batched = scored(name, "spans", 4)
    _, single = scored(name, "spans", 1)
    for b, s in zip(batched, single, strict=True):
        assert scores_of(b) == pytest.approx(scores_of(s), abs=1e-5)


def span_mean(
    embeds: torch.Tensor, audio: torch.Tensor, seconds: float, start_s: float, end_s: float
) -> torch.Tensor:
    """The mean of the audio embeddings (at ``audio``, spread over ``seconds``) that
    ``start_s``..``end_s`` covers within the clip: at least one."""
    n = len(audio)
    first = min(n - 1, max(0, int(start_s * n / seconds)))
    stop = max(first + 1, min(n, int(np.ceil(end_s * n / seconds))))
    return embeds[audio[first:stop]].mean(0)


@pytest.mark.parametrize(
    "use", ["spans", "spans+next", "spans+words", "spans+next+words", "spans+wide"]
)
def test_each_phone_gets_the_mean_of_its_spans_audio_embeddings(loaded_models, items, use) -> None:
    """At the phone's name and score slot; with ``+next`` also one token before the
    previous phone's name, a token no slot is read from; with ``+words`` each word's audio
    where its three scores are read; with ``+wide`` each phone span under 120 ms widened to
    120 ms around its centre."""
    scorer = LmmScorer(loaded_models[TINY_QWEN2_AUDIO], mode="one-pass", alignment=use)
    encoded = scorer.encode(items[:2])
    batch = scorer._batch(encoded)
    with torch.inference_mode():
        embeds = scorer.backend.first_pass_inputs(scorer._text_model, batch)["inputs_embeds"]
        added = scorer._add_alignment(embeds, batch, encoded)
    widened = 0
    for i, e in enumerate(encoded):
        alignment = e.job.alignment
        assert alignment is not None
        audio = (batch.input_ids[i] == scorer._audio_id).nonzero().squeeze(1)
        seconds = e.job.item.audio.duration_s
        expected = torch.zeros_like(embeds[i])
        reads = e.job.reference.phone_reads
        answer = batch.answer_starts[i]
        read_slots = {answer + o - 1 for o in e.job.reference.slot_offsets}
        for k, (phone, read) in enumerate(zip(alignment.phones, reads, strict=True)):
            start_s, end_s = phone.start_s, phone.end_s
            if "+wide" in use and end_s - start_s < 0.12:
                widened += 1
                start_s, end_s = (start_s + end_s) / 2 - 0.06, (start_s + end_s) / 2 + 0.06
            mean = span_mean(embeds[i], audio, seconds, start_s, end_s)
            expected[answer + read] += mean  # the phone's name: reads its score slot
            expected[answer + read + 1] += mean  # its score slot: reads its pronounced slot
            if "+next" in use and k > 0:
                before = answer + reads[k - 1] - 1
                assert before not in read_slots
                expected[before] += mean
        if "+words" in use:
            for w, word in enumerate(alignment.words):
                word_slots = [
                    answer + o - 1
                    for slot, o in zip(
                        e.job.template.slots, e.job.reference.slot_offsets, strict=True
                    )
                    if slot.level == "word" and slot.word == w
                ]
                assert [answer + r for r in e.job.reference.word_reads[w]] == word_slots
                assert len(word_slots) == 3  # accuracy, stress, total
                for at in word_slots:
                    expected[at] += span_mean(embeds[i], audio, seconds, word.start_s, word.end_s)
        torch.testing.assert_close(added[i] - embeds[i], expected, atol=1e-5, rtol=0)
    assert ("+wide" in use) == (widened > 0)  # the sample has phones under 120 ms


def test_an_utterance_the_aligner_cannot_align_is_scored_on_the_plain_path(
    loaded_models, test_utterances
) -> None:
    """0.4 s of speech for a sentence of many phones: the aligner refuses it (too short for
    its phones), the model still scores it, exactly as without alignment."""
    utt = max(test_utterances, key=lambda u: sum(len(p) for p in u.phones or []))
    full = prepare(utt)
    audio = full.audio
    short = Audio(audio.samples[16000 : 16000 + 6400].copy(), 16000, 16000, 1, "WAV")
    item = PreparedUtterance(utt, short)
    aligned = LmmScorer(loaded_models[TINY_QWEN2_AUDIO], mode="one-pass", alignment="spans")
    plain = LmmScorer(loaded_models[TINY_QWEN2_AUDIO], mode="one-pass")
    failure = aligned.align(item)
    assert not isinstance(failure, Alignment) and failure.reason == "alignment.too_short_for_phones"
    [a], [p] = aligned.score([item]), plain.score([item])
    assert isinstance(a, Assessment) and a.scoring_path == "plain"
    assert scores_of(a) == pytest.approx(scores_of(p), abs=1e-9)
    assert all(w.start is None for w in a.words)


def test_each_item_is_aligned_once(loaded_models, items, monkeypatch) -> None:
    from apa.gop.aligner import GopAligner

    calls = []
    real = GopAligner.align
    monkeypatch.setattr(
        GopAligner, "align", lambda self, *a, **k: calls.append(1) or real(self, *a, **k)
    )
    scorer = LmmScorer(loaded_models[TINY_QWEN2_AUDIO], mode="one-pass", alignment="spans")
    scorer.cost(items[0])  # batching by cost needs no alignment
    assert calls == []
    scorer.score(items[:2])
    scorer.score(items[:2])
    assert len(calls) == 2


def test_alignment_is_one_pass_only_and_named(loaded_models) -> None:
    with pytest.raises(ValueError, match="one-pass only"):
        LmmScorer(loaded_models[TINY_QWEN2_AUDIO], mode="generate", alignment="spans")
    with pytest.raises(ValueError, match="alignment must be one of"):
        LmmScorer(loaded_models[TINY_QWEN2_AUDIO], mode="one-pass", alignment="gop")


def test_a_scorer_uses_the_alignment_its_adapter_was_trained_with(tmp_path) -> None:
    from peft import LoraConfig, get_peft_model

    from apa.models.card import TRAINING_FILE
    from apa.models.errors import ModelLoadError
    from apa.models.peft_quiet import quiet_peft

    base = load_lmm_scorer(TINY_QWEN2_AUDIO).loaded
    model = type(base.model).from_pretrained(base.path)
    with quiet_peft():
        peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    card = {"config": {"prompt": "brief", "alignment": "spans"}, "mode": "one-pass"}
    (adapter / TRAINING_FILE).write_text(json.dumps(card))
    assert load_lmm_scorer(TINY_QWEN2_AUDIO, adapter=str(adapter)).alignment == "spans"
    off = load_lmm_scorer(TINY_QWEN2_AUDIO, adapter=str(adapter), alignment="off")
    assert off.alignment == "off"
    assert load_lmm_scorer(TINY_QWEN2_AUDIO).alignment == "off"
    card["config"]["alignment"] = "frames"
    (adapter / TRAINING_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelLoadError):
        load_lmm_scorer(TINY_QWEN2_AUDIO, adapter=str(adapter))
