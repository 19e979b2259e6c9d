"""Refit the GOP calibration on labelled utterances (``apa calibrate``)."""

from __future__ import annotations

from collections.abc import Iterable

from apa.errors import ApaError
from apa.gop.aligner import GopAligner
from apa.gop.analysis import phone_judgements
from apa.gop.calibration import Calibration, Features, fit_calibration
from apa.gop.config import GopConfig
from apa.lexicon import Lexicon
from apa.prepare import prepare
from apa.schema import ErrorRecord, Utterance


def refit_calibration(
    utterances: Iterable[Utterance], *, config: GopConfig | None = None
) -> tuple[Calibration, list[ErrorRecord], int]:
    """Align every utterance that has human scores and fit the calibration to them.

    Returns the calibration, the utterances that could not be used (as error records), and
    how many labelled utterances had no human scores and were skipped.
    """
    config = config or GopConfig()
    aligner = GopAligner(config)
    lexicon = Lexicon.cmudict()
    features, phones, words, accuracy, fluency = [], [], [], [], []
    errors: list[ErrorRecord] = []
    unlabelled = 0
    for utt in utterances:
        if utt.human is None:
            unlabelled += 1
            continue
        prepared = prepare(utt, lexicon=lexicon)
        if isinstance(prepared, ErrorRecord):
            errors.append(prepared)
            continue
        u = prepared.utterance
        try:
            analysis = aligner.analyse(prepared.audio, u.words, u.phones)
        except ApaError as e:
            errors.append(e.record(u.id))
            continue
        human = u.human
        features.append(Features.of(analysis, phone_judgements(analysis, config)))
        phones.append(
            [
                [p.accuracy for p in hw.phones]
                if len(hw.phones) == len(canonical)
                else [None] * len(canonical)
                for hw, canonical in zip(human.words, u.phones, strict=True)
            ]
            if len(human.words) == len(u.phones)
            else [[None] * len(c) for c in u.phones]
        )
        words.append(
            [w.accuracy for w in human.words]
            if len(human.words) == len(u.phones)
            else [None] * len(u.phones)
        )
        accuracy.append(human.sentence.accuracy)
        fluency.append(human.sentence.fluency)
    if not features:
        raise ValueError("no labelled utterance could be aligned: nothing to fit")
    return fit_calibration(features, phones, words, accuracy, fluency), errors, unlabelled
