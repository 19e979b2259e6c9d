"""The Speechocean762 corpus (Kaldi data directories + ``scores.json``) as typed records.

Layout, as upstream and in the shared sample::

    root/
      train/ test/          text  wav.scp  utt2spk  spk2age  spk2gender
      WAVE/SPEAKERxxxx/     audio, named by wav.scp relative to root
      text-phone  lexicon.txt  scores.json     (upstream keeps these in root/resource/)

:func:`prepare_speechocean762` turns every utterance of ``text`` (and every stray line of
``wav.scp``) into exactly one :class:`~apa.schema.Utterance` or one
:class:`~apa.schema.ErrorRecord`; ``scores.json`` entries for no utterance become error rows
too, each entry read by the ``scores.json`` codec (:mod:`apa.data.scores_json`).

Decisions on upstream data (for ``scores.json`` itself see :mod:`apa.data.scores_json`):

- Canonical phones: ``text-phone`` when it has every word of the utterance, else the human
  scores' phones, else the lexicon (corpus ``lexicon.txt``, then CMUdict). They must agree
  with the phones the raters scored (see :func:`apa.lexicon.with_canonical_phones`).
- Missing ``utt2spk``/``spk2age``/``spk2gender`` entries leave speaker, age, gender ``None``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from apa.data.scores_json import assessment_from_upstream, validation_message
from apa.errors import ApaError, InputError
from apa.lexicon import Lexicon, with_canonical_phones
from apa.schema import Assessment, ErrorRecord, Utterance
from apa.text import words_of

_POSITION = re.compile(r"_[BIES]$")


@dataclass(frozen=True)
class Speechocean762:
    """A prepared corpus. ``splits`` and ``errors`` are keyed by split name (``train``,
    ``test``); for each split, the ids of ``text`` and ``wav.scp`` are exactly the ids of
    ``splits[name]`` plus those of ``errors[name]``, each once. ``unmatched_scores`` holds a
    row for each entry of a shared ``scores.json`` whose utterance is in no split of the corpus
    (``input.unknown_id``)."""

    root: Path
    splits: dict[str, list[Utterance]]
    errors: dict[str, list[ErrorRecord]]
    unmatched_scores: list[ErrorRecord] = field(default_factory=list)

    @property
    def utterances(self) -> list[Utterance]:
        return [u for split in self.splits.values() for u in split]

    @property
    def all_errors(self) -> list[ErrorRecord]:
        return [e for split in self.errors.values() for e in split] + self.unmatched_scores


def read_kaldi_table(path: Path) -> list[tuple[int, str, str]]:
    """``(line number, key, rest of line)`` for each non-blank line of a Kaldi table file."""
    rows = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.strip().split(maxsplit=1)
        if parts:
            rows.append((number, parts[0], parts[1].strip() if len(parts) > 1 else ""))
    return rows


def _first_values(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for _, key, value in read_kaldi_table(path):
        values.setdefault(key, value)
    return values


def read_text_phone(path: Path) -> dict[str, dict[int, list[str]]]:
    """``text-phone``: utterance id -> word index -> canonical phones, position suffixes
    (``_B _I _E _S``) stripped. A key that is not ``<utt>.<word-index>`` raises ``ValueError``."""
    table: dict[str, dict[int, list[str]]] = {}
    for number, key, rest in read_kaldi_table(path):
        utt, dot, index = key.rpartition(".")
        if not dot or not utt or not index.isdigit():
            raise ValueError(f"{path}:{number}: {key!r} is not <utterance>.<word-index>")
        table.setdefault(utt, {})[int(index)] = [_POSITION.sub("", p) for p in rest.split()]
    return table


def _text_phone_phones(
    entries: Mapping[int, list[str]] | None, n_words: int
) -> list[list[str]] | None:
    if not entries or set(entries) != set(range(n_words)):
        return None
    phones = [entries[i] for i in range(n_words)]
    return phones if all(phones) else None


def _companion(name: str, split_dir: Path, root: Path) -> Path | None:
    for base in (split_dir, root, root / "resource"):
        if (base / name).is_file():
            return base / name
    return None


def _resolve_audio(ref: str, root: Path, split_dir: Path) -> str:
    if ref.endswith("|"):
        raise InputError("no_audio", f"wav.scp entry {ref!r} is a command, not an audio path")
    if "://" in ref:
        return ref
    path = Path(ref)
    candidates = [path] if path.is_absolute() else [root / path, split_dir / path]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    where = " or ".join(str(c) for c in candidates)
    raise InputError("no_audio", f"audio {ref!r} of wav.scp not found ({where})")


class _Files:
    """Companion files, each read once."""

    def __init__(self, lexicon: Lexicon | None) -> None:
        self._given = lexicon
        self.text_phone: dict[Path, dict[str, dict[int, list[str]]]] = {}
        self.lexicons: dict[Path | None, Lexicon] = {}
        self.scores: dict[Path, dict[str, Any]] = {}

    def phones_table(self, path: Path | None) -> dict[str, dict[int, list[str]]]:
        if path is None:
            return {}
        if path not in self.text_phone:
            self.text_phone[path] = read_text_phone(path)
        return self.text_phone[path]

    def lexicon(self, path: Path | None) -> Lexicon:
        if self._given is not None:
            return self._given
        if path not in self.lexicons:
            cmu = Lexicon.cmudict()
            self.lexicons[path] = Lexicon.from_file(path).with_fallback(cmu) if path else cmu
        return self.lexicons[path]

    def score_table(self, path: Path | None) -> dict[str, Any]:
        if path is None:
            return {}
        if path not in self.scores:
            table = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(table, dict):
                raise ValueError(f"{path}: expected an object of utterance id -> scores")
            self.scores[path] = table
        return self.scores[path]


class _Split:
    """One split directory, its Kaldi tables and companion files, read."""

    def __init__(self, split_dir: Path, root: Path, files: _Files) -> None:
        self.dir, self.root, self.files = split_dir, root, files
        self.text_rows = read_kaldi_table(split_dir / "text")
        scp = split_dir / "wav.scp"
        self.wav_rows = read_kaldi_table(scp) if scp.is_file() else []
        self.wav: dict[str, str] = {}
        self.wav_conflicts: set[str] = set()
        for _, key, ref in self.wav_rows:
            if self.wav.setdefault(key, ref) != ref:
                self.wav_conflicts.add(key)
        self.utt2spk = _first_values(split_dir / "utt2spk")
        self.spk2age = _first_values(split_dir / "spk2age")
        self.spk2gender = _first_values(split_dir / "spk2gender")
        self.text_phone = files.phones_table(_companion("text-phone", split_dir, root))
        self.scores_path = _companion("scores.json", split_dir, root)
        self.scores = files.score_table(self.scores_path)
        self.lexicon_path = _companion("lexicon.txt", split_dir, root)

    def _human(self, utt_id: str, text: str) -> Assessment | None:
        if utt_id not in self.scores:
            return None
        entry = self.scores[utt_id]
        if isinstance(entry, Mapping) and "text" in entry:
            if not isinstance(entry["text"], str) or words_of(entry["text"]) != words_of(text):
                raise InputError(
                    "text_mismatch",
                    f"{utt_id}: text says {text!r} but scores.json says {entry['text']!r}",
                )
            entry = {**entry, "text": text}
        return assessment_from_upstream(utt_id, entry)

    def utterance(self, utt_id: str, text: str) -> Utterance:
        if not text:
            raise InputError("missing_field", f"{utt_id}: the line in text has no transcript")
        if utt_id in self.wav_conflicts:
            raise InputError("duplicate_id", f"{utt_id}: several different lines in wav.scp")
        if utt_id not in self.wav:
            raise InputError("no_audio", f"{utt_id}: no line in wav.scp")
        audio = _resolve_audio(self.wav[utt_id], self.root, self.dir)
        human = self._human(utt_id, text)
        speaker = self.utt2spk.get(utt_id)
        try:
            utt = Utterance(
                id=utt_id,
                text=text,
                audio=audio,
                phones=_text_phone_phones(self.text_phone.get(utt_id), len(words_of(text))),
                speaker=speaker,
                age=self.spk2age.get(speaker) if speaker else None,
                gender=self.spk2gender.get(speaker) if speaker else None,
                human=human,
            )
        except ValidationError as e:
            raise InputError("invalid_field", f"{utt_id}: {validation_message(e)}") from None
        lexicon = self.files.lexicon(self.lexicon_path) if utt.phones is None else None
        return with_canonical_phones(utt, lexicon)

    def prepare(self) -> tuple[list[Utterance], list[ErrorRecord]]:
        """One utterance or one error per id of ``text``, then an error per id that only
        ``wav.scp`` has."""
        text_lines: dict[str, list[int]] = {}
        for number, key, _ in self.text_rows:
            text_lines.setdefault(key, []).append(number)
        utterances: list[Utterance] = []
        errors: list[ErrorRecord] = []
        for _, utt_id, text in self.text_rows:
            lines = text_lines.pop(utt_id, None)
            if lines is None:  # a later line of a duplicated id: already reported
                continue
            try:
                if len(lines) > 1:
                    where = ", ".join(map(str, lines))
                    raise InputError("duplicate_id", f"{utt_id}: on lines {where} of text")
                utterances.append(self.utterance(utt_id, text))
            except ApaError as e:
                errors.append(e.record(utt_id))
        in_text = {key for _, key, _ in self.text_rows}
        for utt_id in dict.fromkeys(key for _, key, _ in self.wav_rows):
            if utt_id not in in_text:
                message = f"{utt_id}: in wav.scp but not in text"
                errors.append(InputError("missing_field", message).record(utt_id))
        return utterances, errors


def _text_ids(split_dirs: Iterable[Path]) -> set[str]:
    return {key for d in split_dirs for _, key, _ in read_kaldi_table(d / "text")}


def prepare_speechocean762(
    root: str | Path,
    splits: Sequence[str] = ("train", "test"),
    *,
    lexicon: Lexicon | None = None,
) -> Speechocean762:
    """Read a Speechocean762 corpus into :class:`~apa.schema.Utterance` records.

    ``root`` is the corpus root (with ``train/`` and ``test/``; ``splits`` picks them) or one
    split directory (one holding ``text``: its name is the split's, ``splits`` is unused, and
    its parent is the corpus root). ``wav.scp`` paths resolve against the corpus root, then the
    split directory; absolute paths and URIs are kept. ``text-phone``, ``lexicon.txt`` and
    ``scores.json`` are looked for in the split directory, the root, then ``root/resource``.
    ``lexicon`` replaces the corpus lexicon (+ CMUdict) for words ``text-phone`` lacks.

    A missing split directory raises ``FileNotFoundError``; everything wrong with a single
    utterance becomes an :class:`~apa.schema.ErrorRecord` instead.
    """
    root = Path(root).expanduser().resolve()
    if (root / "text").is_file():
        split_dirs = {root.name: root}
        corpus_root = root.parent
    else:
        split_dirs = {name: root / name for name in splits}
        corpus_root = root
        for name, d in split_dirs.items():
            if not (d / "text").is_file():
                raise FileNotFoundError(f"split {name!r}: no {d / 'text'}")
    files = _Files(lexicon)
    prepared: dict[str, list[Utterance]] = {}
    errors: dict[str, list[ErrorRecord]] = {}
    scored_by: dict[Path, list[str]] = {}
    for name, d in split_dirs.items():
        split = _Split(d, corpus_root, files)
        prepared[name], errors[name] = split.prepare()
        if split.scores_path is not None:
            scored_by.setdefault(split.scores_path, []).append(name)

    unmatched: list[ErrorRecord] = []
    reported = {e.utterance_id for errs in errors.values() for e in errs}
    for path, names in scored_by.items():
        local = [n for n in names if split_dirs[n] == path.parent]
        if local:  # a split's own scores.json: its entries must be that split's utterances
            known, sink, where = _text_ids([path.parent]), errors[local[0]], path.parent / "text"
        else:  # a shared one: each entry must be an utterance of some split of the corpus
            corpus_splits = [p.parent for p in corpus_root.glob("*/text")]
            known, sink = _text_ids([*corpus_splits, *split_dirs.values()]), unmatched
            where = f"any {corpus_root}/*/text"
        for utt_id in files.scores[path]:
            if utt_id not in known and utt_id not in reported:
                message = f"{utt_id}: in {path} but not in {where}"
                sink.append(InputError("unknown_id", message).record(utt_id))
    return Speechocean762(
        root=corpus_root, splits=prepared, errors=errors, unmatched_scores=unmatched
    )
