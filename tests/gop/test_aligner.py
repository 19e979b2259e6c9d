"""apa.gop: forced alignment and GOP features with pocketsphinx.

Real Speechocean762 utterances align with sensible spans; espeak-ng speech in which known
phones were swapped for other phones, aligned against the canonical phones, gives the
swapped phones a lower GOP than the intact ones (the test that the features carry the
signal a pronunciation scorer needs); bad input fails with typed errors; the decoders are
built once. Run with ``-s`` to see the measured numbers.
"""

from __future__ import annotations

import dataclasses
import os
import random
import statistics
from collections.abc import Iterator
from itertools import pairwise

import numpy as np
import pocketsphinx
import pytest
from scipy.stats import mannwhitneyu

from apa.audio import Audio, load_audio
from apa.data.speechocean762 import prepare_speechocean762
from apa.gop.aligner import ARPABET, GopAligner
from apa.gop.analysis import PhoneSegment, UtteranceAnalysis, judge_phone
from apa.gop.config import GopConfig
from apa.gop.errors import AlignmentError
from apa.lexicon import Lexicon
from apa.schema import ErrorRecord, Utterance
from apa.synth.espeak import arpabet_phonemes, speak, speak_phonemes
from apa.text import strip_stress, words_of

N_SAMPLE = 8

SENTENCES = (
    "WE CALL IT BEAR",
    "TOM LIKES THE OLD SWEATER",
    "I WANTED TO SEE THE WORLD",
    "COME DOWN TO ME AS SOON AS YOU CAN",
    "HE PUSHED THE IDEA AWAY",
    "I KNOW HOW TO PROGRAM",
    "EVERYONE CAN WIN AT HOME",
    "I SHOULD HAVE THOUGHT IT THROUGH",
)
"""Texts of the Speechocean762 sample, spoken by espeak-ng from their CMUdict phones."""

SWAP: dict[str, str] = {
    # consonants: another manner of articulation (or place, for the fricatives)
    "P": "F", "B": "M", "T": "S", "D": "L", "K": "HH", "G": "NG", "F": "P", "V": "W",
    "TH": "T", "DH": "Z", "S": "TH", "Z": "JH", "SH": "S", "ZH": "JH", "CH": "SH",
    "JH": "Y", "HH": "K", "M": "B", "N": "L", "NG": "G", "L": "N", "R": "W", "W": "R",
    "Y": "JH",
    # vowels: a distant vowel (front <-> back, high <-> low)
    "IY": "AA", "IH": "AE", "EH": "UW", "AE": "IY", "AA": "IY", "AO": "IY", "AH": "IY",
    "UH": "AE", "UW": "AA", "ER": "IY", "EY": "OW", "AY": "UW", "AW": "IY", "OW": "EY",
    "OY": "IY",
}  # fmt: skip
"""The phone said instead of a canonical one: a clearly different phone of the same kind
(many are common L2 errors: TH->T, DH->Z, V->W, R->W, L->N, IH->AE)."""

MINIMAL_PAIRS = (
    ("WE CALL IT BEAR", "WE CALL IT PEAR", 3, 0),
    ("THE RICE IS HOT", "THE LICE IS HOT", 1, 0),
    ("HE WILL THINK", "HE WILL SINK", 2, 0),
    ("SHE SAW THE COAT", "SHE SAW THE GOAT", 3, 0),
    ("I SEE A FAN", "I SEE A VAN", 3, 0),
    ("MY BAT IS NEW", "MY BOOT IS NEW", 1, 1),
)
"""(reference, what espeak-ng says instead, word index, phone index of the swapped phone)."""


@pytest.fixture(scope="module")
def aligner() -> Iterator[GopAligner]:
    """One aligner for the module, with default settings whatever the shell says."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("APA_GOP_"):
                mp.delenv(key)
        yield GopAligner(GopConfig())


@pytest.fixture(scope="module")
def cmu() -> Lexicon:
    return Lexicon.cmudict()


@pytest.fixture(scope="module")
def sample_utterances(sample_dir) -> list[tuple[Utterance, Audio]]:
    corpus = prepare_speechocean762(sample_dir)
    chosen = corpus.utterances[:: len(corpus.utterances) // N_SAMPLE][:N_SAMPLE]
    return [(u, load_audio(u.audio)) for u in chosen]


@pytest.fixture(scope="module")
def sample_analyses(aligner, sample_utterances) -> list[UtteranceAnalysis]:
    return [aligner.analyse(audio, u.words, u.phones) for u, audio in sample_utterances]


# --- (a) real utterances -------------------------------------------------------------


def test_sample_utterances_align_with_sensible_spans(sample_utterances, sample_analyses):
    for (utt, audio), result in zip(sample_utterances, sample_analyses, strict=True):
        assert [w.text for w in result.words] == utt.words
        assert [[p.phone for p in w.phones] for w in result.words] == utt.phones
        assert result.duration_s == pytest.approx(audio.duration_s)
        previous_end = 0.0
        for word in result.words:
            assert previous_end <= word.start_s < word.end_s <= result.duration_s + 0.01
            assert word.start_s == word.phones[0].start_s
            assert word.end_s == word.phones[-1].end_s
            for left, right in pairwise(word.phones):
                assert left.end_s == pytest.approx(right.start_s)  # contiguous in a word
            for phone in word.phones:
                assert phone.frames >= 3
                assert phone.end_s - phone.start_s == pytest.approx(phone.frames * 0.01)
                assert np.isfinite([phone.aligned_score, phone.loop_score]).all()
                assert 0 < phone.loop_share <= 1
            previous_end = word.end_s
        assert result.leading_silence_s == result.words[0].start_s
        assert result.trailing_silence_s == pytest.approx(
            result.duration_s - result.words[-1].end_s, abs=0.011
        )
        gaps = [(i, b.start_s - a.end_s) for i, (a, b) in enumerate(pairwise(result.words))]
        assert [p.after_word for p in result.pauses] == [i for i, g in gaps if g >= 0.25 - 1e-9]
        assert 3 < result.articulation_rate < 30  # phones per second of speech
        loop = result.loop_phones
        assert loop[0].start_s == 0
        assert all(a.end_s == pytest.approx(b.start_s) for a, b in pairwise(loop))
        assert loop[-1].end_s == pytest.approx(result.duration_s, abs=0.03)
        result.to_dict()  # serialisable summary


def test_sample_gop_is_mostly_near_zero(sample_analyses):
    """Read speech of mostly good learners: most phones are explained about as well as by
    the free phone loop (the calibrator decides what the rest mean)."""
    gops = [p.gop for r in sample_analyses for p in r.phones]
    print(f"\nsample GOP over {len(gops)} phones: median {statistics.median(gops):.2f} nats/frame")
    assert -3 < statistics.median(gops) < 2


def test_result_does_not_depend_on_what_came_before(aligner, sample_utterances, sample_analyses):
    (u0, a0), (u1, a1) = sample_utterances[:2]
    aligner.analyse(a1, u1.words, u1.phones)
    again = aligner.analyse(a0, u0.words, u0.phones)
    assert again.to_dict() == sample_analyses[0].to_dict()


# --- (b) THE KEY TEST: swapped phones score lower -----------------------------------------


@dataclasses.dataclass(frozen=True)
class Swapped:
    canonical: str
    said: str
    intact_gop: float
    segment: PhoneSegment


def _speak(phones: list[list[str]]) -> Audio:
    return speak_phonemes(arpabet_phonemes(phones))


def _swapped_phone(canonical: str) -> str:
    base = strip_stress(canonical)
    new = SWAP[base]
    stress = canonical[len(base) :]
    return new + stress if stress else new


@pytest.fixture(scope="module")
def swap_experiment(aligner, cmu) -> tuple[list[float], list[Swapped]]:
    """Each sentence spoken as written and twice with two phones (in two words) swapped;
    every version aligned against the canonical phones. Returns the intact phones' GOP and
    the swapped phones with the GOP of the same phone in the intact version."""
    intact: list[float] = []
    swapped: list[Swapped] = []
    for index, text in enumerate(SENTENCES):
        words = words_of(text)
        phones = cmu.canonical_phones(words)
        reference = aligner.analyse(_speak(phones), words, phones)
        reference_gop = [[p.gop for p in w.phones] for w in reference.words]
        intact += [g for w in reference_gop for g in w]
        rng = random.Random(index)
        for _ in range(2):
            positions = {
                (i, rng.randrange(len(phones[i]))) for i in rng.sample(range(len(words)), 2)
            }
            said = [
                [_swapped_phone(p) if (i, j) in positions else p for j, p in enumerate(w)]
                for i, w in enumerate(phones)
            ]
            result = aligner.analyse(_speak(said), words, phones)
            for i, word in enumerate(result.words):
                for j, segment in enumerate(word.phones):
                    if (i, j) in positions:
                        swapped.append(
                            Swapped(
                                phones[i][j], strip_stress(said[i][j]), reference_gop[i][j], segment
                            )
                        )
                    else:
                        intact.append(segment.gop)
    return intact, swapped


def auc(higher: list[float], lower: list[float]) -> float:
    """P(a value of ``higher`` > a value of ``lower``), ties half: the Mann-Whitney AUC."""
    return float(mannwhitneyu(higher, lower).statistic) / (len(higher) * len(lower))


def test_swapped_phones_have_lower_gop(swap_experiment):
    intact, swapped = swap_experiment
    bad = [s.segment.gop for s in swapped]
    area = auc(intact, bad)
    paired = [s.intact_gop - s.segment.gop for s in swapped]
    report = (
        f"{len(bad)} swapped vs {len(intact)} intact phones: AUC {area:.3f}; "
        f"GOP intact median {statistics.median(intact):.2f} (10th pct "
        f"{np.quantile(intact, 0.1):.2f}), swapped median {statistics.median(bad):.2f} "
        f"(90th pct {np.quantile(bad, 0.9):.2f}) nats/frame; same phone intact vs swapped: "
        f"lower in {np.mean(np.array(paired) > 0):.0%}, by {statistics.mean(paired):.2f} "
        "nats/frame on average"
    )
    print("\n" + report)
    assert len(bad) == 2 * 2 * len(SENTENCES)
    assert area >= 0.70, report
    assert np.mean(np.array(paired) > 0) >= 0.8, report
    assert statistics.mean(paired) >= 3.0, report


def test_judge_flags_swapped_phones(swap_experiment, aligner):
    intact, swapped = swap_experiment
    verdicts = [judge_phone(s.segment, aligner.config) for s in swapped]
    flagged = np.mean([v.error is not None for v in verdicts])
    as_substitution = np.mean([v.error == "substitution" for v in verdicts])
    right = np.mean([v.pronounced == s.said for v, s in zip(verdicts, swapped, strict=True)])
    print(
        f"\njudge_phone on {len(swapped)} swapped phones: {flagged:.0%} flagged "
        f"({as_substitution:.0%} as substitutions, {right:.0%} naming the phone said)"
    )
    assert flagged >= 0.5
    for v in verdicts:
        if v.error == "substitution":
            assert v.pronounced in ARPABET | {"<unk>"}


def test_minimal_pairs(aligner, cmu):
    """Reference "bear", audio "pear": the swapped phone's GOP falls against the same
    sentence said as written."""
    drops = []
    for reference, said, word, phone in MINIMAL_PAIRS:
        words = words_of(reference)
        phones = cmu.canonical_phones(words)
        good = aligner.analyse(speak(reference.lower()), words, phones)
        bad = aligner.analyse(speak(said.lower()), words, phones)
        drops.append(good.words[word].phones[phone].gop - bad.words[word].phones[phone].gop)
    print("\nminimal pairs, GOP drop of the swapped phone:", [round(d, 1) for d in drops])
    assert sum(d > 0 for d in drops) >= len(drops) - 1
    assert statistics.mean(drops) > 2.0


# --- (c) failures are typed --------------------------------------------------------------


def test_too_short_for_phones_is_refused_before_decoding(aligner, monkeypatch):
    def no_decoding(*args):
        raise AssertionError("decoded an utterance that is too short for its phones")

    monkeypatch.setattr(aligner, "_decode", no_decoding)
    audio = speak("we call it bear")
    short = dataclasses.replace(audio, samples=audio.samples[: int(0.25 * 16000)])
    words = ["WE", "CALL", "IT", "BEAR"]
    phones = [["W", "IY1"], ["K", "AO1", "L"], ["IH1", "T"], ["B", "EH1", "R"]]
    with pytest.raises(AlignmentError) as info:
        aligner.analyse(short, words, phones)
    assert info.value.reason == "alignment.too_short_for_phones"
    record = info.value.record("u1")
    assert isinstance(record, ErrorRecord) and record.stage == "alignment"


@pytest.mark.parametrize(
    ("words", "phones", "reason"),
    [
        ([], [], "alignment.bad_input"),
        (["WE"], [["W", "IY1"], ["K"]], "alignment.bad_input"),
        (["WE"], [[]], "alignment.bad_input"),
        (["WE"], [["W", "QQ1"]], "alignment.unknown_phone"),
    ],
)
def test_bad_input_is_refused(aligner, words, phones, reason):
    audio = Audio(np.zeros(16000, np.float32), 16000, 16000, 1, "WAV")
    with pytest.raises(AlignmentError) as info:
        aligner.analyse(audio, words, phones)
    assert info.value.reason == reason


@pytest.mark.parametrize("kind", ["silence", "white_noise"])
def test_no_speech_fails_cleanly_or_scores_low(aligner, kind):
    rng = np.random.default_rng(1)
    samples = (
        np.zeros(32000, np.float32)
        if kind == "silence"
        else (0.1 * rng.standard_normal(32000)).astype(np.float32)
    )
    audio = Audio(samples, 16000, 16000, 1, "WAV")
    words = ["WE", "CALL", "IT", "BEAR"]
    phones = [["W", "IY1"], ["K", "AO1", "L"], ["IH1", "T"], ["B", "EH1", "R"]]
    try:
        result = aligner.analyse(audio, words, phones)
    except AlignmentError as exc:
        assert exc.reason.startswith("alignment.")
    else:
        print(f"\n{kind}: aligned, utterance GOP {result.gop:.2f} nats/frame")
        assert result.gop < -2.0
    # the aligner is still usable afterwards
    speech = speak("we call it bear")
    assert len(aligner.analyse(speech, words, phones).words) == 4


def test_other_sample_rates_are_resampled(aligner):
    audio = speak("we call it bear")
    import soxr

    at_8k = dataclasses.replace(
        audio, samples=soxr.resample(audio.samples, 16000, 8000), sample_rate=8000
    )
    words = ["WE", "CALL", "IT", "BEAR"]
    phones = [["W", "IY1"], ["K", "AO1", "L"], ["IH1", "T"], ["B", "EH1", "R"]]
    result = aligner.analyse(at_8k, words, phones)
    assert result.duration_s == pytest.approx(audio.duration_s, abs=0.01)


# --- (d) decoders are built once -----------------------------------------------------------


def test_decoders_are_built_once(monkeypatch):
    built = []
    real = pocketsphinx.Decoder

    def spy(*args, **kwargs):
        built.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pocketsphinx, "Decoder", spy)
    aligner = GopAligner(GopConfig())
    assert len(built) == 2  # the aligner and the phone loop
    words = ["WE", "CALL", "IT", "BEAR", "BEAR"]
    phones = [["W", "IY1"], ["K", "AO1", "L"], ["IH1", "T"], ["B", "EH1", "R"], ["B", "EH1", "R"]]
    audio = speak("we call it bear bear")
    first = aligner.analyse(audio, words, phones)
    second = aligner.analyse(audio, words, phones)
    assert len(built) == 2
    assert first.to_dict() == second.to_dict()
    assert aligner.dictionary_size == 4  # one entry per distinct pronunciation, reused


def test_config_reads_the_environment_and_refuses_nonsense(monkeypatch):
    monkeypatch.setenv("APA_GOP_SUBSTITUTION_GOP", "-2.5")
    assert GopConfig().substitution_gop == -2.5
    assert GopConfig().samples_per_frame == 160
    for bad in ({"beam": 0.0}, {"frame_rate": 99}, {"min_phone_frames": 0}, {"dither": -1}):
        with pytest.raises(ValueError):
            GopConfig(**bad)


def test_judge_phone_rules():
    config = GopConfig(substitution_gop=-5.0, deletion_gop=-4.0)

    def seg(phone, frames, aligned, loop_phone):
        return PhoneSegment(phone, 0.0, frames / 100, frames, aligned, 0.0, loop_phone, 1.0)

    assert judge_phone(seg("B", 10, -1.0, "P"), config).error is None  # not low enough
    assert judge_phone(seg("B", 10, -6.0, "B"), config).error is None  # loop agrees
    verdict = judge_phone(seg("B", 10, -6.0, "P"), config)
    assert (verdict.error, verdict.pronounced) == ("substitution", "P")
    assert judge_phone(seg("B", 3, -4.5, "B"), config).error == "deletion"
    assert judge_phone(seg("B", 4, -4.5, "B"), config).error is None
    assert judge_phone(seg("B", 10, -6.0, "SIL"), config).error == "deletion"
    assert judge_phone(seg("B", 10, -6.0, "+SPN+"), config).pronounced == "<unk>"
    assert seg("AO1", 10, -6.0, "AO").loop_differs is False
    assert seg("B", 10, -6.0, "P").is_substituted(config)


# --- the forced alignment alone (alignment-informed LMM scoring, timings) ---------------


def test_align_finds_the_spans_analyse_finds_on_real_speech(
    aligner, sample_utterances, sample_analyses
):
    """``align`` decodes the sound only (leading and trailing silence cut off) and skips the
    phone loop; on real speech its phone spans are those of the full analysis, almost all
    to the frame (measured on these 8: mean 0.1 ms apart, all within 30 ms)."""
    gaps = []
    for (u, audio), analysis in zip(sample_utterances, sample_analyses, strict=True):
        alignment = aligner.align(audio, u.words, u.phones)
        assert [w.text for w in alignment.words] == u.words
        assert [p.phone for p in alignment.phones] == [p for w in u.phones for p in w]
        assert alignment.duration_s == pytest.approx(audio.duration_s)
        bounds = [(p.start_s, p.end_s) for p in alignment.phones]
        assert all(0 <= a < b <= audio.duration_s + 1e-6 for a, b in bounds)
        assert all(b1 <= a2 + 1e-9 for (_, b1), (a2, _) in pairwise(bounds))
        gaps += [
            max(abs(p.start_s - q.start_s), abs(p.end_s - q.end_s))
            for p, q in zip(alignment.phones, analysis.phones, strict=True)
        ]
    print(f"align vs analyse: mean {np.mean(gaps) * 1000:.1f} ms, "
          f"{np.mean(np.array(gaps) < 0.03):.1%} within 30 ms")  # fmt: skip
    assert np.mean(np.array(gaps) < 0.03) >= 0.9
    assert np.mean(gaps) < 0.03


def test_align_many_in_processes_equals_one_by_one(aligner, sample_utterances):
    from apa.gop.aligner import align_many

    requests = [(audio, u.words, u.phones) for u, audio in sample_utterances[:4]]
    bad = (sample_utterances[0][1], ["ONE"], [["ZZ"]])  # not an ARPAbet phone
    parallel = align_many([*requests, bad], processes=2)
    assert parallel[:4] == [aligner.align(*r) for r in requests]
    assert isinstance(parallel[4], AlignmentError)
    assert parallel[4].reason == "alignment.unknown_phone"
    assert align_many(requests[:2], processes=1) == parallel[:2]
