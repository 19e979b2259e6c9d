"""A real Serve application on the session's local Ray, reached over HTTP on loopback."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

TINY = "builtin:tiny-qwen2-audio"
KEYS = ("key-one-7f3a", "key-two-91bc")
MAX_UPLOAD_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Sample:
    id: str
    text: str
    audio: bytes


@dataclass(frozen=True)
class Service:
    url: str
    """http://127.0.0.1:<port>/apa"""
    serve: object

    def client(self, key: str | None = KEYS[0], **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120, **kwargs)


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def samples(sample_dir: Path) -> list[Sample]:
    """The sample's test utterances: id, transcript, FLAC bytes."""
    from apa.data.speechocean762 import prepare_speechocean762

    utterances = prepare_speechocean762(sample_dir, ["test"]).utterances
    return [Sample(u.id, u.text, Path(u.audio).read_bytes()) for u in utterances]


@pytest.fixture(scope="package")
def service(ray_local, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The app (tiny Qwen2-Audio, batches of up to 4, two API keys in a mounted-style key
    file) under /apa on a free loopback port; Serve is shut down afterwards."""
    from ray import serve

    from serve.local import free_port, start

    keys_file = tmp_path_factory.mktemp("secret") / "api-keys"
    keys_file.write_text("\n".join(KEYS) + "\n")
    args = {
        "scoring": {"model": TINY, "batch_size": 4},
        "api_keys_file": str(keys_file),
        "max_upload_bytes": MAX_UPLOAD_BYTES,
        "batch_wait_timeout_s": 0.05,
        "scorer_max_ongoing_requests": 8,
        "ingress_num_cpus": 0.1,
        "scorer_num_cpus": 1,
    }
    try:
        url = start(args, port=free_port())
        yield Service(url=url, serve=serve)
    finally:
        serve.shutdown()


@pytest.fixture(scope="package")
def in_process(tmp_path_factory: pytest.TempPathFactory):
    """Score like the batch job does, in this process: ``score(sample) -> Assessment``."""
    from apa.lexicon import Lexicon
    from apa.scoring.pipeline import score_batch
    from apa.scoring.registry import load_scorer
    from apa.scoring.request import prepare_request
    from apa.scoring.settings import ScoringSettings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APA_CACHE_DIR", str(tmp_path_factory.mktemp("in-process-cache")))
        scorer = load_scorer(ScoringSettings(model=TINY))

    def score(sample: Sample):
        import torch

        prepared = prepare_request(sample.id, sample.text, sample.audio, lexicon=Lexicon.cmudict())
        # One thread: the tiny model's kernels gain nothing from more (see tests/lmm).
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            (result,) = score_batch(scorer, [prepared])
        finally:
            torch.set_num_threads(before)
        return result

    return score
