"""A synthetic, labelled Speechocean762-format corpus spoken by espeak-ng, for proving that a
model learns (``apa synth``; ``docs/synthetic-corpus.md``).

Human scores cannot be shipped, so every label here follows a documented rule tied to what
the audio says. Each utterance is a sentence of 3-6 words drawn from :data:`WORDS` (common
English words whose CMUdict pronunciation has neither ``OY`` nor ``ZH``), its words spoken
one by one through espeak-ng's phoneme input (:func:`apa.synth.espeak.arpabet_phonemes`) at
a random rate, with some filled pauses ("um") between them, and joined by 50 ms of silence
(:func:`apa.synth.espeak.speak_words`), with some phones deliberately substituted:

Speaking rate and filled pauses -> sentence ``fluency``
    ``rate`` is drawn uniformly from 110-260 words per minute (espeak-ng ``-s``), and ``k``
    filled pauses uniformly from ``0..min(3, words - 1)``, each an "um" (espeak-ng ``'@:m``,
    at the utterance's rate) said between two words at distinct random word boundaries;
    ``fluency = clip(10 - 6 * (260 - rate) / 150 - 4 * k / 3, 0, 10)``: slow speech costs
    up to 6 points, hesitations up to 4.

    Rules version 1 drew espeak-ng's word gap (``-g``) as the pause term and labelled it as
    10 ms units; what that option puts between words depends on the rate and the words, so
    the label did not follow the silence heard (a 10 ms energy detector's silence per word
    gap correlated with it at 0.74). Version 2 put exactly the drawn silence (0-300 ms)
    between words (that detector: 0.992), and the built-in model still did not learn it:
    silence between words is the same silence as the clips' edge padding, and telling them
    apart takes context the tiny model rarely finds (benchmarks/RESULTS.md, ``##
    Learnability``). A filled pause is a sound of its own, heard wherever it is, and a
    hesitation raters count against fluency.

Substituted phones -> ``phone`` accuracy, ``word`` accuracy/total, sentence ``accuracy``
    ``k`` phones are substituted, ``k`` uniform in ``0..round(0.35 * phones)``, at positions
    drawn uniformly: a vowel is said as ``OY``, a consonant as ``ZH`` (sounds no word of
    the corpus has, so a substitution is audible without knowing the reference; a consonant
    right after ``D`` is not chosen, since espeak-ng would fuse ``D ZH`` into ``JH``). A
    substituted phone scores 0 (``error="substitution"``, ``pronounced`` the phone said),
    an intact one 2. A word's ``accuracy`` and ``total`` are ``10 * (intact phones of the
    word) / (phones of the word)``; the sentence ``accuracy`` is ``10 * (intact phones) /
    (phones)``.

``total`` (sentence)
    ``(accuracy + fluency) / 2``.

Rules version 4 (``rules=4``; version 3 stays the default, and its corpora are unchanged)
makes the phone errors harder, where real learners are hard: each of the ``k`` positions
drawn as above gets one kind of error, drawn uniformly among those that apply there:

- ``obvious``: as in version 3 (``OY``/``ZH``), accuracy 0;
- ``near``: a near pair, ``D``<->``T``, ``Z``<->``S``, ``IY``<->``IH`` (stress kept), which
  no listener can spot without knowing the reference, accuracy 0 (``substitution``);
- ``reduced``: a full vowel (any but ``AH``) said as the schwa ``AH0``, the right vowel
  weakly said, accuracy 1 (``substitution``, ``pronounced`` ``AH``);
- ``deleted``: a word's last phone, a consonant, left out (words of two phones or more),
  accuracy 0 with no pronounced phone, as upstream marks a missed phone (``scores.json``
  has no deletions; ``synth.json`` and :attr:`SynthUtterance.errors` name the kind).

A word's ``accuracy`` and ``total`` are then ``10 * (sum of its phones' accuracy) / (2 *
phones)``, the sentence ``accuracy`` the same over all phones: in version 3 (accuracies 0
and 2) that is the intact share, as before.

Equal lengths: every clip is padded with silence to the corpus's longest clip (plus
0.2 s), split between the start and the end at random. Otherwise the clip length alone
(the number of audio tokens) would give fluency away: an untrained, random model already
correlated at 0.73 with fluency on unpadded clips (rules version 1). With equal lengths a
model has to find the rate and the filled pauses inside the clip.

Fixed length (``phones``, optional): every sentence has exactly that many phones (best with
``min_words == max_words``). Speech time then follows from the rate and the filled pauses
alone, and the share of substituted phones from their count alone, so both rules can be
heard without counting the reference's phones. With sentences of 8-20 phones (3-5 words,
rules version 1), speech time correlates with fluency at only about -0.86 and the
substitution count with accuracy at about -0.91; a model must also relate what it hears to
the reference's length to do better.

Not defined by any rule, so ``None`` (not estimated: no training target, not evaluated):
sentence ``prosody`` and ``completeness``, word ``stress``.

Splits: ``train`` and ``test`` use disjoint sentences (no test sentence is said in
training), each sentence spoken ``takes`` times with independent draws. The layout is the
upstream one, readable by :func:`apa.data.speechocean762.prepare_speechocean762`::

    out/train/{text,wav.scp,utt2spk}   out/test/...
    out/WAVE/SPEAKER0001/<utt>.wav     16 kHz mono 16-bit
    out/resource/{scores.json,text-phone,lexicon.txt}
    out/synth.json                     the settings, the rules' version and per-utterance draws

Everything follows from ``seed``: the same settings write the same labels and the same
audio (espeak-ng is deterministic).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from apa.audio import Audio
from apa.data.scores_json import assessment_to_upstream
from apa.lexicon import Lexicon
from apa.log import get_logger
from apa.phones import VOWELS
from apa.schema import Assessment, PhoneAssessment, SentenceScores, WordAssessment
from apa.synth.espeak import arpabet_phonemes, speak_words
from apa.text import strip_stress

log = get_logger("apa.synth.corpus")

RULES_VERSION = 3
"""The default rules' version; bump when a labelling rule changes."""
RULES_VERSIONS = (3, 4)
"""The versions :class:`SynthConfig` can write (4: harder phone errors)."""
NEAR_PAIRS = {"D": "T", "T": "D", "Z": "S", "S": "Z", "IY": "IH", "IH": "IY"}
"""Rules version 4's near pairs (both ways)."""
REDUCED_VOWEL = "AH0"
ErrorKind = Literal["obvious", "near", "reduced", "deleted"]
RATE_WPM = (110, 260)
MAX_FILLERS = 3
FILLER = "'@:m"
"""The filled pause, in espeak-ng phoneme mnemonics: "um"."""
PAUSE_MS = 50
"""Silence between every two words (and fillers)."""
MAX_SUBSTITUTED = 0.35
PAD_S = 0.2
VOWEL_SUBSTITUTE = "OY"
CONSONANT_SUBSTITUTE = "ZH"
SPEAKER = "0001"

WORDS: tuple[str, ...] = tuple(
    """
    a about after again air all also always and animal any apple ask back bad bag ball bank
    bed big bird black blue boat book box bread bring brother brown bus but buy cake call car
    cat chair child city class clean cold come cook cup dance dark day desk dinner dog door
    down drink drive early eat egg end every eye face family far farm fast father feel find
    fine fish five floor flower fly food foot four friend from game garden girl give glass go
    good green hand happy hat have he help her here high hill home horse hot house how hungry
    in it jump keep kind king know lake large late leaf left letter light like little live
    long look love low make man many map milk money moon morning mother mountain much music
    name near new nice night nine no nose not now often old one open orange over paper park
    people pen pick place plant play please rain read red rich ride right river road room
    run sad same sea seat see seven she ship shop short sing sister sit six sleep slow small
    snow some song soon stand star start stay stop store street summer sun sweet swim table
    take talk tall tea teach ten that the then there they thin think three time today tree
    two under up very wait walk warm water we week well wet what when white who wind window
    winter with woman word work write year yellow yes you young
    """.split()
)
"""Candidate words; those missing from CMUdict or holding ``OY``/``ZH`` are dropped."""


class SynthConfig(BaseModel):
    """Settings of :func:`write_synthetic_corpus`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_sentences: int = Field(30, ge=1, description="Distinct training sentences.")
    test_sentences: int = Field(10, ge=1, description="Distinct held-out sentences.")
    takes: int = Field(4, ge=1, description="Utterances per sentence (independent draws).")
    min_words: int = Field(3, ge=1)
    max_words: int = Field(6, ge=1)
    phones: int | None = Field(
        None,
        ge=1,
        description="Only sentences of exactly this many phones (None: any). Holds the "
        "length of what is said fixed, so that rate and substitutions are heard without "
        "counting the reference's phones.",
    )
    seed: int = Field(0, description="Everything (sentences, draws) follows from it.")
    voice: str = Field("en-us", description="espeak-ng voice.")
    workers: int = Field(2, ge=1, description="espeak-ng processes at once.")
    pad: bool = Field(True, description="Pad every clip with silence to the longest one.")
    rules: Literal[3, 4] = Field(
        RULES_VERSION,
        description="Labelling rules' version: 3, or 4 (harder phone errors: near pairs, "
        "vowel reduction, deleted final consonants).",
    )

    @model_validator(mode="after")
    def _words(self) -> SynthConfig:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words {self.min_words} > max_words {self.max_words}")
        return self


@dataclass(frozen=True)
class SynthUtterance:
    """One utterance to speak: what is said and the assessment its rules give."""

    id: str
    split: str
    words: tuple[str, ...]
    phones: tuple[tuple[str, ...], ...]
    """Canonical phones (CMUdict, stress digits kept)."""
    said: tuple[tuple[str, ...], ...]
    """The phones spoken: the canonical ones with the errors (a deleted phone left out)."""
    rate_wpm: int
    fillers: tuple[int, ...]
    """Word indices after which a filled pause is said, ascending."""
    assessment: Assessment
    errors: Mapping[tuple[int, int], ErrorKind] = field(default_factory=dict)
    """The phone errors by (word, phone) position."""


def fluency(rate_wpm: float, fillers: int) -> float:
    """The fluency rule: ``clip(10 - 6 * (260 - rate) / 150 - 4 * fillers / 3, 0, 10)``.

    >>> fluency(260, 0), fluency(110, 3), round(fluency(210, 1), 6)
    (10.0, 0.0, 6.666667)
    """
    value = 10.0 + sum(fluency_terms(rate_wpm, fillers))
    return round(min(max(value, 0.0), 10.0), 6)


def fluency_terms(rate_wpm: float, fillers: int) -> tuple[float, float]:
    """The fluency rule's two deductions, ``(-6 * (260 - rate) / 150, -4 * fillers / 3)``:
    what slow speech and what the filled pauses cost (``benchmarks/learnability.py`` fits a
    model's fluency on them to see which it has learned).

    >>> fluency_terms(110, 0), fluency_terms(260, 3)
    ((-6.0, -0.0), (-0.0, -4.0))
    """
    lo, hi = RATE_WPM
    return -6.0 * (hi - rate_wpm) / (hi - lo), -4.0 * fillers / MAX_FILLERS


def fit_fluency_terms(corpus: str | Path, predicted: Mapping[str, float]) -> dict[str, float]:
    """How a model's fluency scores ``predicted`` (utterance id -> score, utterances of the
    corpus written under ``corpus``) follow the rule: the least-squares weights of the rule's
    two deductions (:func:`fluency_terms`, from the draws in ``synth.json``) and a constant.
    The rule itself is ``{"rate": 1, "fillers": 1, "const": 10}``; a model that does not
    hear the filled pauses has a ``fillers`` weight near 0. Also returns ``n``, the
    utterances fitted."""
    meta = json.loads((Path(corpus) / "synth.json").read_text(encoding="utf-8"))
    draws = {d["id"]: d for d in meta["utterances"]}
    ids = [i for i in predicted if i in draws]
    if len(ids) < 3:
        raise ValueError(f"{len(ids)} of the predictions are of {corpus}'s utterances; need 3")
    terms = np.array([fluency_terms(draws[i]["rate_wpm"], len(draws[i]["fillers"])) for i in ids])
    design = np.c_[terms, np.ones(len(ids))]
    target = np.array([predicted[i] for i in ids], dtype=float)
    (rate, fillers, const), *_ = np.linalg.lstsq(design, target, rcond=None)
    return {"rate": float(rate), "fillers": float(fillers), "const": float(const), "n": len(ids)}


def vocabulary(lexicon: Lexicon | None = None) -> dict[str, tuple[str, ...]]:
    """:data:`WORDS` with their first CMUdict pronunciation, minus any holding a phone the
    substitutions use."""
    lexicon = lexicon or Lexicon.cmudict()
    out: dict[str, tuple[str, ...]] = {}
    for word in WORDS:
        phones = lexicon.lookup(word)
        if not phones:
            continue
        bases = {strip_stress(p) for p in phones}
        if VOWEL_SUBSTITUTE in bases or CONSONANT_SUBSTITUTE in bases:
            continue
        out[word.upper()] = tuple(phones)
    return out


def _sentences(
    config: SynthConfig, vocab: dict[str, tuple[str, ...]], rng: random.Random
) -> list[tuple[str, ...]]:
    words = sorted(vocab)
    wanted = config.train_sentences + config.test_sentences
    seen: set[tuple[str, ...]] = set()
    out: list[tuple[str, ...]] = []
    for _ in range(wanted * (100 if config.phones is None else 5000)):
        if len(out) == wanted:
            return out
        n = rng.randint(config.min_words, config.max_words)
        sentence = tuple(rng.sample(words, n))
        if config.phones is not None and sum(len(vocab[w]) for w in sentence) != config.phones:
            continue
        if sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    of = f" of {config.phones} phones" if config.phones is not None else ""
    raise ValueError(
        f"could not draw {wanted} distinct sentences{of} of {config.min_words}-"
        f"{config.max_words} words from {len(words)} words"
    )


def _substitutable(phones: Sequence[Sequence[str]]) -> list[tuple[int, int]]:
    """(word, phone) positions that may be substituted (not a consonant right after D)."""
    spots = []
    for w, word in enumerate(phones):
        for p, phone in enumerate(word):
            vowel = strip_stress(phone) in VOWELS
            after_d = p > 0 and strip_stress(word[p - 1]) == "D"
            if vowel or not after_d:
                spots.append((w, p))
    return spots


def _substitute(phone: str) -> str:
    base = strip_stress(phone)
    if base in VOWELS:
        return VOWEL_SUBSTITUTE + phone[len(base) :]  # keep the stress digit
    return CONSONANT_SUBSTITUTE


def error_kinds(phones: Sequence[Sequence[str]], w: int, p: int) -> list[ErrorKind]:
    """The kinds of error rules version 4 may put at phone ``p`` of word ``w``."""
    phone = phones[w][p]
    base = strip_stress(phone)
    kinds: list[ErrorKind] = ["obvious"]
    if base in NEAR_PAIRS:
        kinds.append("near")
    if base in VOWELS and base != "AH":
        kinds.append("reduced")
    if base not in VOWELS and p == len(phones[w]) - 1 and len(phones[w]) > 1:
        kinds.append("deleted")
    return kinds


def said_as(phone: str, kind: ErrorKind) -> str | None:
    """What is said for ``phone`` with an error of ``kind`` (``None``: nothing)."""
    base = strip_stress(phone)
    if kind == "obvious":
        return _substitute(phone)
    if kind == "near":
        return NEAR_PAIRS[base] + phone[len(base) :]
    if kind == "reduced":
        return REDUCED_VOWEL
    return None


def error_kind(phone: PhoneAssessment) -> ErrorKind | None:
    """The kind of error :func:`label` marked ``phone`` with (``None``: intact), read back
    from the label alone: a phone scored 0 with nothing pronounced was deleted, one said as
    the schwa and scored 1 reduced, one said as ``OY``/``ZH`` an obvious substitution, any
    other substitution a near pair."""
    if phone.error is None:
        return "deleted" if phone.accuracy == 0 else None
    if phone.pronounced in (VOWEL_SUBSTITUTE, CONSONANT_SUBSTITUTE):
        return "obvious"
    if phone.pronounced == strip_stress(REDUCED_VOWEL) and phone.accuracy == 1:
        return "reduced"
    return "near"


_ACCURACY: dict[ErrorKind, float] = {"obvious": 0.0, "near": 0.0, "reduced": 1.0, "deleted": 0.0}


def label(
    uid: str,
    words: Sequence[str],
    phones: Sequence[Sequence[str]],
    errors: Mapping[tuple[int, int], ErrorKind],
    rate_wpm: int,
    fillers: int,
) -> Assessment:
    """The assessment the rules (module docstring) give an utterance whose phone errors are
    ``errors`` ((word, phone) -> kind)."""
    word_records = []
    points = 0.0
    for w, (word, word_phones) in enumerate(zip(words, phones, strict=True)):
        records = []
        for p, phone in enumerate(word_phones):
            kind = errors.get((w, p))
            if kind is None:
                records.append(PhoneAssessment(phone=phone, accuracy=2.0))
            elif kind == "deleted":  # upstream's missed phone: 0, nothing pronounced
                records.append(PhoneAssessment(phone=phone, accuracy=0.0))
            else:
                records.append(
                    PhoneAssessment(
                        phone=phone,
                        accuracy=_ACCURACY[kind],
                        error="substitution",
                        pronounced=strip_stress(said_as(phone, kind) or ""),
                    )
                )
        word_points = sum(r.accuracy or 0.0 for r in records)
        points += word_points
        score = round(10.0 * word_points / (2 * len(records)), 6)
        word_records.append(
            WordAssessment(text=word, accuracy=score, stress=None, total=score, phones=records)
        )
    n_phones = sum(len(p) for p in phones)
    accuracy = round(10.0 * points / (2 * n_phones), 6)
    flu = fluency(rate_wpm, fillers)
    return Assessment(
        utterance_id=uid,
        text=" ".join(words),
        sentence=SentenceScores(
            accuracy=accuracy,
            fluency=flu,
            prosody=None,
            completeness=None,
            total=round((accuracy + flu) / 2, 6),
        ),
        words=word_records,
        model="synthetic",
    )


def draw_corpus(config: SynthConfig, lexicon: Lexicon | None = None) -> list[SynthUtterance]:
    """Every utterance of the corpus with its draws and labels (no audio yet)."""
    rng = random.Random(config.seed)
    vocab = vocabulary(lexicon)
    sentences = _sentences(config, vocab, rng)
    out = []
    for s, sentence in enumerate(sentences):
        split = "train" if s < config.train_sentences else "test"
        phones = tuple(vocab[w] for w in sentence)
        spots = _substitutable(phones)
        n_phones = sum(len(p) for p in phones)
        for take in range(config.takes):
            uid = f"{SPEAKER}{s:04d}{take:02d}"
            k = rng.randint(0, min(len(spots), round(MAX_SUBSTITUTED * n_phones)))
            positions = rng.sample(spots, k)
            errors: dict[tuple[int, int], ErrorKind] = {
                (w, p): rng.choice(error_kinds(phones, w, p)) if config.rules >= 4 else "obvious"
                for w, p in positions
            }
            rate = rng.randint(*RATE_WPM)
            n_fillers = rng.randint(0, min(MAX_FILLERS, len(sentence) - 1))
            fillers = tuple(sorted(rng.sample(range(len(sentence) - 1), n_fillers)))
            said = tuple(
                tuple(
                    said
                    for p, ph in enumerate(word)
                    if (said := said_as(ph, errors[w, p]) if (w, p) in errors else ph)
                )
                for w, word in enumerate(phones)
            )
            assessment = label(uid, sentence, phones, errors, rate, len(fillers))
            out.append(
                SynthUtterance(
                    uid, split, sentence, phones, said, rate, fillers, assessment, errors
                )
            )
    return out


def _write_table(path: Path, rows: Sequence[tuple[str, str]]) -> None:
    path.write_text("".join(f"{k}\t{v}\n" for k, v in rows), encoding="utf-8")


def _speak(utt: SynthUtterance, voice: str) -> Audio:
    words = []
    for w, word in enumerate(utt.said):
        words.append(arpabet_phonemes([word]))
        if w in utt.fillers:
            words.append(FILLER)
    return speak_words(words, pause_ms=PAUSE_MS, voice=voice, rate_wpm=utt.rate_wpm)


def _padded(samples: np.ndarray, length: int, rng: random.Random) -> np.ndarray:
    lead = rng.randint(0, length - len(samples))
    out = np.zeros(length, dtype=np.float32)
    out[lead : lead + len(samples)] = samples
    return out


def write_synthetic_corpus(out: str | Path, config: SynthConfig | None = None) -> Path:
    """Speak and write the corpus of ``config`` under ``out`` (module docstring); returns
    ``out``. Raises :class:`~apa.synth.espeak.EspeakError` without espeak-ng."""
    import soundfile as sf

    config = config or SynthConfig()
    root = Path(out)
    utterances = draw_corpus(config)
    wave_dir = root / "WAVE" / f"SPEAKER{SPEAKER}"
    wave_dir.mkdir(parents=True, exist_ok=True)
    (root / "resource").mkdir(exist_ok=True)
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        audios = list(pool.map(lambda u: _speak(u, config.voice), utterances))
    durations = [a.duration_s for a in audios]
    rate = audios[0].sample_rate
    length = max(len(a.samples) for a in audios) + int(PAD_S * rate)
    rng = random.Random(config.seed + 1)
    for utt, audio in zip(utterances, audios, strict=True):
        samples = _padded(audio.samples, length, rng) if config.pad else audio.samples
        sf.write(wave_dir / f"{utt.id}.wav", samples, rate, subtype="PCM_16")
    for split in ("train", "test"):
        rows = [u for u in utterances if u.split == split]
        (root / split).mkdir(exist_ok=True)
        _write_table(root / split / "text", [(u.id, " ".join(u.words)) for u in rows])
        _write_table(
            root / split / "wav.scp", [(u.id, f"WAVE/SPEAKER{SPEAKER}/{u.id}.wav") for u in rows]
        )
        _write_table(root / split / "utt2spk", [(u.id, SPEAKER) for u in rows])
    scores = {u.id: assessment_to_upstream(u.assessment) for u in utterances}
    (root / "resource" / "scores.json").write_text(json.dumps(scores, indent=1) + "\n")
    _write_table(
        root / "resource" / "text-phone",
        [(f"{u.id}.{w}", " ".join(p)) for u in utterances for w, p in enumerate(u.phones)],
    )
    lexicon = sorted(
        {(w, " ".join(p)) for u in utterances for w, p in zip(u.words, u.phones, strict=True)}
    )
    _write_table(root / "resource" / "lexicon.txt", lexicon)
    draws = [
        {
            "id": u.id,
            "split": u.split,
            "rate_wpm": u.rate_wpm,
            "fillers": list(u.fillers),
            "substituted": sum(kind != "deleted" for kind in u.errors.values()),
            "errors": {kind: sum(k == kind for k in u.errors.values()) for kind in _ACCURACY},
            "speech_s": round(d, 4),
        }
        for u, d in zip(utterances, durations, strict=True)
    ]
    meta = {"config": config.model_dump(), "rules_version": config.rules, "utterances": draws}
    (root / "synth.json").write_text(json.dumps(meta, indent=1) + "\n")
    log.info(
        "synthetic_corpus_written",
        out=str(root),
        train=sum(u.split == "train" for u in utterances),
        test=sum(u.split == "test" for u in utterances),
        speech_s=round(sum(durations), 1),
        clip_s=round(length / rate, 2),
    )
    return root
