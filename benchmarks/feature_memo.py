"""Fine-tuning steps with and without the feature memo (``apa.engine.feature_memo``), side by
side in one run.

Sets up the tiny-model recipe's trainer (``apa.finetune.loop.Trainer``, ``TINY_RECIPE``) on a
synthetic corpus, then times training micro-batches (forward, loss, backward; no optimizer
step, so both arms compute the same thing) in alternating rounds: once through the plain
processor (Whisper features extracted on every call, as before the memo) and once through
the trainer's own processor with the memo (already filled by a first pass, as in every epoch
after the first). Prints the median milliseconds per step of each arm, their ratio and the
device::

    .venv/bin/python benchmarks/feature_memo.py
    .venv/bin/python benchmarks/feature_memo.py --batches 20 --rounds 5 --threads 1

Results: benchmarks/RESULTS.md, ``## Learnability``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apa.finetune.config import TINY_RECIPE, TrainConfig  # noqa: E402
from apa.finetune.loop import Trainer  # noqa: E402
from apa.synth.corpus import SynthConfig, write_synthetic_corpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", help="An apa synth corpus (default: write a small one).")
    parser.add_argument("--batches", type=int, default=10, help="Micro-batches per round.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="apa-feature-memo-"))
    corpus = (
        Path(args.corpus)
        if args.corpus
        else write_synthetic_corpus(
            work / "corpus", SynthConfig(train_sentences=40, test_sentences=4, takes=2, seed=0)
        )
    )
    trainer = Trainer(
        TrainConfig(
            train=str(corpus / "train"), out=str(work / "run"), batch_size=args.batch_size,
            threads=args.threads, **TINY_RECIPE,
        )
    )  # fmt: skip
    trainer.setup()
    trainer.model.train()
    scorer = trainer.scorer
    memo = scorer.processor
    plain = copy.copy(memo)
    plain.feature_extractor = memo.feature_extractor.extractor
    n = args.batch_size
    batches = [
        trainer.train_examples[i * n : (i + 1) * n]
        for i in range(min(args.batches, len(trainer.train_examples) // n))
    ]

    def steps() -> float:
        started = time.perf_counter()
        for batch in batches:
            trainer.optimizer.zero_grad(set_to_none=True)
            trainer.loss(batch).backward()
        return (time.perf_counter() - started) / len(batches) * 1000

    scorer.processor = memo
    steps()  # fills the memo (the first epoch's cost) and warms up
    times: dict[str, list[float]] = {"plain": [], "memo": []}
    for _ in range(args.rounds):
        for arm, processor in (("plain", plain), ("memo", memo)):
            scorer.processor = processor
            times[arm].append(steps())
    plain_ms, memo_ms = (statistics.median(times[a]) for a in ("plain", "memo"))
    print(
        f"feature memo: {trainer.config.model}, {len(batches)} micro-batches of {n} x "
        f"{args.rounds} rounds, {args.threads} threads, device {trainer.device}"
    )
    print(f"plain processor  {plain_ms:7.1f} ms/step   (rounds: {times['plain']})")
    print(f"with the memo    {memo_ms:7.1f} ms/step   (rounds: {times['memo']})")
    print(f"speed-up {plain_ms / memo_ms:.2f}x; memo holds {len(memo.feature_extractor)} clips")


if __name__ == "__main__":
    main()
