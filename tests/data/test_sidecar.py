"""apa.data.sidecar: a damaged sidecar of texts is refused like a damaged manifest, and a line
that is not UTF-8 is that line's error row, not replacement characters in a reference text."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from apa.data.manifest import DamagedManifestError
from apa.data.sidecar import read_audio_with_texts, read_texts


@pytest.mark.parametrize("name", ["text.gz", "texts.jsonl.gz"])
def test_truncated_gzip_sidecar_is_refused(tmp_path: Path, name: str) -> None:
    lines = "".join(f'{{"id": "u{i}", "text": "WE CALL"}}\n' for i in range(3000))
    if name == "text.gz":
        lines = "".join(f"u{i} WE CALL\n" for i in range(3000))
    data = gzip.compress(lines.encode())
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedManifestError, match="truncated gzip data"):
        read_texts(str(path))


def test_kaldi_text_line_that_is_not_utf8_is_its_error_row(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    for name in ("a", "b"):
        (tmp_path / "audio" / f"{name}.wav").write_bytes(b"RIFF")
    texts = tmp_path / "text"
    texts.write_bytes(b"a WE \xff CALL\nb WE CALL\n")
    joined = read_audio_with_texts(str(tmp_path / "audio"), str(texts))
    assert [u.id for u in joined.utterances] == ["b"]
    reasons = sorted((e.utterance_id, e.reason) for e in joined.errors)
    # the line's own error, and audio a left without a text: every input accounted for
    assert ("a", "input.missing_field") in reasons
    assert any(r == "input.malformed_row" for _, r in reasons)
    bad = next(e for e in joined.errors if e.reason == "input.malformed_row")
    assert "line 1: not valid UTF-8" in bad.message and "WE \ufffd CALL" in bad.raw
