from pathlib import Path

import pytest

from apa.errors import InputError, LexiconError
from apa.lexicon import ChainedLexicon, Lexicon, with_canonical_phones
from apa.schema import Assessment, PhoneAssessment, SentenceScores, Utterance, WordAssessment


@pytest.fixture(scope="module")
def corpus(sample_dir: Path) -> Lexicon:
    return Lexicon.from_file(sample_dir / "lexicon.txt")


@pytest.fixture(scope="module")
def chain(corpus: Lexicon) -> ChainedLexicon:
    return corpus.with_fallback(Lexicon.cmudict())


def test_corpus_lexicon_words_and_their_pronunciations_in_file_order(
    corpus: Lexicon, sample_dir: Path
) -> None:
    assert corpus.lookup("WE") == ["W", "IY0"]
    assert corpus.lookup("bear,") == ["B", "EH0", "R"]  # normalised like reference words
    assert corpus.pronunciations("A") == [["AH0"], ["EY0"]]
    assert corpus.pronunciations("ANN'S") == [["AE0", "N", "S"], ["AE0", "N", "Z"]]
    assert corpus.source("call") == "the corpus lexicon"
    assert corpus.lookup("XYLOPHONE") is None and corpus.pronunciations("XYLOPHONE") == []
    assert corpus.source("XYLOPHONE") is None
    assert "WE" in corpus and "XYLOPHONE" not in corpus
    lines = (sample_dir / "lexicon.txt").read_text().splitlines()
    assert len(corpus) == len({line.split()[0] for line in lines if line.strip()}) > 2000


def test_cmudict_fills_words_the_corpus_lexicon_lacks(corpus: Lexicon, chain: Lexicon) -> None:
    assert "XYLOPHONE" not in corpus
    assert chain.lookup("xylophone") == ["Z", "AY1", "L", "AH0", "F", "OW2", "N"]
    assert chain.source("XYLOPHONE") == "CMUdict"
    # the corpus lexicon wins where both have the word (its stress convention differs)
    assert chain.lookup("CALL") == ["K", "AO0", "L"]
    assert Lexicon.cmudict().lookup("CALL") == ["K", "AO1", "L"]
    assert chain.source("CALL") == "the corpus lexicon"
    assert chain.canonical_phones(["WE", "Xylophone"]) == [["W", "IY0"], chain.lookup("XYLOPHONE")]


def test_cmudict_is_shared_and_has_only_plain_words() -> None:
    cmu = Lexicon.cmudict()
    assert cmu is Lexicon.cmudict()
    assert cmu.pronunciations("A") == [["AH0"], ["EY1"]]  # "a." and "a's" do not leak in
    assert all(not word.startswith("'") for word in cmu.entries)


def test_unknown_words_are_reported_all_at_once_by_name(chain: Lexicon) -> None:
    with pytest.raises(LexiconError) as caught:
        chain.canonical_phones(["WE", "QZXWV", "CALL", "FLURBOX", "qzxwv"])
    error = caught.value
    assert error.reason == "lexicon.unknown_word"
    assert str(error) == (
        "no pronunciation for 'QZXWV', 'FLURBOX' in the corpus lexicon or CMUdict"
    )
    record = error.record("u7")
    assert (record.utterance_id, record.stage, record.reason) == ("u7", "lexicon", error.reason)
    assert "QZXWV" in record.message and "FLURBOX" in record.message


def test_chain_tries_lexicons_in_order() -> None:
    first = Lexicon({"bear": [["B", "EH0", "R"]]}, name="first")
    second = Lexicon({"BEAR": [["B", "EH1", "R"]], "zoo": [["Z", "UW1"]]}, name="second")
    chain = first.with_fallback(second)
    assert chain.pronunciations("Bear") == [["B", "EH0", "R"]]
    assert (chain.source("bear"), chain.source("zoo"), chain.source("nope")) == (
        "first",
        "second",
        None,
    )
    assert second.with_fallback(first).lookup("BEAR") == ["B", "EH1", "R"]
    assert set(chain.entries) == {"BEAR", "ZOO"} and chain.entries["BEAR"] == (("B", "EH0", "R"),)


def test_lexicon_file_with_a_word_and_no_phones_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.txt"
    path.write_text("WE W IY0\nCALL\n")
    with pytest.raises(ValueError, match=r"lexicon.txt:2: word 'CALL' has no phones"):
        Lexicon.from_file(path)


def test_lexicon_file_accepts_spaces_and_tabs(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.txt"
    path.write_text("WE W IY0\n\nWE\tW IH0\nIT\tIH0 T\n")
    lexicon = Lexicon.from_file(path, name="mine")
    assert lexicon.pronunciations("we") == [["W", "IY0"], ["W", "IH0"]]
    assert lexicon.source("IT") == "mine"


def _human(text: str, phones: list[list[str]]) -> Assessment:
    words = [
        WordAssessment(
            text=word,
            accuracy=10,
            stress=10,
            total=10,
            phones=[PhoneAssessment(phone=p, accuracy=2) for p in word_phones],
        )
        for word, word_phones in zip(text.split(), phones, strict=True)
    ]
    scores = SentenceScores(accuracy=9, fluency=9, prosody=9, completeness=10, total=9)
    return Assessment(utterance_id="u1", text=text, sentence=scores, words=words, model="human")


def test_with_canonical_phones_fills_only_missing_phones(chain: Lexicon) -> None:
    utt = Utterance(id="u1", text="We call it a xylophone.")
    filled = with_canonical_phones(utt, chain)
    assert filled.phones == [
        ["W", "IY0"],
        ["K", "AO0", "L"],
        ["IH0", "T"],
        ["AH0"],
        ["Z", "AY1", "L", "AH0", "F", "OW2", "N"],
    ]
    assert utt.phones is None  # records are frozen: a new one comes back
    given = Utterance(id="u1", text="we", phones=[["W", "IH0"]])
    assert with_canonical_phones(given, chain) is given
    assert with_canonical_phones(utt, None).phones is None


def test_with_canonical_phones_reports_unknown_words(chain: Lexicon) -> None:
    with pytest.raises(LexiconError, match="'BLORPT'"):
        with_canonical_phones(Utterance(id="u1", text="we blorpt"), chain)


def test_with_canonical_phones_prefers_the_phones_the_raters_scored(chain: Lexicon) -> None:
    # "TO" is T AH0 first in the corpus lexicon; the raters scored T UW0
    human = _human("TO", [["T", "UW0"]])
    utt = Utterance(id="u1", text="to", human=human)
    assert chain.lookup("TO") == ["T", "AH0"]
    assert with_canonical_phones(utt, chain).phones == [["T", "UW0"]]


def test_with_canonical_phones_refuses_phones_that_differ_from_the_scored_ones() -> None:
    human = _human("WE CALL", [["W", "IY0"], ["K", "AO0", "L"]])
    same_but_stress = Utterance(
        id="u1", text="we call", phones=[["W", "IY1"], ["K", "AO1", "L"]], human=human
    )
    assert with_canonical_phones(same_but_stress, None).phones == [["W", "IY1"], ["K", "AO1", "L"]]
    phones = [["W", "IY0"], ["K", "AA0", "L"]]
    other = Utterance(id="u1", text="we call", phones=phones, human=human)
    with pytest.raises(InputError) as caught:
        with_canonical_phones(other, None)
    assert caught.value.reason == "input.phone_mismatch"
    assert "'CALL'" in caught.value.message
