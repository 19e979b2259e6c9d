"""The Speechocean762 reader on the shared sample, and on copies of its text files (never its
audio) with ``scores.json`` files built here in the upstream schema."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from apa.data.scores_json import assessment_from_upstream, assessment_to_upstream
from apa.data.speechocean762 import prepare_speechocean762
from apa.errors import InputError
from apa.lexicon import Lexicon
from apa.schema import Assessment, PhoneAssessment, Utterance

KALDI_FILES = ("text", "utt2spk", "spk2age", "spk2gender")


def _table(path: Path) -> dict[str, str]:
    rows = (line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())
    return {key: value.strip() for key, value in rows}


# --- the shared sample ------------------------------------------------------------------


def test_sample_loads_every_utterance_without_errors(sample_dir: Path) -> None:
    corpus = prepare_speechocean762(sample_dir)
    assert {name: len(utts) for name, utts in corpus.splits.items()} == {"train": 100, "test": 100}
    assert corpus.all_errors == [] and corpus.unmatched_scores == []
    assert corpus.root == sample_dir.resolve()
    for name, utts in corpus.splits.items():
        split = sample_dir / name
        text, utt2spk = _table(split / "text"), _table(split / "utt2spk")
        spk2age, spk2gender = _table(split / "spk2age"), _table(split / "spk2gender")
        assert [u.id for u in utts] == list(text)
        for utt in utts:
            assert utt.text == text[utt.id]
            assert utt.speaker == utt2spk[utt.id]
            assert utt.age == int(spk2age[utt.speaker])
            assert utt.gender == spk2gender[utt.speaker] in {"m", "f"}
            assert Path(utt.audio).is_file()
            assert Path(utt.audio).parent.parent == sample_dir.resolve() / "WAVE"
            assert utt.phones is not None and len(utt.phones) == len(utt.words)
            assert utt.human is None
    first = corpus.splits["train"][0]
    assert (first.id, first.speaker, first.age, first.gender) == ("000010011", "0001", 6, "m")


def test_text_phone_gives_the_phones_of_the_corpus_lexicon(sample_dir: Path) -> None:
    corpus = prepare_speechocean762(sample_dir)
    lexicon = Lexicon.from_file(sample_dir / "lexicon.txt")
    by_id = {u.id: u for u in corpus.utterances}
    bear = by_id["000010011"]
    assert bear.text == "WE CALL IT BEAR"
    assert bear.phones == [["W", "IY0"], ["K", "AO0", "L"], ["IH0", "T"], ["B", "EH0", "R"]]
    assert bear.phones == [lexicon.lookup(w) for w in bear.words]
    # text-phone picks the pronunciation the raters scored, not always the lexicon's first
    mark = by_id["000030012"]
    assert mark.words[3] == "TO" and mark.phones[3] == ["T", "UW0"]
    assert lexicon.lookup("TO") == ["T", "AH0"]
    for utt in corpus.utterances:
        for word, phones in zip(utt.words, utt.phones or [], strict=True):
            assert phones in lexicon.pronunciations(word), (utt.id, word)


def test_a_split_directory_alone_is_read_as_that_split(sample_dir: Path) -> None:
    alone = prepare_speechocean762(sample_dir / "test")
    assert list(alone.splits) == ["test"] and alone.all_errors == []
    assert alone.splits["test"] == prepare_speechocean762(sample_dir, ["test"]).splits["test"]


def test_a_missing_split_directory_raises(sample_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="'dev'"):
        prepare_speechocean762(sample_dir, ["train", "dev"])


# --- copies with scores.json ------------------------------------------------------------


def _write_scp(path: Path, table: dict[str, str], extra: str = "") -> None:
    path.write_text("".join(f"{k} {v}\n" for k, v in table.items()) + extra)


def _entry(utt: Utterance, **sentence: Any) -> dict[str, Any]:
    """A perfect scores.json entry for ``utt`` in the upstream file form."""
    words = [
        {
            "accuracy": 10,
            "stress": 10,
            "total": 10,
            "text": word,
            "phones": " ".join(phones),
            "phones-accuracy": [2.0] * len(phones),
        }
        for word, phones in zip(utt.words, utt.phones or [], strict=True)
    ]
    base = {"text": utt.text, "accuracy": 8, "completeness": 10.0, "fluency": 9, "prosodic": 9}
    return {**base, "total": 8, "words": words, **sentence}


BEAR_ENTRY: dict[str, Any] = {
    "text": "WE CALL IT BEAR",
    "accuracy": 8,
    "completeness": 10.0,
    "fluency": 9,
    "prosodic": 7,
    "total": 8,
    "words": [
        {
            "accuracy": 10, "stress": 10, "total": 10, "text": "WE", "phones": "W IY0",
            "phones-accuracy": [2.0, 0.4],
            # said as the canonical phone (stress aside): not a substitution
            "mispronunciations": [{"canonical-phone": "IY0", "index": 1, "pronounced-phone": "IY"}],
        },
        {
            "accuracy": 5, "stress": 10, "total": 5, "text": "CALL", "phones": "K AO0 L",
            "phones-accuracy": [2.0, 0.2, 1.8],
            "mispronunciations": [{"canonical-phone": "AO0", "index": 1, "pronounced-phone": "AA"}],
        },
        {
            "accuracy": 4, "stress": 10, "total": 4, "text": "IT", "phones": "IH0 T",
            "phones-accuracy": [0.0, 2.0],
            "mispronunciations": [
                {"canonical-phone": "IH", "index": 0, "pronounced-phone": "<unk>"}
            ],
        },
        {
            "accuracy": 6, "stress": 5, "total": 6, "text": "BEAR", "phones": "B EH0 R",
            "phones-accuracy": [2.0, 1.0, 0.4],
            "mispronunciations": [{"canonical-phone": "R", "index": 2, "pronounced-phone": "R*"}],
        },
    ],
}  # fmt: skip


def _train(root: Path) -> dict[str, Utterance]:
    return {u.id: u for u in prepare_speechocean762(root, ["train"]).splits["train"]}


@pytest.mark.parametrize("where", ["train", ".", "resource"])
def test_scores_json_gives_human_assessments(corpus_copy: Path, where: str) -> None:
    plain = _train(corpus_copy)
    others = list(plain)[1:4]
    scores = {"000010011": BEAR_ENTRY, **{i: _entry(plain[i]) for i in others}}
    (corpus_copy / where / "scores.json").write_text(json.dumps(scores))

    corpus = prepare_speechocean762(corpus_copy, ["train"])
    assert corpus.all_errors == []
    utts = {u.id: u for u in corpus.splits["train"]}
    assert len(utts) == 100
    assert sum(u.human is not None for u in utts.values()) == 4
    bear = utts["000010011"].human
    assert bear is not None and bear.model == "human" and bear.utterance_id == "000010011"
    assert bear.sentence.model_dump() == {
        "accuracy": 8, "fluency": 9, "prosody": 7, "completeness": 10, "total": 8,
    }  # fmt: skip
    we, call, it, bear_word = bear.words
    assert we.phones[1] == PhoneAssessment(phone="IY0", accuracy=0.4)
    assert call.phones[1] == PhoneAssessment(
        phone="AO0", accuracy=0.2, error="substitution", pronounced="AA"
    )
    assert it.phones[0].pronounced == "<unk>" and it.phones[0].error == "substitution"
    assert bear_word.phones[2].pronounced == "R*" and bear_word.phones[2].accuracy == 0.4
    assert (bear_word.accuracy, bear_word.stress, bear_word.total) == (6, 5, 6)
    assert [p.error for w in bear.words for p in w.phones].count("substitution") == 3
    assert utts["000010011"].phones == plain["000010011"].phones
    assert all(utts[i].human.words[0].phones[0].accuracy == 2.0 for i in others)


def _reasons(errors: list) -> dict[str, str]:
    return {e.utterance_id: e.reason for e in errors}


def test_bad_utterances_become_error_rows_and_counts_add_up(
    corpus_copy: Path, sample_dir: Path
) -> None:
    plain = _train(corpus_copy)
    ids = list(plain)
    audio = plain[ids[0]].audio
    split = corpus_copy / "train"

    # text: a duplicated line, a word in no lexicon, a word only CMUdict has
    text = (split / "text").read_text()
    text += f"{ids[5]} {plain[ids[5]].text}\n"
    text += "777777777 WE CALL QZXWV\n777777778 WE CALL IT A XYLOPHONE\n"
    (split / "text").write_text(text)
    # wav.scp: one utterance missing, one pointing nowhere, one line without a text line
    wav = _table(split / "wav.scp")
    del wav[ids[3]]
    wav[ids[4]] = str(corpus_copy / "WAVE" / "nowhere.flac")
    wav.update({"777777777": audio, "777777778": audio})
    _write_scp(split / "wav.scp", wav, extra=f"888888888 {audio}\n")

    scores = {
        ids[0]: _entry(plain[ids[0]], text="WE CALL IT A BEAR"),
        ids[1]: _entry(plain[ids[1]], fluency=11),
        ids[2]: _entry(plain[ids[2]]),
        ids[6]: _entry(plain[ids[6]]),
        ids[7]: _entry(plain[ids[7]]),
        "999999999": _entry(plain[ids[8]]),
    }
    scores[ids[2]]["words"][0]["phones-accuracy"][1] = 2.5
    scores[ids[6]]["words"][0]["phones"] = "ZH " + scores[ids[6]]["words"][0]["phones"]
    scores[ids[6]]["words"][0]["phones-accuracy"].append(2.0)
    (corpus_copy / "resource" / "scores.json").write_text(json.dumps(scores))

    corpus = prepare_speechocean762(corpus_copy, ["train"])
    errors = corpus.errors["train"]
    assert _reasons(errors) == {
        ids[0]: "input.text_mismatch",
        ids[1]: "input.invalid_scores",
        ids[2]: "input.invalid_scores",
        ids[3]: "input.no_audio",
        ids[4]: "input.no_audio",
        ids[5]: "input.duplicate_id",
        ids[6]: "input.phone_mismatch",
        "777777777": "lexicon.unknown_word",
        "888888888": "input.missing_field",
    }
    messages = {e.utterance_id: e.message for e in errors}
    assert "sentence.fluency" in messages[ids[1]]
    assert "words.0.phones.1.accuracy" in messages[ids[2]]
    assert "'QZXWV'" in messages["777777777"] and "CMUdict" in messages["777777777"]
    assert "nowhere.flac" in messages[ids[4]]
    assert _reasons(corpus.unmatched_scores) == {"999999999": "input.unknown_id"}

    utts = {u.id: u for u in corpus.splits["train"]}
    assert utts["777777778"].phones[-1] == ["Z", "AY1", "L", "AH0", "F", "OW2", "N"]
    assert utts[ids[7]].human is not None
    # every id of text and wav.scp is exactly one utterance or one error
    in_files = set(_table(split / "text")) | set(_table(split / "wav.scp")) | {"888888888"}
    out = [u.id for u in corpus.splits["train"]] + [e.utterance_id for e in errors]
    assert len(out) == len(set(out)) == len(in_files) == 100 + 2 + 1
    assert set(out) == in_files


def test_a_splits_own_scores_json_reports_entries_of_other_utterances(corpus_copy: Path) -> None:
    plain = _train(corpus_copy)
    first = plain["000010011"]
    scores = {first.id: _entry(first), "000000001": _entry(first)}
    (corpus_copy / "train" / "scores.json").write_text(json.dumps(scores))
    corpus = prepare_speechocean762(corpus_copy / "train")
    assert _reasons(corpus.errors["train"]) == {"000000001": "input.unknown_id"}
    assert len(corpus.splits["train"]) == 100 and corpus.unmatched_scores == []


def test_a_shared_scores_json_may_hold_the_other_splits(
    corpus_copy: Path, sample_dir: Path
) -> None:
    (corpus_copy / "test").mkdir()
    shutil.copy(sample_dir / "test" / "text", corpus_copy / "test" / "text")
    test_id = next(iter(_table(sample_dir / "test" / "text")))
    plain = _train(corpus_copy)
    scores = {"000010011": _entry(plain["000010011"]), test_id: {"text": "ANYTHING"}}
    (corpus_copy / "resource" / "scores.json").write_text(json.dumps(scores))
    corpus = prepare_speechocean762(corpus_copy, ["train"])
    assert corpus.all_errors == []


# --- the upstream <-> Assessment conversion ------------------------------------------------


def test_upstream_round_trip() -> None:
    bear = assessment_from_upstream("000010011", BEAR_ENTRY)
    assert isinstance(bear, Assessment)
    upstream = assessment_to_upstream(bear)
    assert assessment_from_upstream("000010011", upstream) == bear
    assert json.loads(json.dumps(upstream)) == upstream
    # the entry comes back as it was, but for the mispronunciation that was no substitution
    expected = copy.deepcopy(BEAR_ENTRY)
    del expected["words"][0]["mispronunciations"]
    expected["words"][2]["mispronunciations"][0]["canonical-phone"] = "IH0"
    assert upstream == expected


def test_hugging_face_form_reads_like_the_file_form() -> None:
    hf = copy.deepcopy(BEAR_ENTRY)
    for word in hf["words"]:
        word["phones"] = word["phones"].split()
        m = word.pop("mispronunciations")
        word["mispronunciations"] = {key: [item[key] for item in m] for key in m[0]}
    hf["words"] = {key: [w[key] for w in hf["words"]] for key in hf["words"][0]}
    assert assessment_from_upstream("u", hf) == assessment_from_upstream("u", BEAR_ENTRY)


def test_upstream_form_cannot_hold_deletions() -> None:
    bear = assessment_from_upstream("000010011", BEAR_ENTRY)
    word = bear.words[3]
    gone = PhoneAssessment(phone="R", accuracy=0, error="deletion")
    deleted = word.model_copy(update={"phones": [*word.phones[:2], gone]})
    with pytest.raises(ValueError, match="deletions"):
        assessment_to_upstream(bear.model_copy(update={"words": [*bear.words[:3], deleted]}))


def _word_bear(**changes: Any) -> dict[str, Any]:
    entry = copy.deepcopy(BEAR_ENTRY)
    entry["words"][3].update(changes)
    return entry


@pytest.mark.parametrize(
    ("entry", "location"),
    [
        (_word_bear(**{"phones-accuracy": [2.0, 1.0]}), "words.3.phones-accuracy: 2 scores for 3"),
        (_word_bear(**{"phones-accuracy": None}), "words.3.phones-accuracy: missing"),
        (_word_bear(phones=7), "words.3.phones"),
        (
            _word_bear(mispronunciations=[{"index": 3, "pronounced-phone": "L"}]),
            "words.3.mispronunciations.0.index",
        ),
        (
            _word_bear(mispronunciations=[{"index": 1, "canonical-phone": "R",
                                           "pronounced-phone": "L"}]),
            "words.3.mispronunciations.0.canonical-phone",
        ),
        (
            _word_bear(mispronunciations=[{"index": 1, "pronounced-phone": None}]),
            "words.3.mispronunciations.0.pronounced-phone",
        ),
        (_word_bear(stress=float("nan")), "words.3.stress"),
        (_word_bear(text="BEER"), "do not follow the reference text"),
        ({**BEAR_ENTRY, "words": "WE CALL"}, "words: expected a list"),
        ({k: v for k, v in BEAR_ENTRY.items() if k != "prosodic"}, "sentence.prosody: Field"),
        ([1, 2], "expected an object"),
    ],
)  # fmt: skip
def test_bad_scores_are_input_errors_with_their_location(entry: Any, location: str) -> None:
    with pytest.raises(InputError) as caught:
        assessment_from_upstream("000010011", entry)
    assert caught.value.reason == "input.invalid_scores"
    assert location in caught.value.message
    assert caught.value.raw is not None
