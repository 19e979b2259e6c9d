"""The synthetic corpus: labels follow the documented rules, the audio follows the labels,
held-out sentences are new, and the corpus reads as Speechocean762."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from apa.data.speechocean762 import prepare_speechocean762
from apa.synth.corpus import (
    CONSONANT_SUBSTITUTE,
    FILLER,
    MAX_FILLERS,
    PAUSE_MS,
    VOWEL_SUBSTITUTE,
    SynthConfig,
    draw_corpus,
    error_kind,
    fit_fluency_terms,
    fluency,
    fluency_terms,
    write_synthetic_corpus,
)
from apa.synth.espeak import arpabet_phonemes, speak_phonemes, speak_words, trim_silence

CONFIG = SynthConfig(train_sentences=6, test_sentences=3, takes=3, seed=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_corpus(tmp_path_factory.mktemp("synth"), CONFIG)


def test_fluency_rule_is_monotone_in_rate_and_pauses() -> None:
    assert fluency(260, 0) == 10.0 and fluency(110, 3) == 0.0
    rates = [fluency(r, 1) for r in range(110, 261, 10)]
    fillers = [fluency(200, k) for k in range(4)]
    assert rates == sorted(rates) and rates[0] < rates[-1]
    assert fillers == sorted(fillers, reverse=True) and fillers[0] > fillers[-1]


def test_draws_are_deterministic_and_held_out_sentences_are_new() -> None:
    a, b = draw_corpus(CONFIG), draw_corpus(CONFIG)
    assert [u.assessment for u in a] == [u.assessment for u in b]
    assert draw_corpus(CONFIG.model_copy(update={"seed": 4}))[0].assessment != a[0].assessment
    train = {u.words for u in a if u.split == "train"}
    test = {u.words for u in a if u.split == "test"}
    assert len(train) == 6 and len(test) == 3 and not train & test


def test_a_fixed_phone_count_holds_every_sentence_to_it() -> None:
    fixed = CONFIG.model_copy(update={"min_words": 4, "max_words": 4, "phones": 14})
    utterances = draw_corpus(fixed)
    assert {sum(len(p) for p in u.phones) for u in utterances} == {14}
    assert {len(u.words) for u in utterances} == {4}
    assert len({u.words for u in utterances}) == 9
    impossible = CONFIG.model_copy(update={"min_words": 1, "max_words": 1, "phones": 40})
    with pytest.raises(ValueError, match="could not draw"):
        draw_corpus(impossible)


def test_labels_follow_the_substitutions() -> None:
    for utt in draw_corpus(CONFIG):
        a = utt.assessment
        intact = 0
        for word, canonical, said in zip(a.words, utt.phones, utt.said, strict=True):
            for phone, c, s in zip(word.phones, canonical, said, strict=True):
                if c == s:
                    assert phone.accuracy == 2.0 and phone.error is None
                    intact += 1
                else:
                    assert phone.accuracy == 0.0 and phone.error == "substitution"
                    assert phone.pronounced in (VOWEL_SUBSTITUTE, CONSONANT_SUBSTITUTE)
            share = sum(p.accuracy == 2.0 for p in word.phones) / len(word.phones)
            assert word.accuracy == pytest.approx(10 * share) and word.total == word.accuracy
            assert word.stress is None
        n = sum(len(p) for p in utt.phones)
        assert a.sentence.accuracy == pytest.approx(10 * intact / n)
        assert a.sentence.fluency == fluency(utt.rate_wpm, len(utt.fillers))
        assert a.sentence.total == pytest.approx((a.sentence.accuracy + a.sentence.fluency) / 2)
        assert a.sentence.prosody is None and a.sentence.completeness is None
    substituted = [u for u in draw_corpus(CONFIG) if u.said != u.phones]
    assert substituted, "some utterances must have substitutions"


def test_corpus_reads_as_speechocean762_with_the_rule_labels(corpus: Path) -> None:
    data = prepare_speechocean762(corpus)
    assert not data.all_errors
    drawn = {u.id: u for u in draw_corpus(CONFIG)}
    assert {u.id for u in data.utterances} == set(drawn)
    for utt in data.utterances:
        assert utt.human is not None and utt.phones == [list(p) for p in drawn[utt.id].phones]
        expected = drawn[utt.id].assessment
        assert utt.human.sentence == expected.sentence
        assert [w.accuracy for w in utt.human.words] == [w.accuracy for w in expected.words]


def test_clips_share_one_length_and_slower_speech_lasts_longer(corpus: Path) -> None:
    meta = json.loads((corpus / "synth.json").read_text())["utterances"]
    lengths = {sf.info(p).frames for p in (corpus / "WAVE").rglob("*.wav")}
    assert len(lengths) == 1 and sf.info(next((corpus / "WAVE").rglob("*.wav"))).samplerate == 16000
    drawn = {u.id: u for u in draw_corpus(CONFIG)}
    per_phone = [m["speech_s"] / sum(len(p) for p in drawn[m["id"]].phones) for m in meta]
    flu = [drawn[m["id"]].assessment.sentence.fluency for m in meta]
    assert np.corrcoef(per_phone, flu)[0, 1] < -0.8


def test_filled_pauses_are_drawn_at_distinct_word_boundaries() -> None:
    counts = set()
    for utt in draw_corpus(CONFIG):
        assert list(utt.fillers) == sorted(set(utt.fillers))
        assert all(0 <= w < len(utt.words) - 1 for w in utt.fillers)
        assert len(utt.fillers) <= MAX_FILLERS
        counts.add(len(utt.fillers))
    assert len(counts) >= 3, counts


def test_each_filled_pause_is_said_where_it_is_drawn(corpus: Path) -> None:
    """The speech of an utterance is its words and its fillers, each said on its own and
    joined by the fixed pause: taking the fillers out leaves exactly the words."""
    draws = json.loads((corpus / "synth.json").read_text())["utterances"]
    drawn = {u.id: u for u in draw_corpus(CONFIG)}
    for d in draws:
        utt = drawn[d["id"]]
        words = [arpabet_phonemes([w]) for w in utt.said]
        bare = speak_words(words, pause_ms=PAUSE_MS, rate_wpm=utt.rate_wpm)
        filler = trim_silence(speak_phonemes(FILLER, rate_wpm=utt.rate_wpm)).duration_s
        extra = len(utt.fillers) * (filler + PAUSE_MS / 1000)
        assert d["fillers"] == list(utt.fillers)
        assert d["speech_s"] == pytest.approx(bare.duration_s + extra, abs=2e-4)


def test_fluency_fit_recovers_the_rule_and_a_model_deaf_to_the_fillers(corpus: Path) -> None:
    draws = json.loads((corpus / "synth.json").read_text())["utterances"]
    rule = {d["id"]: fluency(d["rate_wpm"], len(d["fillers"])) for d in draws}
    fit = fit_fluency_terms(corpus, rule)
    assert fit["n"] == len(draws) == 27
    assert fit["rate"] == pytest.approx(1) and fit["fillers"] == pytest.approx(1)
    assert fit["const"] == pytest.approx(10)
    deaf = {d["id"]: 10 + fluency_terms(d["rate_wpm"], len(d["fillers"]))[0] for d in draws}
    fit = fit_fluency_terms(corpus, {**deaf, "not-in-the-corpus": 3.0})
    assert fit["n"] == 27 and fit["fillers"] == pytest.approx(0, abs=1e-9)
    assert fit["rate"] == pytest.approx(1)
    with pytest.raises(ValueError, match="0 of the predictions"):
        fit_fluency_terms(corpus, {"elsewhere": 1.0})


V4 = CONFIG.model_copy(update={"rules": 4, "train_sentences": 12, "takes": 4})


def test_rules_version_4_labels_follow_its_harder_errors() -> None:
    """Near pairs, reduced vowels and deleted final consonants, each labelled by its rule;
    the spoken phones are the canonical ones with the errors (a deletion leaves it out)."""
    kinds_seen: set[str] = set()
    for utt in draw_corpus(V4):
        points = 0.0
        for w, (word, canonical, said) in enumerate(
            zip(utt.assessment.words, utt.phones, utt.said, strict=True)
        ):
            expected_said = []
            for p, (phone, c) in enumerate(zip(word.phones, canonical, strict=True)):
                kind = utt.errors.get((w, p))
                kinds_seen.add(kind or "intact")
                assert error_kind(phone) == kind  # the kind reads back from the label
                base = c.rstrip("012")
                if kind is None:
                    assert (phone.accuracy, phone.error) == (2.0, None)
                    expected_said.append(c)
                elif kind == "deleted":
                    assert (phone.accuracy, phone.error, phone.pronounced) == (0.0, None, None)
                    assert p == len(canonical) - 1 and len(canonical) > 1
                elif kind == "near":
                    assert (phone.accuracy, phone.error) == (0.0, "substitution")
                    pair = {"D": "T", "T": "D", "Z": "S", "S": "Z", "IY": "IH", "IH": "IY"}
                    assert phone.pronounced == pair[base]
                    expected_said.append(pair[base] + c[len(base) :])
                elif kind == "reduced":
                    assert (phone.accuracy, phone.pronounced) == (1.0, "AH") and base != "AH"
                    expected_said.append("AH0")
                else:
                    assert phone.accuracy == 0.0
                    assert phone.pronounced in (VOWEL_SUBSTITUTE, CONSONANT_SUBSTITUTE)
                    expected_said.append(phone.pronounced + c[len(base) :])
                points += phone.accuracy
            assert list(said) == expected_said
            assert word.accuracy == pytest.approx(
                10 * sum(ph.accuracy for ph in word.phones) / (2 * len(canonical))
            )
        n = sum(len(p) for p in utt.phones)
        assert utt.assessment.sentence.accuracy == pytest.approx(10 * points / (2 * n))
    assert kinds_seen == {"intact", "obvious", "near", "reduced", "deleted"}


def test_a_version_4_corpus_is_written_and_reads_back(tmp_path: Path) -> None:
    small = V4.model_copy(update={"train_sentences": 2, "test_sentences": 1, "takes": 2})
    out = write_synthetic_corpus(tmp_path, small)
    meta = json.loads((out / "synth.json").read_text())
    assert meta["rules_version"] == 4 and meta["config"]["rules"] == 4
    data = prepare_speechocean762(out)
    assert not data.all_errors and len(data.utterances) == 6
    drawn = {u.id: u for u in draw_corpus(small)}
    for utt in data.utterances:
        assert utt.human.sentence == drawn[utt.id].assessment.sentence
        kinds = {
            (w, p): kind
            for w, word in enumerate(utt.human.words)
            for p, phone in enumerate(word.phones)
            if (kind := error_kind(phone)) is not None
        }
        assert kinds == drawn[utt.id].errors  # also through scores.json
