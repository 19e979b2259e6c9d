"""load_model: built-in, local, s3:// and Hub references, adapters, dtype and device."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from apa.models import cache as model_cache
from apa.models.builtin import ensure_builtin
from apa.models.families import TINY_PHI4MM, TINY_QWEN2_AUDIO
from apa.models.loading import (
    LoadedModel,
    ModelLoadError,
    load_model,
    resolve_device,
    resolve_dtype,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

NAMES = (TINY_QWEN2_AUDIO, TINY_PHI4MM)
SR = 16_000
AUDIO_TOKENS_PER_SECOND = {TINY_QWEN2_AUDIO: 25, TINY_PHI4MM: 13}
LORA_TARGETS = {
    TINY_QWEN2_AUDIO: ["q_proj", "v_proj"],
    TINY_PHI4MM: ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
}


def sine(freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def inputs(loaded: LoadedModel, audio: np.ndarray) -> dict:
    conversation = [
        {
            "role": "user",
            "content": [
                {"type": "audio"},
                {"type": "text", "text": "Rate the pronunciation."},
            ],
        }
    ]
    processor = loaded.processor
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    return dict(processor(text=[text], audio=[audio], sampling_rate=SR, return_tensors="pt"))


def logits(loaded: LoadedModel, audio: np.ndarray | None = None) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(**inputs(loaded, sine(440) if audio is None else audio)).logits


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module, so that each built-in model is built once."""
    return tmp_path_factory.mktemp("apa-cache")


@pytest.fixture(scope="module")
def base_logits(cache: Path) -> dict[str, torch.Tensor]:
    return {name: logits(load_model(name, cache_dir=cache)) for name in NAMES}


@pytest.fixture(scope="module")
def adapters(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A LoRA adapter per model whose random ``lora_B`` changes the outputs."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("adapters")
    made = {}
    for name in NAMES:
        base = load_model(name, cache_dir=cache).model
        peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=LORA_TARGETS[name]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            for param_name, param in peft_model.named_parameters():
                if "lora_B" in param_name:
                    torch.nn.init.normal_(param, std=0.05)
        made[name] = root / name[8:]
        peft_model.save_pretrained(made[name])
    return made


def upload_dir(client, bucket: str, prefix: str, path: Path) -> str:
    for file in sorted(path.rglob("*")):
        if file.is_file():
            key = f"{prefix}/{file.relative_to(path).as_posix()}"
            client.upload_file(str(file), bucket, key)
    return f"s3://{bucket}/{prefix}"


@pytest.mark.parametrize("name", NAMES)
def test_builtin_loads_through_the_checkpoint_path(cache, name: str) -> None:
    loaded = load_model(name, cache_dir=cache)
    assert loaded.family == {TINY_QWEN2_AUDIO: "qwen2-audio", TINY_PHI4MM: "phi4mm"}[name]
    assert loaded.name == name
    assert Path(loaded.path) == ensure_builtin(name, cache_dir=cache)
    assert loaded.is_random is True
    assert (loaded.adapter, loaded.adapter_merged) == (None, False)
    assert (loaded.device, loaded.dtype) == ("cpu", "float32")
    assert not loaded.model.training
    assert loaded.checkpoint_adapters == (("speech-lora",) if name == TINY_PHI4MM else ())

    batch = inputs(loaded, sine(440))
    audio_id = loaded.processor.audio_token_id
    assert int((batch["input_ids"] == audio_id).sum()) == AUDIO_TOKENS_PER_SECOND[name]
    out = logits(loaded, sine(440))
    vocab = loaded.model.config.get_text_config().vocab_size
    assert out.shape == (1, batch["input_ids"].shape[1], vocab)
    assert torch.isfinite(out).all()
    # The audio reaches the language model (Phi-4-mm would ignore it silently if the
    # config's audio token id were not the tokenizer's).
    assert (out - logits(loaded, sine(1000))).abs().max() > 1e-4

    generated = loaded.model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == batch["input_ids"].shape[1] + 3


def test_phi4mm_merges_the_checkpoint_speech_lora(cache, base_logits) -> None:
    from peft import PeftModel
    from transformers import Phi4MultimodalForCausalLM

    path = ensure_builtin(TINY_PHI4MM, cache_dir=cache)
    loaded = load_model(TINY_PHI4MM, cache_dir=cache)
    raw = Phi4MultimodalForCausalLM.from_pretrained(path).eval()
    loaded.model = raw
    without = logits(loaded)
    loaded.model = PeftModel.from_pretrained(raw, str(path / "speech-lora")).merge_and_unload()
    with_speech = logits(loaded)
    assert torch.allclose(with_speech, base_logits[TINY_PHI4MM], atol=1e-6)
    assert (without - with_speech).abs().max() > 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_save_and_reload_gives_identical_logits(cache, base_logits, tmp_path, name) -> None:
    loaded = load_model(name, cache_dir=cache)
    loaded.model.save_pretrained(tmp_path)
    loaded.processor.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    assert again.family == loaded.family
    assert again.is_random is False  # no apa_builtin.json was copied
    assert torch.equal(logits(again), base_logits[name])


@pytest.mark.parametrize("name", NAMES)
def test_s3_copy_loads_identically_and_is_fetched_once(
    cache, base_logits, s3, monkeypatch, name
) -> None:
    client, bucket = s3
    uri = upload_dir(client, bucket, f"models/{name[8:]}", ensure_builtin(name, cache_dir=cache))
    calls = []
    real_download = model_cache._download_prefix

    def spy(source: str, dest: Path):
        calls.append(source)
        return real_download(source, dest)

    monkeypatch.setattr(model_cache, "_download_prefix", spy)
    loaded = load_model(uri + "/", cache_dir=cache)
    assert calls == [uri]
    assert loaded.name == uri + "/"
    assert Path(loaded.path).parent == cache / "s3"
    assert loaded.is_random is True  # the marker travelled with the files
    assert torch.equal(logits(loaded), base_logits[name])
    stamp = (Path(loaded.path) / "config.json").stat().st_mtime_ns

    again = load_model(uri, cache_dir=cache)
    assert calls == [uri]  # a cache hit: nothing downloaded
    assert again.path == loaded.path
    assert (Path(again.path) / "config.json").stat().st_mtime_ns == stamp
    assert not list((cache / "s3").glob(".tmp-*"))


def test_fetch_of_an_empty_prefix_fails_clearly(cache, s3) -> None:
    _, bucket = s3
    with pytest.raises(ModelLoadError) as info:
        load_model(f"s3://{bucket}/nothing/here", cache_dir=cache)
    assert info.value.reason == "model.not_found"
    assert "nothing stored under" in str(info.value)
    assert not (cache / "s3").exists() or not list((cache / "s3").glob("*nothing-here*"))


@pytest.mark.parametrize("name", NAMES)
def test_adapter_applied_and_merged_agree_and_change_outputs(
    cache, base_logits, adapters, name
) -> None:
    applied = load_model(name, adapter=str(adapters[name]), cache_dir=cache)
    merged = load_model(name, adapter=str(adapters[name]), merge_adapter=True, cache_dir=cache)
    assert (applied.adapter, applied.adapter_merged) == (str(adapters[name]), False)
    assert merged.adapter_merged is True
    assert type(applied.model).__name__ == "PeftModelForCausalLM" or hasattr(
        applied.model, "peft_config"
    )
    assert not hasattr(merged.model, "peft_config")
    with_applied, with_merged = logits(applied), logits(merged)
    assert torch.allclose(with_applied, with_merged, atol=1e-5)
    assert (with_applied - base_logits[name]).abs().max() > 1e-3


def test_adapter_from_s3(cache, adapters, s3) -> None:
    client, bucket = s3
    uri = upload_dir(client, bucket, "adapters/qwen", adapters[TINY_QWEN2_AUDIO])
    local = load_model(TINY_QWEN2_AUDIO, adapter=str(adapters[TINY_QWEN2_AUDIO]), cache_dir=cache)
    remote = load_model(TINY_QWEN2_AUDIO, adapter=uri, cache_dir=cache)
    assert remote.adapter == uri
    assert torch.equal(logits(remote), logits(local))


def test_missing_adapter(cache, tmp_path) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model(TINY_QWEN2_AUDIO, adapter=str(tmp_path / "none"), cache_dir=cache)
    assert info.value.reason == "model.adapter_not_found"
    with pytest.raises(ModelLoadError, match="no adapter"):
        load_model(TINY_QWEN2_AUDIO, merge_adapter=True, cache_dir=cache)


def test_hub_id_without_a_hub_names_the_id(monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as info:
        load_model("Qwen/Qwen2-Audio-7B-Instruct")
    error = info.value
    assert "Qwen/Qwen2-Audio-7B-Instruct" in str(error)
    assert "Hub" in str(error)
    assert error.reason == "model.hub_unreachable"
    record = error.record("utt-1")
    assert (record.stage, record.reason) == ("model", "model.hub_unreachable")


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("builtin:huge", "model.unknown_builtin"),
        ("/no/such/model/dir", "model.not_found"),
        ("not a hub id!", "model.not_found"),
        ("gs://bucket/model", "model.not_found"),
    ],
)
def test_bad_references(ref: str, reason: str) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model(ref)
    assert info.value.reason == reason
    assert ref in str(info.value)


def test_unsupported_model_type(tmp_path) -> None:
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=1).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(tmp_path))
    assert info.value.reason == "model.unsupported_model"
    assert "gpt2" in str(info.value)


def test_audio_token_mismatch_is_refused(cache, tmp_path) -> None:
    copy = tmp_path / "phi"
    shutil.copytree(ensure_builtin(TINY_PHI4MM, cache_dir=cache), copy)
    config = json.loads((copy / "config.json").read_text())
    config["audio_config"]["audio_token_id"] = 200011  # the real model's default
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as info:
        load_model(str(copy))
    assert info.value.reason == "model.audio_token_mismatch"


def test_dtype_and_device_resolution(cache) -> None:
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("auto", "cuda") == "bfloat16"
    assert resolve_dtype("float16", "cpu") == "float16"
    if not torch.cuda.is_available():
        assert resolve_device("auto") == "cpu"
        with pytest.raises(ModelLoadError) as info:
            resolve_device("cuda")
        assert info.value.reason == "model.device_unavailable"
    with pytest.raises(ModelLoadError) as info:
        resolve_dtype("int3")
    assert info.value.reason == "model.invalid_option"

    loaded = load_model(TINY_QWEN2_AUDIO, dtype="bfloat16", device="cpu", cache_dir=cache)
    assert loaded.dtype == "bfloat16"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    auto = load_model(TINY_QWEN2_AUDIO, cache_dir=cache)
    if not torch.cuda.is_available():
        assert (auto.device, auto.dtype) == ("cpu", "float32")
        assert {p.dtype for p in auto.model.parameters()} == {torch.float32}
        assert {p.device.type for p in auto.model.parameters()} == {"cpu"}
