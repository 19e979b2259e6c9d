"""Shared fixtures: the Speechocean762 sample from ../shared and a real S3 endpoint on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# Tests are deterministic: hypothesis draws the same examples on every run (and in CI).
hypothesis_settings.register_profile("apa", derandomize=True, print_blob=True)
hypothesis_settings.load_profile("apa")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "speechocean762-sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The 200-utterance Speechocean762 sample that sits beside the checkout (and in CI)."""
    if not (SAMPLE / "train" / "text").exists():
        pytest.fail(f"Speechocean762 sample not found at {SAMPLE}")
    return SAMPLE


@pytest.fixture()
def copy_corpus(tmp_path: Path, sample_dir: Path):
    """A factory: ``copy_corpus(split)`` makes an upstream-style corpus of one sample split
    under tmp_path (text files copied, ``text-phone`` and ``lexicon.txt`` in ``resource/``,
    ``wav.scp`` pointing at the shared audio by absolute path: no audio copied) and returns
    its root. Tests add a ``resource/scores.json`` of their own."""

    def make(split: str) -> Path:
        root = tmp_path / "corpus"
        (root / split).mkdir(parents=True)
        (root / "resource").mkdir(exist_ok=True)
        for name in ("text", "utt2spk", "spk2age", "spk2gender"):
            shutil.copy(sample_dir / split / name, root / split / name)
        for name in ("text-phone", "lexicon.txt"):
            shutil.copy(sample_dir / name, root / "resource" / name)
        lines = (sample_dir / split / "wav.scp").read_text().splitlines()
        rows = (line.split(maxsplit=1) for line in lines if line.strip())
        (root / split / "wav.scp").write_text(
            "".join(f"{key} {sample_dir / ref.strip()}\n" for key, ref in rows)
        )
        return root

    return make


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the whole session; never an address off loopback."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture()
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """A boto3 S3 client on the loopback endpoint, with the environment pointed at it so that
    apa.storage (pyarrow.fs) reaches the same server. Yields ``(client, bucket_name)``; the
    bucket is fresh for each test."""
    import uuid

    import boto3

    from apa.storage import _s3_filesystem

    for key, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    _s3_filesystem.cache_clear()
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = f"apa-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    _s3_filesystem.cache_clear()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``APA_CACHE_DIR`` for the session, so that each built-in tiny model is built once."""
    path = tmp_path_factory.mktemp("apa-model-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APA_CACHE_DIR", str(path))
        yield path


@pytest.fixture
def quick_train_config(tmp_path: Path):
    """A factory of small fine-tuning configs on a synthetic corpus (``train/``, ``test/``):
    batch 1, one epoch, no warmup, no bootstrap, one thread, ``out`` under ``tmp_path``;
    keywords override."""
    from apa.finetune.config import TrainConfig

    def make(corpus: Path, **overrides: object) -> TrainConfig:
        fields: dict[str, object] = dict(
            train=str(corpus / "train"),
            valid=str(corpus / "test"),
            out=str(tmp_path / "run"),
            batch_size=1,
            epochs=1,
            warmup_steps=0,
            eval_resamples=0,
            threads=1,
        )
        return TrainConfig(**{**fields, **overrides})

    return make


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory: pytest.TempPathFactory):
    """One local Ray instance for the whole test session (about 5 s to start), shared by the
    batch-job, fine-tuning and Serve tests. A test that starts Serve shuts Serve down again
    (``serve.shutdown()``) so that its replicas free the CPUs for the next test. Yields the
    ``ray`` module."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=4,  # logical CPUs: a Serve ingress + model replica and a Data pool fit
            include_dashboard=False,
            log_to_driver=True,
            # model caches built by tests are found by the workers through the environment
            runtime_env={"env_vars": {"APA_CACHE_DIR": str(tmp_path_factory.mktemp("ray-cache"))}},
        )
    yield ray
    ray.shutdown()


TINY_MODELS = ("builtin:tiny-qwen2-audio", "builtin:tiny-phi4mm")
"""The built-in tiny models the engine and model tests run on (``apa.models.families``)."""


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """One torch thread inside: the tiny models' operations are too small to gain from
    intra-op threads, and on a shared 2-core machine the thread barriers of the generate
    loop's many small kernels can stall for seconds."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model_that_cannot_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory that loads and cannot score: the tiny Qwen2-Audio beside an 80-mel
    Whisper feature extractor (its encoder takes 128 mels), so every forward pass fails."""
    import json

    from apa.models.qwen2_audio.tiny import build_tiny

    path = build_tiny(tmp_path_factory.mktemp("mismatched") / "tiny-qwen2-audio-80-mels")
    config = path / "processor_config.json"
    processor = json.loads(config.read_text())
    processor["feature_extractor"]["feature_size"] = 80
    config.write_text(json.dumps(processor))
    return path


@pytest.fixture(scope="session")
def loaded_models(model_cache: Path) -> dict:
    """Each tiny model loaded once, answer tokens added (as ``load_lmm_scorer`` loads it).
    Build scorers on it with ``LmmScorer(loaded, mode=...)``: each has its own counters."""
    from apa.engine.scorer import load_lmm_scorer

    return {name: load_lmm_scorer(name).loaded for name in TINY_MODELS}


@pytest.fixture(scope="session")
def test_utterances(sample_dir: Path) -> list:
    """The first 8 utterances of the sample's test split (3 to 10 words), phones filled."""
    from apa.data.speechocean762 import prepare_speechocean762

    data = prepare_speechocean762(sample_dir, ["test"])
    return data.utterances[:8]


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    with single_torch_thread():
        yield


ONE_THREAD_DIRS = ("engine", "models")
"""Test folders whose tests run the tiny models on one torch thread."""
INTEGRATION_FIXTURES = frozenset({"ray_local", "s3", "s3_endpoint", "service", "sample_dir"})
"""A test that uses one of these starts real services (Ray, Serve, S3 on loopback) or reads
real speech from the shared sample: it is an ``integration`` test, deselected by
``pytest -m "not integration"``."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).resolve().parent
    for item in items:
        path = Path(str(item.path)).resolve()
        parts = path.relative_to(tests).parts if path.is_relative_to(tests) else ()
        if parts and parts[0] in ONE_THREAD_DIRS:
            item.add_marker(pytest.mark.usefixtures("one_torch_thread"))
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_configure(config: pytest.Config) -> None:
    # Keep tests off any real cloud endpoint even if the developer's shell has one.
    os.environ.pop("AWS_PROFILE", None)
