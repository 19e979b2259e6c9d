"""Learnability on CPU: does `apa finetune` teach the built-in tiny model the synthetic rules?

Writes a synthetic corpus (``apa synth``'s generator, disjoint held-out sentences), runs
``apa finetune`` on it (the real command, in a subprocess) with the tiny-model recipe
(``apa.finetune.config.TINY_RECIPE``: LoRA + ``modules_to_save``, brief prompt,
sentence-weighted loss), and prints, per level and aspect, the held-out PCC and SCC before
training and after (signed), the wall time and the device::

    .venv/bin/python benchmarks/learnability.py                 # the full run (~8 min)
    .venv/bin/python benchmarks/learnability.py --set eval_every_epochs=8
                                                                # with a validation every 960 steps
    .venv/bin/python benchmarks/learnability.py --seed 1 --train-sentences 40 --takes 2 \\
        --test-sentences 12 --max-words 4 --epochs 30           # the test's small version
    .venv/bin/python benchmarks/learnability.py --set rank=32   # any `apa finetune --set`
    .venv/bin/python benchmarks/learnability.py --phones 14 --min-words 4 --max-words 4
                                                                # sentences of one length

Every number comes from real one-pass inference on the held-out split
(``history.jsonl`` of the run: step 0 is the untrained model). Results: benchmarks/RESULTS.md,
``## Learnability``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apa.finetune.config import TINY_RECIPE  # noqa: E402
from apa.models.card import read_card  # noqa: E402
from apa.synth.corpus import (  # noqa: E402
    RULES_VERSION,
    SynthConfig,
    fit_fluency_terms,
    write_synthetic_corpus,
)
from apa.tables import read_assessments  # noqa: E402

ROWS = [
    ("sentence", "fluency"),
    ("sentence", "accuracy"),
    ("sentence", "total"),
    ("word", "accuracy"),
    ("word", "total"),
    ("phone", "accuracy"),
]


def fluency_as_learned(corpus: Path, predictions: Path) -> dict[str, float]:
    """The held-out fluency predictions (read by :func:`apa.tables.read_assessments`) fitted
    on the rule's two deductions (:func:`apa.synth.corpus.fit_fluency_terms`)."""
    return fit_fluency_terms(
        corpus,
        {
            a.utterance_id: a.sentence.fluency
            for a in read_assessments(str(predictions))
            if a.sentence is not None and a.sentence.fluency is not None
        },
    )


def write_corpus(args: argparse.Namespace) -> tuple[Path, float]:
    """The synthetic corpus of ``args`` under ``args.work`` (written unless it is there
    already) and the seconds writing it took (~0 where it was there)."""
    corpus = Path(args.work) / (
        f"corpus-r{args.rules}-s{args.seed}-{args.train_sentences}x{args.takes}"
        f"-t{args.test_sentences}-w{args.min_words}-{args.max_words}"
        f"-p{args.phones}"
    )
    started = time.perf_counter()
    if not (corpus / "synth.json").is_file():
        write_synthetic_corpus(
            corpus,
            SynthConfig(
                train_sentences=args.train_sentences,
                test_sentences=args.test_sentences,
                takes=args.takes,
                min_words=args.min_words,
                max_words=args.max_words,
                phones=args.phones,
                seed=args.seed,
                rules=args.rules,
            ),
        )
    return corpus, time.perf_counter() - started


def add_run_arguments(parser: argparse.ArgumentParser, *, work: str) -> None:
    """The corpus and fine-tuning flags (``run``'s arguments but the seed), shared with
    ``benchmarks/fine_grained.py``."""
    parser.add_argument("--train-sentences", type=int, default=240)
    parser.add_argument("--test-sentences", type=int, default=40)
    parser.add_argument("--takes", type=int, default=4)
    parser.add_argument("--min-words", type=int, default=3)
    parser.add_argument("--max-words", type=int, default=5)
    parser.add_argument(
        "--phones", type=int, default=None, help="Sentences of exactly this many phones."
    )
    parser.add_argument(
        "--rules", type=int, default=RULES_VERSION, help="Synthetic corpus rules version."
    )
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="builtin:tiny-qwen2-audio")
    parser.add_argument("--work", default=work)
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="More `apa finetune --set`s."
    )


def run(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    corpus, corpus_s = write_corpus(args)
    out = Path(tempfile.mkdtemp(prefix=f"run-s{args.seed}-", dir=work))
    apa = Path(sys.executable).parent / "apa"
    command = [
        str(apa), "finetune", "--train", str(corpus / "train"), "--valid", str(corpus / "test"),
        "--out", str(out), "--model", args.model, "--epochs", str(args.epochs),
        "--set", f"batch_size={args.batch_size}", "--set", f"learning_rate={args.lr}",
        "--set", f"seed={args.seed}", "--set", f"eval_every_epochs={args.epochs}",
        "--set", "eval_resamples=0", "--set", f"warmup_steps={args.warmup}",
        "--set", f"threads={args.threads}",
    ]  # fmt: skip
    recipe = [f"{key}={json.dumps(value)}" for key, value in TINY_RECIPE.items()]
    for item in [*recipe, *(args.set or [])]:  # later sets win
        command += ["--set", item]
    started = time.perf_counter()
    env = {**os.environ, "APA_LOG_FORMAT": "json"}
    done = subprocess.run(command, env=env, capture_output=not args.verbose, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"apa finetune failed:\n{done.stderr}")
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    before, after = history[0], history[-1]
    card = read_card(out / "adapter")
    assert card is not None, f"{out}/adapter has no training card"
    return {
        "seed": args.seed,
        "train": card["train_examples"],
        "valid": card["valid_examples"],
        "steps": after["step"],
        "final_loss": after["loss"],
        "wall_s": round(wall, 1),
        "corpus_s": round(corpus_s, 1),
        "device": "cpu"
        if card["config"]["device"] in ("auto", "cpu")
        else card["config"]["device"],
        "rows": {
            f"{level}/{aspect}": {
                m: (
                    before.get(f"valid/{level}/{aspect}/{m}"),
                    after.get(f"valid/{level}/{aspect}/{m}"),
                )
                for m in ("pcc", "scc")
            }
            for level, aspect in ROWS
        },
        "fluency_as_learned": fluency_as_learned(corpus, out / "predictions" / "adapter.jsonl"),
        "run": str(out),
        "corpus": str(corpus),
    }


def _f(x: float | None) -> str:
    return "   -  " if x is None else f"{x:+.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    add_run_arguments(parser, work="/tmp/apa-learnability")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON too.")
    parser.add_argument("--verbose", action="store_true", help="Show apa finetune's logs.")
    args = parser.parse_args()
    result = run(args)
    print(
        f"learnability: {args.model}, seed {result['seed']}, {result['train']} train / "
        f"{result['valid']} held-out utterances, {result['steps']} steps, "
        f"final loss {result['final_loss']:.3f}, wall {result['wall_s']} s on {result['device']} "
        f"(apa finetune: model load, training, validations; writing the corpus took "
        f"{result['corpus_s']} s before it)"
    )
    print(f"{'level/aspect':<20} {'PCC before':>10} {'PCC after':>10} {'SCC before':>10} "
          f"{'SCC after':>10}")  # fmt: skip
    for name, m in result["rows"].items():
        print(f"{name:<20} {_f(m['pcc'][0]):>10} {_f(m['pcc'][1]):>10} "
              f"{_f(m['scc'][0]):>10} {_f(m['scc'][1]):>10}")  # fmt: skip
    weights = result["fluency_as_learned"]
    print(
        f"held-out fluency as learned: {weights['rate']:.2f} x rate term + "
        f"{weights['fillers']:.2f} x filled-pause term + {weights['const']:.2f} (the rule: "
        f"1 x rate + 1 x filled pauses + 10; "
        f"{weights['n']} utterances)"
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
