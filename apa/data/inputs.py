"""Utterances to score (or to evaluate against) from a Speechocean762 directory or a manifest.

One dispatch for every command that takes ``--input``: a local directory is read as a
Speechocean762 corpus (root or split), anything else as a manifest (JSONL/CSV/Parquet,
local or ``s3://``). Rows that cannot become utterances come back as error records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from apa import storage
from apa.data.manifest import read_manifest
from apa.data.speechocean762 import prepare_speechocean762
from apa.schema import ErrorRecord, Utterance


@dataclass(frozen=True)
class UtteranceSource:
    uri: str
    utterances: list[Utterance]
    errors: list[ErrorRecord]

    @property
    def n_inputs(self) -> int:
        return len(self.utterances) + len(self.errors)


def read_utterances(uri: str, texts: str | None = None) -> UtteranceSource:
    """Utterances from a Speechocean762 directory or a manifest; with ``texts``, from the
    audio files under the directory or ``s3://`` prefix ``uri`` and that sidecar of reference
    texts (:func:`apa.data.sidecar.read_audio_with_texts`).

    A corpus directory brings its canonical phones (``text-phone``, its lexicon); manifest
    rows without phones keep ``phones=None`` for the scoring pipeline to fill from its
    lexicon. Raises ``FileNotFoundError``/``ValueError`` only when the source as a whole
    cannot be read.
    """
    if texts is not None:
        from apa.data.sidecar import read_audio_with_texts

        joined = read_audio_with_texts(uri, texts)
        return UtteranceSource(uri, joined.utterances, joined.errors)
    if not storage.is_s3(uri) and Path(uri).is_dir():
        corpus = prepare_speechocean762(uri)
        return UtteranceSource(uri, corpus.utterances, corpus.all_errors)
    manifest = read_manifest(uri)
    return UtteranceSource(uri, manifest.utterances, manifest.errors)
