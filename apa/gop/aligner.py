"""Forced alignment and a free phone loop with pocketsphinx, turned into an
:class:`~apa.gop.analysis.UtteranceAnalysis`.

A :class:`GopAligner` holds two pocketsphinx decoders, built once (per process or Ray actor)
and reused for every utterance:

- the *aligner* forces the canonical phones: each word's phones are registered as a
  dictionary entry (``add_word``) and aligned in two passes, ``set_align_text`` for the
  words, then ``set_alignment`` for phones and HMM states;
- the *loop* decodes the same audio with a free phone loop (``add_allphone_file`` with no
  phone language model): the text-free reference for the GOP.

Both score all senones in every frame (``compallsen``) so that their scores are normalised
alike and comparable. Settings measured on the Speechocean762 sample (``/work/shared``):
``bestpath`` off and beams far wider than the defaults (see
:class:`~apa.gop.config.GopConfig`); with ``bestpath`` on or the default beams, alignment
fails on some utterances. pocketsphinx's alignment objects are copied into Python values at
once: holding them across calls crashed the process.

Dictionary entries: a word's entry is named by its phones (``APA:K_AO_L``), not by its
spelling, so repeated words, apostrophes and homographs with different given phones need no
special care, the canonical phones are always the ones forced (an existing CMUdict entry
with extra pronunciations is never involved: the aligner's dictionary starts empty), and
the dictionary grows only with the distinct pronunciations seen, never per utterance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TypeVar

import numpy as np
import pocketsphinx
import soxr

from apa.audio import Audio, speech_bounds
from apa.gop.analysis import (
    Alignment,
    LoopPhone,
    Pause,
    PhoneSegment,
    PhoneSpan,
    UtteranceAnalysis,
    WordSegment,
    WordSpan,
    majority,
)
from apa.gop.config import LOG_BASE, NATS_PER_SCORE_UNIT, GopConfig
from apa.gop.errors import AlignmentError
from apa.phones import PHONES
from apa.text import strip_stress

ARPABET: frozenset[str] = frozenset(PHONES)
"""The 39 ARPAbet phones (no stress) of pocketsphinx's US-English model: CMUdict's
(:data:`apa.phones.PHONES`)."""

T = TypeVar("T")

_TOKEN_PREFIX = "APA:"
_LOOP_SEARCH = "apa_phone_loop"


@dataclass(frozen=True)
class _Entry:
    """A copied alignment entry (pocketsphinx's own objects must not outlive the call)."""

    name: str
    start: int
    duration: int
    score: int


def _model_phones(phones: Sequence[str]) -> tuple[str, ...]:
    """ARPAbet phones as the model names them: no stress digit, upper case."""
    return tuple(strip_stress(p).upper() for p in phones)


def _guarded(work: Callable[..., T], *args: object) -> T:
    """``work(*args)``, any failure but :class:`AlignmentError` turned into one (the
    contract: a bad utterance never crashes the caller)."""
    try:
        return work(*args)
    except AlignmentError:
        raise
    except MemoryError as exc:
        raise AlignmentError("failed", "ran out of memory aligning the utterance") from exc
    except Exception as exc:
        raise AlignmentError("failed", f"alignment failed: {type(exc).__name__}: {exc}") from exc


class GopAligner:
    """Aligns utterances to their canonical phones and measures GOP features.

    Build once and reuse: ``__init__`` builds both decoders and loads the acoustic model
    (about 0.02 s here, the model being memory-mapped; about 20 MB resident once decoding).
    Analysing an utterance takes about 0.13 s per second of audio on one core. Not
    thread-safe: one aligner per thread, process or actor. ``hmm`` is an acoustic
    model directory; ``None`` is the US-English model bundled with pocketsphinx.
    """

    def __init__(self, config: GopConfig | None = None, *, hmm: str | None = None) -> None:
        self.config = config if config is not None else GopConfig()
        self.hmm = hmm if hmm is not None else pocketsphinx.get_model_path("en-us/en-us")
        self._aligner = self._decoder()
        self._loop = self._decoder(allphone_ci=not self.config.loop_context_dependent)
        self._loop.add_allphone_file(_LOOP_SEARCH, None)
        self._loop.activate_search(_LOOP_SEARCH)
        self._tokens: dict[tuple[str, ...], str] = {}

    def _decoder(self, **extra: object) -> pocketsphinx.Decoder:
        c = self.config
        return pocketsphinx.Decoder(
            hmm=self.hmm,
            lm=None,
            dict=None,
            samprate=c.sample_rate,
            frate=c.frame_rate,
            bestpath=False,
            compallsen=True,
            beam=c.beam,
            wbeam=c.wbeam,
            pbeam=c.pbeam,
            pip=c.phone_insertion_penalty,
            loglevel="FATAL",
            **extra,
        )

    @property
    def dictionary_size(self) -> int:
        """Distinct pronunciations registered so far."""
        return len(self._tokens)

    def analyse(
        self, audio: Audio, words: Sequence[str], phones: Sequence[Sequence[str]]
    ) -> UtteranceAnalysis:
        """Align ``audio`` to ``words`` and their canonical ``phones`` (ARPAbet, stress
        digits allowed) and measure each phone. Raises only
        :class:`~apa.gop.errors.AlignmentError`."""
        return _guarded(self._analyse, audio, words, phones)

    def align(
        self, audio: Audio, words: Sequence[str], phones: Sequence[Sequence[str]]
    ) -> Alignment:
        """Where each word and canonical phone of ``words``/``phones`` is in ``audio``: the
        forced alignment alone (no phone loop, no GOP features), of the audio's sound only
        (:func:`apa.audio.speech_bounds`: leading and trailing silence cut off, spans given
        in the whole clip's time). About 2.5x faster than :meth:`analyse` on the synthetic
        corpus's padded clips. Raises only :class:`~apa.gop.errors.AlignmentError`."""
        return _guarded(self._align_spans, audio, words, phones)

    def _align_spans(
        self, audio: Audio, words: Sequence[str], phones: Sequence[Sequence[str]]
    ) -> Alignment:
        model_phones = self._check_input(words, phones)
        samples = self._samples(audio)
        c = self.config
        n_phones = sum(len(p) for p in model_phones)
        needed = c.min_phone_frames * n_phones
        start, stop = speech_bounds(samples, c.sample_rate)
        if (stop - start) // c.samples_per_frame < needed:
            start, stop = 0, len(samples)  # too little sound for the phones: try it all
        if len(samples) // c.samples_per_frame < needed:
            raise AlignmentError(
                "too_short_for_phones",
                f"{len(samples) / c.sample_rate:.2f} s of audio holds "
                f"{len(samples) // c.samples_per_frame} frames, but {n_phones} phones need at "
                f"least {needed} ({c.min_phone_frames} each)",
            )
        pcm = self._pcm(samples[start:stop])
        _, phone_entries = self._align(pcm, [self._token(p) for p in model_phones])
        offset, fs = start / c.sample_rate, c.frame_s
        aligned = []
        for text, given, entries in zip(words, phones, phone_entries, strict=True):
            if len(entries) != len(given):
                raise AlignmentError(
                    "failed", f"word {text!r}: {len(entries)} aligned phones for {len(given)}"
                )
            spans = tuple(
                PhoneSpan(
                    phone,
                    round(offset + e.start * fs, 6),
                    round(offset + (e.start + e.duration) * fs, 6),
                )
                for phone, e in zip(given, entries, strict=True)
            )
            aligned.append(WordSpan(text, spans[0].start_s, spans[-1].end_s, spans))
        return Alignment(tuple(aligned), len(samples) / c.sample_rate)

    def _analyse(
        self, audio: Audio, words: Sequence[str], phones: Sequence[Sequence[str]]
    ) -> UtteranceAnalysis:
        model_phones = self._check_input(words, phones)
        samples = self._samples(audio)
        c = self.config
        n_phones = sum(len(p) for p in model_phones)
        available = len(samples) // c.samples_per_frame
        needed = c.min_phone_frames * n_phones
        if available < needed:
            raise AlignmentError(
                "too_short_for_phones",
                f"{len(samples) / c.sample_rate:.2f} s of audio holds {available} frames, but "
                f"{n_phones} phones need at least {needed} ({c.min_phone_frames} each)",
            )
        pcm = self._pcm(samples)
        tokens = [self._token(p) for p in model_phones]
        aligned_words, aligned_phones = self._align(pcm, tokens)
        loop = self._phone_loop(pcm)
        return self._assemble(
            words, phones, aligned_words, aligned_phones, loop, len(samples) / c.sample_rate
        )

    def _check_input(
        self, words: Sequence[str], phones: Sequence[Sequence[str]]
    ) -> list[tuple[str, ...]]:
        if isinstance(words, str) or not words:
            raise AlignmentError("bad_input", "no words to align (give a list of words)")
        if len(phones) != len(words):
            raise AlignmentError(
                "bad_input", f"{len(phones)} phone lists for {len(words)} words: they must pair up"
            )
        model_phones = []
        for index, (word, word_phones) in enumerate(zip(words, phones, strict=True)):
            if isinstance(word_phones, str) or not word_phones:
                raise AlignmentError(
                    "bad_input", f"word {index} {word!r} has no phones (give a list of phones)"
                )
            mapped = _model_phones(word_phones)
            unknown = [p for p, m in zip(word_phones, mapped, strict=True) if m not in ARPABET]
            if unknown:
                raise AlignmentError(
                    "unknown_phone",
                    f"word {index} {word!r}: {', '.join(map(repr, unknown))} not in the "
                    "acoustic model's ARPAbet phone set",
                )
            model_phones.append(mapped)
        return model_phones

    def _samples(self, audio: Audio) -> np.ndarray:
        samples = np.asarray(audio.samples, dtype=np.float32)
        if samples.ndim != 1:
            raise AlignmentError("bad_input", f"expected mono samples, got shape {samples.shape}")
        samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
        if audio.sample_rate != self.config.sample_rate:
            samples = soxr.resample(samples, audio.sample_rate, self.config.sample_rate)
        return samples

    def _pcm(self, samples: np.ndarray) -> bytes:
        """16-bit PCM for pocketsphinx, with ``dither`` LSBs of Gaussian noise added from a
        generator seeded afresh for every utterance (the same audio always gives the same
        result, whatever came before). Without it, digital silence (exact zeros, as in
        synthetic speech) yields log-energy floors the acoustic model has never seen, and
        the phone loop and the alignment go astray there."""
        x = samples.astype(np.float64) * 32767.0
        if self.config.dither > 0:
            x += np.random.default_rng(0).normal(0.0, self.config.dither, x.shape)
        return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()

    def _token(self, phones: tuple[str, ...]) -> str:
        """The dictionary entry that forces ``phones``, registered on first use."""
        token = self._tokens.get(phones)
        if token is None:
            token = _TOKEN_PREFIX + "_".join(phones)
            self._aligner.add_word(token, " ".join(phones), True)
            self._tokens[phones] = token
        return token

    def _decode(self, decoder: pocketsphinx.Decoder, pcm: bytes) -> None:
        """Decode one whole utterance from a fresh front end: without ``reinit_feat``
        (0.1 ms) the first frames' features depend on the previous utterance's audio, and
        so would the scores (the cepstral mean is the utterance's own with ``full_utt``)."""
        decoder.reinit_feat()
        decoder.start_utt()
        try:
            decoder.process_raw(pcm, full_utt=True)
        finally:
            decoder.end_utt()

    def _align(self, pcm: bytes, tokens: list[str]) -> tuple[list[_Entry], list[list[_Entry]]]:
        """Two-pass forced alignment: every word entry of the final alignment (ours and the
        silences/noises between them) and the phone entries of each of ours."""
        aligner = self._aligner
        aligner.set_align_text(" ".join(tokens))
        self._decode(aligner, pcm)
        first_pass = [seg.word for seg in aligner.seg() or ()]
        if [w for w in first_pass if w.startswith(_TOKEN_PREFIX)] != tokens:
            raise AlignmentError(
                "failed", "the decoder found no path through all the words (first pass)"
            )
        aligner.set_alignment()
        self._decode(aligner, pcm)
        alignment = aligner.get_alignment()
        if alignment is None:
            raise AlignmentError("failed", "the decoder returned no phone alignment")
        word_entries: list[_Entry] = []
        phone_entries: list[list[_Entry]] = []
        for word in alignment:
            word_entries.append(_Entry(word.name, word.start, word.duration, word.score))
            if word.name.startswith(_TOKEN_PREFIX):
                phone_entries.append([_Entry(p.name, p.start, p.duration, p.score) for p in word])
        del alignment
        ours = [w.name for w in word_entries if w.name.startswith(_TOKEN_PREFIX)]
        if ours != tokens or any(w.duration <= 0 for w in word_entries):
            raise AlignmentError(
                "failed", "the decoder found no path through all the phones (second pass)"
            )
        return word_entries, phone_entries

    def _phone_loop(self, pcm: bytes) -> list[_Entry]:
        self._decode(self._loop, pcm)
        entries = []
        for seg in self._loop.seg() or ():
            frames = seg.end_frame - seg.start_frame + 1
            if frames <= 0:
                continue
            score = math.log(seg.ascore) / math.log(LOG_BASE) if seg.ascore > 0 else -1e9
            entries.append(_Entry(seg.word, seg.start_frame, frames, round(score)))
        if not entries:
            raise AlignmentError("failed", "the phone loop recognised nothing")
        return entries

    def _assemble(
        self,
        words: Sequence[str],
        phones: Sequence[Sequence[str]],
        word_entries: list[_Entry],
        phone_entries: list[list[_Entry]],
        loop: list[_Entry],
        duration_s: float,
    ) -> UtteranceAnalysis:
        c = self.config
        fs = c.frame_s
        n_frames = max(
            loop[-1].start + loop[-1].duration,
            word_entries[-1].start + word_entries[-1].duration,
        )
        loop_score = np.zeros(n_frames)
        loop_label = [""] * n_frames
        for seg in loop:
            loop_score[seg.start : seg.start + seg.duration] = seg.score / seg.duration
            loop_label[seg.start : seg.start + seg.duration] = [seg.name] * seg.duration

        word_segments = []
        for text, given, entries in zip(words, phones, phone_entries, strict=True):
            if len(entries) != len(given):
                raise AlignmentError(
                    "failed", f"word {text!r}: {len(entries)} aligned phones for {len(given)}"
                )
            segments = []
            for phone, entry in zip(given, entries, strict=True):
                start, stop = entry.start, entry.start + entry.duration
                label, share = majority(loop_label[start:stop])
                segments.append(
                    PhoneSegment(
                        phone=phone,
                        start_s=round(start * fs, 6),
                        end_s=round(stop * fs, 6),
                        frames=entry.duration,
                        aligned_score=entry.score / entry.duration * NATS_PER_SCORE_UNIT,
                        loop_score=float(loop_score[start:stop].mean()) * NATS_PER_SCORE_UNIT,
                        loop_phone=label,
                        loop_share=share,
                    )
                )
            word_segments.append(
                WordSegment(
                    text=text,
                    start_s=segments[0].start_s,
                    end_s=segments[-1].end_s,
                    phones=tuple(segments),
                )
            )

        pauses = []
        for index, (left, right) in enumerate(pairwise(word_segments)):
            if right.start_s - left.end_s >= c.min_pause_s - 1e-9:
                pauses.append(Pause(after_word=index, start_s=left.end_s, end_s=right.start_s))
        loop_phones = tuple(
            LoopPhone(
                phone=seg.name,
                start_s=round(seg.start * fs, 6),
                end_s=round((seg.start + seg.duration) * fs, 6),
                score=seg.score / seg.duration * NATS_PER_SCORE_UNIT,
            )
            for seg in loop
        )
        return UtteranceAnalysis(
            words=tuple(word_segments),
            loop_phones=loop_phones,
            pauses=tuple(pauses),
            duration_s=duration_s,
            leading_silence_s=word_segments[0].start_s,
            trailing_silence_s=max(0.0, duration_s - word_segments[-1].end_s),
        )


_worker_aligner: GopAligner | None = None


def _align_in_worker(
    request: tuple[np.ndarray, int, Sequence[str], Sequence[Sequence[str]]],
) -> Alignment | AlignmentError:
    global _worker_aligner
    if _worker_aligner is None:
        _worker_aligner = GopAligner()
    samples, rate, words, phones = request
    audio = Audio(samples, rate, rate, 1, "RAW")
    try:
        return _worker_aligner.align(audio, words, phones)
    except AlignmentError as e:
        return e


def align_many(
    requests: Sequence[tuple[Audio, Sequence[str], Sequence[Sequence[str]]]],
    *,
    processes: int | None = None,
) -> list[Alignment | AlignmentError]:
    """:meth:`GopAligner.align` of every ``(audio, words, phones)``, in order, in
    ``processes`` worker processes (default: the CPUs this process may use; one: here, in
    this process). An utterance the aligner cannot align gives its
    :class:`~apa.gop.errors.AlignmentError` in its place. pocketsphinx decodes on one core,
    so a corpus aligns about ``processes`` times faster (fine-tuning aligns its whole
    training set before the first step)."""
    import os

    if processes is None:
        processes = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    work = [(a.samples, a.sample_rate, list(w), [list(p) for p in ph]) for a, w, ph in requests]
    if processes <= 1 or len(work) < 2:
        return [_align_in_worker(r) for r in work]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # no fork of a process running torch
    with ProcessPoolExecutor(min(processes, len(work)), mp_context=context) as pool:
        return list(pool.map(_align_in_worker, work, chunksize=8))
