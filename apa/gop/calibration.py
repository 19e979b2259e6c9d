"""GOP features → Speechocean762 scores: a small calibrator with documented defaults, refit
from any labelled data by ``apa calibrate``.

What the baseline estimates, and how (``x`` clipped to the scale):

=========================  ==============================================================
phone accuracy (0-2)       ``2 · sigmoid((gop − phone_mid) / phone_scale)``; 0 when judged
                           deleted
word accuracy (0-10)       ``word_a + word_b · mean phone score``
sentence accuracy (0-10)   ``sentence_a + sentence_b · frame-weighted mean phone score``
fluency (0-10)             ``fluency_a + fluency_pauses · pauses + fluency_pause_ratio ·
                           pause share + fluency_rate · articulation rate``
completeness (0-10)        ``10 ·`` share of words whose mean phone score is at least
                           ``complete_phone_score`` (upstream: "the percentage of the words
                           with good pronunciation")
=========================  ==============================================================

Not estimated, reported as ``None``: word stress (the acoustic model has no stress), word
and sentence total (rater composites that need stress and prosody), prosody.

The defaults come from the GOP distributions measured on espeak-ng speech with phonemes
deliberately substituted (intact phones: median gop −1.5 nats/frame; substituted: −7.7; see
:mod:`apa.gop.config`), so a clean phone maps near 2 and a substituted one near 0. The
sentence-level maps are the identity onto the 0-10 scale (mean phone score 2 → 10). They are
starting points, not fits to human scores: refit on labelled data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from apa import __version__
from apa.gop.analysis import PhoneJudgement, UtteranceAnalysis


class Calibration(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    phone_mid: float = -4.5
    """gop (nats/frame) that maps to phone score 1"""
    phone_scale: float = 1.2
    word_a: float = 0.0
    word_b: float = 5.0
    sentence_a: float = 0.0
    sentence_b: float = 5.0
    fluency_a: float = 10.0
    fluency_pauses: float = -1.0
    """per between-word pause of at least ``min_pause_s``"""
    fluency_pause_ratio: float = -10.0
    """per unit of pause time / (speech + pause time)"""
    fluency_rate: float = 0.0
    """per phone/s of articulation rate"""
    complete_phone_score: float = 1.0
    fitted_on: int = 0
    """labelled utterances the calibration was fitted on (0: the documented defaults)"""
    apa_version: str = __version__


def _clip(x: float, high: float) -> float:
    return float(min(max(x, 0.0), high))


@dataclass(frozen=True)
class Features:
    """The numbers the calibration reads from one analysed utterance."""

    phone_gops: list[list[float]]
    phone_frames: list[list[int]]
    deleted: list[list[bool]]
    pauses: int
    pause_ratio: float
    articulation_rate: float

    @classmethod
    def of(cls, analysis: UtteranceAnalysis, judgements: Sequence[Sequence[PhoneJudgement]]):
        speech = analysis.speech_duration_s
        paused = analysis.pause_duration_s
        return cls(
            phone_gops=[[p.gop for p in w.phones] for w in analysis.words],
            phone_frames=[[p.frames for p in w.phones] for w in analysis.words],
            deleted=[[j.error == "deletion" for j in w] for w in judgements],
            pauses=len(analysis.pauses),
            pause_ratio=paused / (speech + paused) if speech + paused > 0 else 0.0,
            articulation_rate=analysis.articulation_rate,
        )


def phone_score(gop: float, calibration: Calibration) -> float:
    z = (gop - calibration.phone_mid) / calibration.phone_scale
    return 2.0 / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))


@dataclass(frozen=True)
class CalibratedScores:
    phones: list[list[float]]
    words: list[float]
    sentence_accuracy: float
    fluency: float
    completeness: float
    word_phone_means: list[float]
    phone_mean: float
    """frame-weighted mean phone score (what the sentence map reads)"""


def calibrate(features: Features, c: Calibration) -> CalibratedScores:
    phones = [
        [0.0 if gone else phone_score(g, c) for g, gone in zip(gops, dels, strict=True)]
        for gops, dels in zip(features.phone_gops, features.deleted, strict=True)
    ]
    word_means = [float(np.mean(p)) for p in phones]
    frames = np.array([f for w in features.phone_frames for f in w], dtype=float)
    flat = np.array([s for w in phones for s in w])
    weighted = float(np.sum(flat * frames) / np.sum(frames))
    fluency = (
        c.fluency_a
        + c.fluency_pauses * features.pauses
        + c.fluency_pause_ratio * features.pause_ratio
        + c.fluency_rate * features.articulation_rate
    )
    complete = sum(m >= c.complete_phone_score for m in word_means) / len(word_means)
    return CalibratedScores(
        phones=[[_clip(s, 2.0) for s in w] for w in phones],
        words=[_clip(c.word_a + c.word_b * m, 10.0) for m in word_means],
        sentence_accuracy=_clip(c.sentence_a + c.sentence_b * weighted, 10.0),
        fluency=_clip(fluency, 10.0),
        completeness=_clip(10.0 * complete, 10.0),
        word_phone_means=word_means,
        phone_mean=weighted,
    )


def _line(x: Sequence[float], y: Sequence[float], default: tuple[float, float]):
    x_arr, y_arr = np.asarray(x, float), np.asarray(y, float)
    if len(x_arr) < 2 or np.ptp(x_arr) == 0:
        return default
    slope, intercept = np.polyfit(x_arr, y_arr, 1)
    return float(intercept), float(slope)


def fit_calibration(
    features: Sequence[Features],
    human_phones: Sequence[list[list[float | None]]],
    human_words: Sequence[list[float | None]],
    human_accuracy: Sequence[float | None],
    human_fluency: Sequence[float | None],
    *,
    start: Calibration | None = None,
) -> Calibration:
    """Least-squares refit of every map on labelled utterances (``None`` labels skipped).

    The phone sigmoid is fitted with ``scipy.optimize.curve_fit``; the word, sentence and
    fluency maps are linear least squares on the calibrated phone scores and pause features.
    """
    from scipy.optimize import curve_fit

    c = start or Calibration()
    gops, labels = [], []
    for f, hp in zip(features, human_phones, strict=True):
        for wg, wd, wh in zip(f.phone_gops, f.deleted, hp, strict=True):
            for g, gone, h in zip(wg, wd, wh, strict=True):
                if h is not None and not gone:
                    gops.append(g)
                    labels.append(h)
    mid, scale = c.phone_mid, c.phone_scale
    if len(gops) >= 10 and np.ptp(labels) > 0:

        def sigmoid(x, m, s):
            return 2.0 / (1.0 + np.exp(-np.clip((x - m) / s, -60, 60)))

        (mid, scale), _ = curve_fit(
            sigmoid, np.array(gops), np.array(labels), p0=(mid, scale), maxfev=10000
        )
        scale = float(abs(scale)) or c.phone_scale
    c = c.model_copy(update={"phone_mid": float(mid), "phone_scale": scale})

    scored = [calibrate(f, c) for f in features]
    word_x, word_y = [], []
    for s, hw in zip(scored, human_words, strict=True):
        for m, h in zip(s.word_phone_means, hw, strict=True):
            if h is not None:
                word_x.append(m)
                word_y.append(h)
    word_a, word_b = _line(word_x, word_y, (c.word_a, c.word_b))
    sent = [(s, h) for s, h in zip(scored, human_accuracy, strict=True) if h is not None]
    sent_x = [s.phone_mean for s, _ in sent]
    sentence_a, sentence_b = _line(sent_x, [h for _, h in sent], (c.sentence_a, c.sentence_b))

    rows = [
        ([1.0, f.pauses, f.pause_ratio, f.articulation_rate], h)
        for f, h in zip(features, human_fluency, strict=True)
        if h is not None
    ]
    fluency = (c.fluency_a, c.fluency_pauses, c.fluency_pause_ratio, c.fluency_rate)
    if len(rows) >= 8:
        design = np.array([r for r, _ in rows])
        if np.linalg.matrix_rank(design) == design.shape[1]:
            fluency = tuple(float(v) for v in np.linalg.lstsq(design, [h for _, h in rows])[0])
    return c.model_copy(
        update={
            "word_a": word_a,
            "word_b": word_b,
            "sentence_a": sentence_a,
            "sentence_b": sentence_b,
            "fluency_a": fluency[0],
            "fluency_pauses": fluency[1],
            "fluency_pause_ratio": fluency[2],
            "fluency_rate": fluency[3],
            "fitted_on": len(features),
        }
    )
