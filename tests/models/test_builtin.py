"""The built-in tiny models: deterministic, tiny, shaped like the real ones, cached once."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from apa.models import builtin, families, tiny
from apa.models.builtin import ensure_builtin
from apa.models.families import TINY_PHI4MM, TINY_QWEN2_AUDIO
from apa.models.phi4mm import tiny as phi4mm_tiny
from apa.models.qwen2_audio import tiny as qwen2_audio_tiny
from apa.models.tiny import MARKER, read_marker

BUILDERS = {TINY_QWEN2_AUDIO: qwen2_audio_tiny.build_tiny, TINY_PHI4MM: phi4mm_tiny.build_tiny}
AUDIO_PROMPT = [
    {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Rate it."}]}
]


@pytest.fixture(scope="module")
def twice(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Each built-in model built twice into separate directories."""
    root = tmp_path_factory.mktemp("built")
    return {
        name: (build(root / f"{name[8:]}-a"), build(root / f"{name[8:]}-b"))
        for name, build in BUILDERS.items()
    }


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


@pytest.mark.parametrize("name", BUILDERS)
def test_building_twice_gives_identical_weights_and_tokenizer(twice, name: str) -> None:
    import torch

    first, second = twice[name]
    files = ["model.safetensors"]
    if name == TINY_PHI4MM:
        files.append("speech-lora/adapter_model.safetensors")
    for file in files:
        a, b = _tensors(first / file), _tensors(second / file)
        assert a.keys() == b.keys() and a
        for key in a:
            assert torch.equal(a[key], b[key]), key
    for file in ("tokenizer.json", "config.json", "chat_template.jinja"):
        assert (first / file).read_bytes() == (second / file).read_bytes(), file


@pytest.mark.parametrize("name", BUILDERS)
def test_marker_says_random(twice, name: str) -> None:
    marker = read_marker(twice[name][0])
    assert marker is not None
    assert marker["name"] == name
    assert marker["random_weights"] is True
    assert marker["seed"] == tiny.SEED
    assert "apa_version" in marker


def test_tiny_qwen2_audio_is_shaped_like_the_real_one(twice) -> None:
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    path = twice[TINY_QWEN2_AUDIO][0]
    model = Qwen2AudioForConditionalGeneration.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    tokenizer = processor.tokenizer
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    ids = dict(zip(qwen2_audio_tiny.SPECIAL_TOKENS, range(6), strict=True))
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in ids} == ids
    assert model.config.audio_token_id == ids["<|AUDIO|>"] == processor.audio_token_id
    assert 300 <= len(tokenizer) <= model.config.text_config.vocab_size
    assert processor.feature_extractor.feature_size == 128
    text = processor.apply_chat_template(AUDIO_PROMPT, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nRate it.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # Like Qwen2's tokenizer: every digit is its own token ("10" is two).
    assert tokenizer.tokenize("10") == ["1", "0"]
    assert all(len(tokenizer.encode(str(d))) == 1 for d in range(10))


def test_tiny_phi4mm_is_shaped_like_the_real_one(twice) -> None:
    from transformers import Phi4MultimodalForCausalLM

    from apa.models.phi4mm.loading import load_processor

    path = twice[TINY_PHI4MM][0]
    model = Phi4MultimodalForCausalLM.from_pretrained(path)
    processor = load_processor(path)
    tokenizer = processor.tokenizer
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    ids = dict(zip(phi4mm_tiny.SPECIAL_TOKENS, range(7), strict=True))
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in ids} == ids
    assert model.config.audio_config.audio_token_id == ids["<|audio|>"] == processor.audio_token_id
    assert model.config.vision_config.image_token_id == ids["<|image|>"]
    assert model.config.eos_token_id == [ids["<|endoftext|>"], ids["<|end|>"]]
    assert 300 <= len(tokenizer) <= model.config.vocab_size
    assert (path / "speech-lora" / "adapter_config.json").is_file()
    config = json.loads((path / "processor_config.json").read_text())
    assert config["image_processor"]["image_processor_type"] == "Phi4MultimodalImageProcessorFast"
    text = processor.apply_chat_template(AUDIO_PROMPT, add_generation_prompt=True, tokenize=False)
    assert text == "<|user|><|audio|>Rate it.<|end|><|assistant|>"
    assert tokenizer.tokenize("10") == ["10"]  # o200k keeps up to three digits together


def _swap_builder(monkeypatch, name: str, build) -> None:
    """Make ``ensure_builtin`` build ``name`` with ``build``."""
    family = dataclasses.replace(families.by_tiny_name(name), build_tiny=build)
    real = builtin.by_tiny_name
    monkeypatch.setattr(builtin, "by_tiny_name", lambda n: family if n == name else real(n))


def test_ensure_builtin_builds_once_into_the_cache(tmp_path, monkeypatch) -> None:
    calls: list[Path] = []
    real = families.by_tiny_name(TINY_QWEN2_AUDIO)

    def spy(path: Path) -> Path:
        calls.append(path)
        return real.build_tiny(path)

    _swap_builder(monkeypatch, TINY_QWEN2_AUDIO, spy)
    monkeypatch.setenv("APA_CACHE_DIR", str(tmp_path))
    first = ensure_builtin(TINY_QWEN2_AUDIO)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    second = ensure_builtin(TINY_QWEN2_AUDIO)
    assert first == second
    assert first.parent == tmp_path / "builtin"
    assert len(calls) == 1
    assert (first / MARKER).is_file()
    assert (second / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "builtin").iterdir()] == [first.name]  # no temp left


def test_a_failed_build_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    def broken(path: Path) -> Path:
        (path / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    _swap_builder(monkeypatch, TINY_PHI4MM, broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_builtin(TINY_PHI4MM, cache_dir=tmp_path)
    assert list((tmp_path / "builtin").iterdir()) == []


def test_unknown_builtin_name() -> None:
    with pytest.raises(ValueError, match="builtin:tiny-qwen2-audio"):
        ensure_builtin("builtin:huge")


def test_importing_apa_models_does_not_import_torch() -> None:
    code = "import sys, apa.models; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_build_on_a_non_zero_distributed_rank_saves_the_weights(tmp_path, monkeypatch) -> None:
    """transformers' save_pretrained writes nothing on torch.distributed ranks other than 0;
    a Ray Train worker of rank 1 that builds the model first must still leave a whole entry
    (seen: an entry of tokenizer files alone, then 'model_type None' on every load)."""
    import transformers.distributed.mixin as mixin

    monkeypatch.setattr(mixin, "_is_torch_distributed_initialized", lambda: True)
    monkeypatch.setattr(mixin, "_get_torch_distributed_rank", lambda: 1)
    path = ensure_builtin(TINY_QWEN2_AUDIO, cache_dir=tmp_path)
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
