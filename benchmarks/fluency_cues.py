"""How far simple audio cues get on a synthetic corpus's fluency label: the ceiling a model
reaches by measuring one cue or another, without any learning beyond a linear fit.

Reads an ``apa synth`` corpus (``benchmarks/learnability.py`` writes its corpora under
``/tmp/apa-learnability``), measures per utterance, from the audio alone, with a 10 ms
energy voice-activity detector (a frame is speech within 35 dB of the clip's loudest):

- ``span``: first to last speech frame (the speech time, word gaps included);
- ``voiced``: speech frames only;
- ``inner_silence``: silent frames between the first and last speech frame (the word gaps);
- ``flux``: mean spectral change between adjacent speech frames (a speaking-rate cue that
  needs no duration);

and from the reference, its words and phones. Prints each cue's held-out PCC with the
fluency label (``scipy.stats.pearsonr``) and, for sets of cues, the held-out PCC of a least
squares fit on the training split::

    .venv/bin/python benchmarks/fluency_cues.py \\
        /tmp/apa-learnability/corpus-r3-s0-240x4-t40-w3-5-pNone

The cues were chosen for the corpus's rules versions 1 and 2, whose pause term was silence
between words; under version 3 a filled pause is speech to this detector
(docs/synthetic-corpus.md, "Why filled pauses").

Results: benchmarks/RESULTS.md, ``## Learnability``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.stats import pearsonr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from apa.data.speechocean762 import prepare_speechocean762  # noqa: E402

FRAME = 160  # 10 ms at 16 kHz
CUE_SETS = [
    ("voiced, flux (local, no gaps)", ["voiced", "flux"]),
    ("voiced, flux, inner_silence (local)", ["voiced", "flux", "inner_silence"]),
    ("span, flux", ["span", "flux"]),
    ("voiced/phone, inner_silence/gap (relative to the reference)",
     ["voiced_per_phone", "silence_per_gap"]),
]  # fmt: skip


def cues(wav: Path) -> dict[str, float]:
    x, _ = sf.read(wav, dtype="float64")
    frames = x[: len(x) // FRAME * FRAME].reshape(-1, FRAME)
    level = 10 * np.log10((frames**2).mean(1) + 1e-10)
    speech = level > level.max() - 35
    first, last = np.flatnonzero(speech)[[0, -1]]
    inside = speech[first : last + 1]
    spectra = np.log(np.abs(np.fft.rfft(frames * np.hanning(FRAME), axis=1)) + 1e-6)
    change = np.abs(np.diff(spectra, axis=0)).mean(1)
    on = np.flatnonzero(speech[:-1])
    return {
        "span": float(last - first + 1),
        "voiced": float(inside.sum()),
        "inner_silence": float((~inside).sum()),
        "flux": float(change[on].mean()),
    }


def measure(corpus: Path) -> list[dict]:
    rows = []
    for split, utterances in prepare_speechocean762(corpus).splits.items():
        for u in utterances:
            human = u.human
            assert human is not None and u.audio is not None, u.id
            words = len(human.words)
            phones = sum(len(w.phones) for w in human.words)
            row = {"split": split, "fluency": human.sentence.fluency, **cues(Path(u.audio))}
            row["voiced_per_phone"] = row["voiced"] / phones
            row["silence_per_gap"] = row["inner_silence"] / max(words - 1, 1)
            rows.append(row)
    return rows


def fitted_pcc(rows: list[dict], names: list[str]) -> float:
    def design(split: str) -> tuple[np.ndarray, np.ndarray]:
        part = [r for r in rows if r["split"] == split]
        x = np.array([[r[n] for n in names] + [1.0] for r in part])
        return x, np.array([r["fluency"] for r in part])

    x, y = design("train")
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    x, y = design("test")
    return float(pearsonr(x @ w, y).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path, help="An `apa synth` output directory.")
    args = parser.parse_args()
    rows = measure(args.corpus)
    test = [r for r in rows if r["split"] == "test"]
    train = len(rows) - len(test)
    print(f"fluency cues: {args.corpus} ({train} train / {len(test)} held-out utterances)")
    print("held-out PCC with fluency, one cue:")
    for name in ("span", "voiced", "inner_silence", "flux", "voiced_per_phone",
                 "silence_per_gap"):  # fmt: skip
        pcc = pearsonr([r[name] for r in test], [r["fluency"] for r in test]).statistic
        print(f"  {name:18s} {pcc:+.3f}")
    print("held-out PCC of a linear fit on the training split:")
    for label, names in CUE_SETS:
        print(f"  {fitted_pcc(rows, names):+.3f}  {label}")


if __name__ == "__main__":
    main()
