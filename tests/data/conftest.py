from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture()
def corpus_copy(tmp_path: Path, sample_dir: Path) -> Path:
    """The sample's train split as an upstream-style corpus: text files copied, resources in
    resource/, wav.scp pointing at the shared audio with absolute paths (no audio copied)."""
    root = tmp_path / "corpus"
    (root / "train").mkdir(parents=True)
    (root / "resource").mkdir()
    for name in ("text", "utt2spk", "spk2age", "spk2gender"):
        shutil.copy(sample_dir / "train" / name, root / "train" / name)
    for name in ("text-phone", "lexicon.txt"):
        shutil.copy(sample_dir / name, root / "resource" / name)
    lines = (sample_dir / "train" / "wav.scp").read_text().splitlines()
    rows = (line.split(maxsplit=1) for line in lines if line.strip())
    (root / "train" / "wav.scp").write_text(
        "".join(f"{key} {sample_dir / ref.strip()}\n" for key, ref in rows)
    )
    return root
