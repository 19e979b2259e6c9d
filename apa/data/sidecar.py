"""Utterances from a directory (or ``s3://`` prefix) of audio files plus a sidecar of texts.

The audio files' stems are the utterance ids (``audio/spk1_003.wav`` -> ``spk1_003``); the
sidecar gives each id its reference text, as JSONL/CSV/Parquet rows ``id, text`` (the
manifest formats, :data:`apa.data.manifest.FORMATS`) or as a Kaldi ``text`` file (``<id>
<words...>`` per line, any other file name). Files whose ending is not an audio format are
ignored; names starting with ``.`` or ``_`` are hidden.

Pairs become manifest rows and go through :func:`apa.data.manifest.rows_to_manifest`, so the
result follows the manifest's rules: an audio file without a text is ``input.missing_field``,
a text without an audio file ``input.no_audio``, an id given twice (two audio files with one
stem, or two sidecar rows) one ``input.duplicate_id`` row, an empty text ``input.missing_field``.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict

import pyarrow.fs as pafs

from apa import storage
from apa.data.manifest import (
    Manifest,
    Row,
    decompressed,
    manifest_format,
    read_rows,
    rows_to_manifest,
)
from apa.errors import ApaError, InputError

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif"}
)


def list_audio(prefix: str) -> list[str]:
    """URIs of the audio files under ``prefix`` (recursively), sorted."""
    fs, path = storage.filesystem(prefix)
    infos = fs.get_file_info(pafs.FileSelector(path.rstrip("/"), recursive=True))
    found = []
    for info in infos:
        name = info.base_name
        if info.type != pafs.FileType.File or name.startswith((".", "_")):
            continue
        if posixpath.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
            found.append(f"{storage.S3_SCHEME}{info.path}" if storage.is_s3(prefix) else info.path)
    return sorted(found)


def _kaldi_text_rows(data: bytes):
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            message = f"line {number}: not valid UTF-8 text ({e.reason} at byte {e.start})"
            raw_text = raw.decode("utf-8", errors="replace")[:2000]
            yield number, InputError("malformed_row", message, raw=raw_text)
            continue
        if line.strip():
            utt_id, _, text = line.strip().partition(" ")
            yield number, {"id": utt_id, "text": text.strip()}


def read_texts(uri: str) -> list[tuple[int, Row | ApaError]]:
    """The sidecar's numbered rows (``id``, ``text``), or errors for rows it cannot read."""
    try:
        manifest_format(uri)
    except ValueError:  # no manifest ending: a Kaldi ``text`` file
        return list(_kaldi_text_rows(decompressed(uri, storage.read_bytes(uri))))
    return list(read_rows(uri))


def read_audio_with_texts(prefix: str, texts_uri: str) -> Manifest:
    """Join the audio files under ``prefix`` with the sidecar's texts by id (see above).

    Raises ``FileNotFoundError``/``OSError``/``ValueError`` only when the prefix or the
    sidecar as a whole cannot be read."""
    audio_of: dict[str, list[str]] = defaultdict(list)
    for uri in list_audio(prefix):
        audio_of[posixpath.splitext(posixpath.basename(uri))[0]].append(uri)
    sidecar = read_texts(texts_uri)
    text_rows: dict[str, list[Row]] = defaultdict(list)
    rows: list[Row | ApaError] = []
    for number, row in sidecar:
        if isinstance(row, ApaError):
            rows.append(row)
            continue
        utt_id = row.get("id")
        if not isinstance(utt_id, str) or not utt_id.strip():
            rows.append(InputError("missing_field", f"{texts_uri} row {number}: no id"))
            continue
        text_rows[utt_id.strip()].append({"id": utt_id.strip(), "text": row.get("text")})
    for utt_id in sorted(set(audio_of) | set(text_rows)):
        audios, texts = audio_of.get(utt_id, []), text_rows.get(utt_id, [])
        if len(audios) == 1 and len(texts) == 1:
            rows.append({**texts[0], "audio": audios[0]})
        else:  # unpaired or ambiguous: the manifest rules name the problem
            rows.extend({"id": utt_id, "audio": a} for a in audios)
            rows.extend({**t, "audio": None} for t in texts)
    return rows_to_manifest(texts_uri, list(enumerate(rows, 1)))
