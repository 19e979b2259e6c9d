"""A small demo corpus the project makes itself: short sentences spoken by espeak-ng, a
JSONL manifest, and a few deliberately bad rows so that the ``errors`` table has something
to show. Used by the batch job's ``--demo`` and by tests; needs only espeak-ng.

Layout of ``make_demo_corpus(root)``::

    root/manifest.jsonl      id, audio (relative), text
    root/wav/demo_NNN.wav    espeak-ng speech (22050 Hz, 16-bit mono)
    root/wav/corrupt.wav     not audio at all

The bad rows, and the error each becomes:

==================  ==========================  =======================
id                  what is wrong               error reason
==================  ==========================  =======================
bad_missing_file    audio file does not exist   ``audio.not_found``
bad_corrupt_audio   bytes that are not audio    ``audio.undecodable``
bad_empty_text      empty reference text        ``input.missing_field``
bad_unknown_word    a word no lexicon knows     ``lexicon.unknown_word``
==================  ==========================  =======================
"""

from __future__ import annotations

import json
from pathlib import Path

from apa.synth.espeak import synthesize

SENTENCES: tuple[str, ...] = (
    "we call it bear",
    "the cat sat on the mat",
    "i like to read books",
    "she sells sea shells",
    "it is a sunny day",
    "my brother plays the guitar",
    "please open the window",
    "the train leaves at nine",
    "we went to the beach",
    "this coffee is too hot",
    "he runs every morning",
    "the dog is sleeping",
    "can you help me",
    "they live in a big house",
    "i want some water",
    "the book is on the table",
    "my friend has a red car",
    "we eat dinner at seven",
    "the sky is very blue",
    "she is my teacher",
    "he likes to swim",
    "the shop opens at ten",
    "i have two sisters",
    "it was a good game",
)
"""Short sentences every word of which is in CMUdict."""

BAD_ROWS: dict[str, str] = {
    "bad_missing_file": "audio.not_found",
    "bad_corrupt_audio": "audio.undecodable",
    "bad_empty_text": "input.missing_field",
    "bad_unknown_word": "lexicon.unknown_word",
}
"""The demo's deliberately bad rows and the error reason each must get."""


def make_demo_corpus(root: str | Path, *, n: int | None = None) -> Path:
    """Write the demo corpus under ``root`` (speech for the first ``n`` sentences, default
    all, plus the bad rows) and return the manifest's path. Existing files are rewritten."""
    root = Path(root)
    sentences = SENTENCES if n is None else SENTENCES[:n]
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(sentences):
        name = f"demo_{i:03d}"
        # a few voices and rates, so that the clips differ in length and sound
        wav = synthesize(text, rate_wpm=150 + 10 * (i % 4), pitch=40 + 5 * (i % 5))
        (wav_dir / f"{name}.wav").write_bytes(wav)
        rows.append({"id": name, "audio": f"wav/{name}.wav", "text": text})
    (wav_dir / "corrupt.wav").write_bytes(b"RIFF this is not a wave file at all" * 8)
    rows += [
        {"id": "bad_missing_file", "audio": "wav/missing.wav", "text": "we call it bear"},
        {"id": "bad_corrupt_audio", "audio": "wav/corrupt.wav", "text": "we call it bear"},
        {"id": "bad_empty_text", "audio": "wav/demo_000.wav", "text": ""},
        {"id": "bad_unknown_word", "audio": "wav/demo_000.wav", "text": "we call it zorblax"},
    ]
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest
