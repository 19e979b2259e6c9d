"""The LMM scoring engine stage by stage: host milliseconds per utterance and utterances per
second, on the sample's test utterances, measured side by side in one run.

Default (CPU, CI-sized): the built-in tiny models. For each family and decoding setup it
prints, per batch size (and once at the largest with every reference new to the scorer's
per-reference cache: ``references: cold``), the milliseconds per utterance of each stage of
:class:`apa.engine.scorer.LmmScorer` (``encode`` and ``decode`` on the host, ``run`` on the
device), the host work the engine did before its stages (the processor run per clip:
tokenization and Whisper features padded to 30 s) for comparison, and utt/s through
:func:`apa.scoring.pipeline.score_prepared` (the host stages overlapped with the device's)::

    .venv/bin/python benchmarks/engine.py
    .venv/bin/python benchmarks/engine.py --utterances 100 --batch-sizes 1,16,64

``--full`` (meant for a GPU): the full-size Qwen2-Audio-7B and Phi-4-multimodal
architectures with random bf16 weights, built on the device (the tiny models' processors
and tokenizers; their ids fit the big vocabularies), scoring the 100 test utterances:
one-pass with the brief and the rubric prompt at several batch sizes, constrained generate,
and plain transformers ``generate`` of the whole answer as the baseline (both families). It
prints utt/s, the language model's matmul TFLOP/s and their fraction of the bf16 matmul
peak measured in the same run (an 8192^3 matmul). The TFLOP/s count 2 x the decoder's
linear parameters x the real tokens the decoder took in every pass of the timed run
(prompt, audio and answer tokens of the first pass, then each later pass's tokens in
generate mode; padding not counted: ``padding`` is its share of the positions computed),
counted by a hook on the model, so every mode and the baseline are counted the same way.
On the GPU machine, without Ray, from a checkout (see ``../shared/tools/device-wheels.sh``)::

    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/engine.py --full --sample ../shared/...

Without a GPU, ``--full`` runs reduced: one layer per stack, in float32 (bf16 matmuls are
slow on CPUs without bf16 units), two utterances, batches of 1 and 2, short generations; the
figures then only show that the path runs. Results:
``benchmarks/RESULTS.md``, "Engine".
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from apa.data.speechocean762 import prepare_speechocean762  # noqa: E402
from apa.engine.scorer import Encoded, LmmScorer, load_lmm_scorer  # noqa: E402
from apa.lmm.vocab import add_answer_tokens  # noqa: E402
from apa.models.builtin import ensure_builtin  # noqa: E402
from apa.models.families import TINY_PHI4MM, TINY_QWEN2_AUDIO, by_tiny_name  # noqa: E402
from apa.models.inputs import SAMPLE_RATE, text_model_and_head  # noqa: E402
from apa.models.loading import LoadedModel  # noqa: E402
from apa.prepare import prepare  # noqa: E402
from apa.scorer import PreparedUtterance  # noqa: E402
from apa.scoring.pipeline import length_batches, score_prepared  # noqa: E402

DEFAULT_SAMPLE = Path(__file__).resolve().parent.parent.parent / "shared/speechocean762-sample"


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def stage_times(scorer: LmmScorer, items: list[PreparedUtterance], batch_size: int) -> dict:
    """Milliseconds per utterance of each stage, run one after another (no overlap), and of
    the processor's own per-clip work (the host work before the engine had stages)."""
    device = scorer.loaded.device
    times = {"encode": 0.0, "run": 0.0, "decode": 0.0, "processor (before)": 0.0}
    tokens = 0
    for batch in length_batches(items, batch_size):
        chunk = [items[i] for i in batch]
        started = time.perf_counter()
        encoded = [e for e in scorer.encode(chunk) if isinstance(e, Encoded)]
        times["encode"] += time.perf_counter() - started
        tokens += sum(len(e.ids) for e in encoded)
        started = time.perf_counter()
        reads = scorer.run(encoded)
        sync(device)
        times["run"] += time.perf_counter() - started
        started = time.perf_counter()
        scorer.decode(encoded, reads)
        times["decode"] += time.perf_counter() - started
        started = time.perf_counter()
        for e in encoded:
            scorer.processor(
                text=[e.job.prompt],
                audio=[e.samples],
                sampling_rate=SAMPLE_RATE,
                return_tensors="pt",
            )
        times["processor (before)"] += time.perf_counter() - started
    out = {k: round(v / len(items) * 1000, 3) for k, v in times.items()}
    out["first pass tokens/utt"] = round(tokens / len(items), 1)
    return out


class TokenCounter:
    """Counts the tokens the model below the output head takes in (a forward pre-hook on
    it, which the engine and transformers' ``generate`` both call): ``real`` where the
    attention mask is 1 over the pass's new positions, ``positions`` all of them."""

    def __init__(self, model: Any) -> None:
        self.real = self.positions = 0
        self.params = lm_linear_params(model)
        """The decoder's linear parameters, which each token counted goes through."""
        self._handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module: Any, args: tuple, kwargs: dict) -> None:
        fed = kwargs.get("input_ids")
        if fed is None:
            fed = kwargs.get("inputs_embeds")
        if fed is None and args:
            fed = args[0]
        rows, width = fed.shape[0], fed.shape[1]
        mask = kwargs.get("attention_mask")
        self.positions += rows * width
        if mask is not None and mask.dim() == 2:
            self.real += int(mask[:, -width:].sum())
        else:
            self.real += rows * width

    def reset(self) -> None:
        self.real = self.positions = 0

    def close(self) -> None:
        self._handle.remove()


def throughput(
    scorer: LmmScorer,
    items: list[PreparedUtterance],
    batch_size: int,
    counter: TokenCounter | None = None,
) -> float:
    """utt/s through score_prepared (stages overlapped), after one warm-up batch; the
    ``counter`` counts the timed run only."""
    score_prepared(scorer, items[:batch_size], batch_size)
    sync(scorer.loaded.device)
    if counter is not None:
        counter.reset()
    started = time.perf_counter()
    results = score_prepared(scorer, items, batch_size)
    sync(scorer.loaded.device)
    assert len(results) == len(items)
    return len(items) / (time.perf_counter() - started)


def load_items(sample: Path, n: int) -> list[PreparedUtterance]:
    corpus = prepare_speechocean762(sample, ["test"])
    return [prepare(u) for u in corpus.utterances[:n]]


def tiny(args: argparse.Namespace, items: list[PreparedUtterance]) -> list[dict]:
    rows = []
    setups = [("one-pass", "brief"), ("one-pass", "rubric"), ("generate", "brief")]
    for name in (TINY_QWEN2_AUDIO, TINY_PHI4MM):
        for mode, prompt in setups:
            scorer = load_lmm_scorer(name, mode=mode, prompt=prompt, device="cpu")
            largest = max(args.batch_sizes)
            # The first row meets every reference for the first time (a corpus of distinct
            # sentences); the others find them in the per-reference cache (an exam's).
            for cache, batch_size in [("cold", largest)] + [("warm", b) for b in args.batch_sizes]:
                if cache == "cold":
                    scorer.reference.cache_clear()
                row = {"model": name, "mode": mode, "prompt": prompt, "batch": batch_size}
                row |= {"references": cache} | stage_times(scorer, items, batch_size)
                if cache == "cold":
                    scorer.reference.cache_clear()
                row["utt/s"] = round(throughput(scorer, items, batch_size), 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


# -- full size -----------------------------------------------------------------------------


def full_qwen2_audio(tokenizer: Any, layers: int | None, dtype: torch.dtype) -> Any:
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2AudioConfig(
        audio_config={
            "d_model": 1280,
            "encoder_layers": layers or 32,
            "encoder_attention_heads": 20,
            "encoder_ffn_dim": 5120,
            "num_mel_bins": 128,
            "max_source_positions": 1500,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": 156032,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": layers or 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "max_position_embeddings": 8192,
            "tie_word_embeddings": False,
            "bos_token_id": endoftext,
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": endoftext,
        },
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    return Qwen2AudioForConditionalGeneration._from_config(config, dtype=dtype)


def full_phi4mm(tokenizer: Any, layers: int | None, dtype: torch.dtype) -> Any:
    from transformers import Phi4MultimodalConfig, Phi4MultimodalForCausalLM

    config = Phi4MultimodalConfig()
    config.audio_config.audio_token_id = tokenizer.audio_token_id
    config.vision_config.image_token_id = tokenizer.image_token_id
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config.bos_token_id = config.pad_token_id = endoftext
    if layers:
        config.num_hidden_layers = layers
        config.audio_config.num_blocks = layers
        config.vision_config.num_hidden_layers = layers
    return Phi4MultimodalForCausalLM._from_config(config, dtype=dtype)


def lm_linear_params(text_model: Any) -> int:
    """Parameters of the language model's decoder layers' linear maps (what every token
    goes through; the output head runs at the slots only)."""
    decoder = getattr(text_model, "language_model", None) or text_model.layers
    return sum(m.weight.numel() for m in decoder.modules() if isinstance(m, torch.nn.Linear))


def lm_row(
    loaded: LoadedModel,
    mode: str,
    prompt: str,
    batch: int,
    rate: float,
    counter: TokenCounter,
    utterances: int,
    peak: float,
) -> dict:
    """A row of the full-size table: utt/s and the LM's matmul work over the timed run."""
    tokens = counter.real / utterances
    flops = 2 * counter.params * tokens * rate / 1e12
    return {
        "model": loaded.name, "mode": mode, "prompt": prompt, "batch": batch,
        "utt/s": float(f"{rate:.3g}"), "LM tokens/utt": round(tokens, 1),
        "padding": round(1 - counter.real / max(counter.positions, 1), 3),
        "LM TFLOP/s": float(f"{flops:.3g}"), "of peak": float(f"{flops / peak:.3g}"),
    }  # fmt: skip


def matmul_peak(device: str, n: int, dtype: torch.dtype) -> float:
    """TFLOP/s of an n^3 matmul in ``dtype`` on ``device`` (median of 5)."""
    a = torch.randn((n, n), dtype=dtype, device=device)
    b = torch.randn((n, n), dtype=dtype, device=device)
    a @ b
    sync(device)
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        a @ b
        sync(device)
        runs.append(time.perf_counter() - started)
    return 2 * n**3 / statistics.median(runs) / 1e12


def plain_generate(
    scorer: LmmScorer,
    items: list[PreparedUtterance],
    batch: int,
    new: int,
    counter: TokenCounter,
) -> float:
    """utt/s of transformers' ``generate`` writing ``new`` tokens per utterance from the
    processor's batched inputs: the loop a user writes first."""
    processor, model = scorer.processor, scorer.loaded.model
    processor.tokenizer.padding_side = "left"  # a decoder-only batch generates from the left
    counter.reset()
    started = time.perf_counter()
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        jobs = [scorer.job(item) for item in chunk]
        inputs = processor(
            text=[job.prompt for job in jobs],
            audio=[item.audio.samples for item in chunk],
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            padding=True,
        ).to(scorer.loaded.device)
        model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False)
    sync(scorer.loaded.device)
    return len(items) / (time.perf_counter() - started)


def full(args: argparse.Namespace, items: list[PreparedUtterance], device: str) -> list[dict]:
    reduced = args.reduced or not device.startswith("cuda")
    layers = 1 if reduced else None
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    dtype_name = str(dtype).removeprefix("torch.")
    peak = matmul_peak(device, 2048 if reduced else 8192, dtype)
    print(f"{dtype_name} matmul peak measured: {peak:.3g} TFLOP/s", flush=True)
    rows = []
    builders = {TINY_QWEN2_AUDIO: full_qwen2_audio, TINY_PHI4MM: full_phi4mm}
    sizes = args.batch_sizes
    for name, build in builders.items():
        family = by_tiny_name(name)
        processor = family.load_processor(str(ensure_builtin(name)))
        with torch.device(device):
            model = build(processor.tokenizer, layers, dtype).eval()
        add_answer_tokens(processor.tokenizer, model)
        loaded = LoadedModel(
            model=model, processor=processor, family=family.name,
            name=f"full-size {family.name}, random {dtype_name}"
            + (", 1 layer" if reduced else ""),
            path="", is_random=True, adapter=None, adapter_merged=False, device=device,
            dtype=dtype_name,
        )  # fmt: skip
        runs = [("one-pass", prompt, b) for prompt in ("brief", "rubric") for b in sizes]
        runs += [("generate", "brief", args.generate_batch)]
        counter = TokenCounter(text_model_and_head(model)[0])
        for mode, prompt, batch_size in runs:
            scorer = LmmScorer(loaded, mode=mode, prompt=prompt)
            times = stage_times(scorer, items[: max(batch_size, 2 if reduced else 8)], batch_size)
            rate = throughput(scorer, items, batch_size, counter)
            rows.append(lm_row(loaded, mode, prompt, batch_size, rate, counter, len(items), peak))
            rows[-1] |= times
            print(json.dumps(rows[-1]), flush=True)
        scorer = LmmScorer(loaded, mode="one-pass", prompt="rubric")
        new = 16 if reduced else len(scorer.job(items[0]).reference.answer)
        plain = items[: 2 if reduced else 32]
        for batch_size in (1, args.generate_batch):
            mode = f"plain generate, {new} tokens"
            try:
                rate = plain_generate(scorer, plain, batch_size, new, counter)
            except Exception as e:  # transformers' own batched path, reported as it fails
                row = {"model": loaded.name, "mode": mode, "prompt": "rubric",
                       "batch": batch_size, "failed": f"{type(e).__name__}: {e}"[:300]}  # fmt: skip
            else:
                row = lm_row(loaded, mode, "rubric", batch_size, rate, counter, len(plain), peak)
            rows.append(row)
            print(json.dumps(row), flush=True)
        counter.close()
        del model, loaded, scorer
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    parser.add_argument("--utterances", type=int, default=None, help="default: 24 (tiny), 100")
    parser.add_argument("--batch-sizes", default=None, help="default: 1,8,32 (tiny), 1,16,64")
    parser.add_argument("--generate-batch", type=int, default=16)
    parser.add_argument("--full", action="store_true", help="full-size architectures")
    parser.add_argument("--reduced", action="store_true", help="--full with one layer per stack")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    reduced = args.full and (args.reduced or device == "cpu")
    default_n = 2 if reduced else (100 if args.full else 24)
    default_sizes = "1,2" if reduced else ("1,16,64" if args.full else "1,8,32")
    args.batch_sizes = [int(b) for b in (args.batch_sizes or default_sizes).split(",")]
    if reduced:
        args.generate_batch = min(args.generate_batch, 2)
    items = load_items(args.sample, args.utterances or default_n)
    seconds = sum(item.audio.duration_s for item in items)
    where = device if args.full else "cpu"
    print(
        f"engine benchmark: {len(items)} utterances ({seconds:.0f} s of audio), device "
        f"{device_name(where)}, torch {torch.__version__}"
        + (" (REDUCED: one layer per stack, float32; not a throughput figure)" if reduced else ""),
        flush=True,
    )
    rows = full(args, items, device) if args.full else tiny(args, items)
    if args.json:
        args.json.write_text(json.dumps({"device": device_name(where), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
