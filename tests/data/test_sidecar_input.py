"""A directory of audio files plus a sidecar of texts as job input (apa.data.sidecar), and
the demo corpus's bad rows: no Ray needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apa.data.inputs import read_utterances
from apa.data.sidecar import list_audio


@pytest.fixture()
def audio_dir(tmp_path: Path) -> Path:
    root = tmp_path / "audio"
    (root / "spk1").mkdir(parents=True)
    (root / "spk2").mkdir()
    for name in ("spk1/a.wav", "spk1/b.flac", "spk2/c.wav", "spk2/b.wav", "spk2/notes.txt",
                 "spk2/_hidden.wav"):  # fmt: skip
        (root / name).write_bytes(b"x")
    return root


def test_audio_files_are_listed_recursively_and_hidden_ones_skipped(audio_dir: Path) -> None:
    names = [Path(p).relative_to(audio_dir).as_posix() for p in list_audio(str(audio_dir))]
    assert names == ["spk1/a.wav", "spk1/b.flac", "spk2/b.wav", "spk2/c.wav"]


@pytest.mark.parametrize("sidecar", ["text", "texts.jsonl", "texts.csv"])
def test_texts_join_audio_by_stem_and_every_mismatch_is_an_error(
    audio_dir: Path, tmp_path: Path, sidecar: str
) -> None:
    texts = {"a": "we call it bear", "b": "the cat", "c": "", "orphan": "no audio for me"}
    path = tmp_path / sidecar
    if sidecar == "text":  # Kaldi: <id> <words>
        path.write_text("".join(f"{k} {v}\n" for k, v in texts.items()))
    elif sidecar.endswith(".jsonl"):
        path.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items()))
    else:
        path.write_text("id,text\n" + "".join(f"{k},{v}\n" for k, v in texts.items()))

    source = read_utterances(str(audio_dir), texts=str(path))

    assert [(u.id, u.text, Path(u.audio).name) for u in source.utterances] == [
        ("a", "we call it bear", "a.wav")
    ]
    assert {e.utterance_id: e.reason for e in source.errors} == {
        "b": "input.duplicate_id",  # spk1/b.flac and spk2/b.wav
        "c": "input.missing_field",  # empty text
        "orphan": "input.no_audio",
    }
    assert source.n_inputs == 4


def test_an_audio_file_without_a_text_is_an_error(audio_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "texts.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "hello"}) + "\n")
    source = read_utterances(str(audio_dir), texts=str(path))
    reasons = {e.utterance_id: e.reason for e in source.errors}
    assert reasons == {"b": "input.duplicate_id", "c": "input.missing_field"}
    assert "no text" in next(e.message for e in source.errors if e.utterance_id == "c")
