"""Phone and word levels side by side: the GOP baseline, the LMM, the LMM with the forced
alignment in hand, on the same synthetic corpus, held-out sentences, real inference.

For each seed, on the corpus ``apa synth`` writes for it (``benchmarks/learnability.py``'s
sizes: 240 train sentences x 4 takes, 40 held-out sentences x 4, 3-5 words):

``gop``
    ``builtin:gop`` with its calibration refit on the train split (what ``apa calibrate``
    runs, :func:`apa.gop.refit.refit_calibration`; on ``--gop-takes`` takes of each train
    sentence, 1 by default: the aligner analyses 0.8 s per synthetic clip on one core), then
    scoring the held-out split;
``plain``
    the tiny LMM fine-tuned with ``TINY_RECIPE`` (``apa finetune``, through
    ``benchmarks/learnability.py``);
``aligned``
    the same with ``alignment=spans`` (``docs/alignment-informed-scoring.md``);
``aligned+next``, ``aligned+words``, ``aligned+next+words``
    the same with ``alignment=spans+next`` (each phone also sees its right neighbour's
    audio before it is scored), ``spans+words`` (each word's audio where its scores are
    read) or both;
``aligned+wide``
    ``alignment=spans+wide``: phone spans shorter than 120 ms widened to 120 ms around
    their centre (``--systems``; the default is the first three systems).

It prints, per system, held-out PCC and SCC per level and aspect, and the AUC of the phone
accuracy for telling substituted phones from intact ones
(:func:`apa.metrics.detection.phone_error_auc`; on rules version 4, the AUC for each kind of
error apart, :func:`apa.synth.corpus.error_kind`, and for all of them as one class), with
the wall time and the device. Results are kept per seed and system under ``--work``, with
the held-out predictions beside them (a run is not repeated; delete its JSON to measure
its saved predictions again, and those too to redo the run)::

    .venv/bin/python benchmarks/fine_grained.py --seeds 0 1 2            # ~25 min per seed
    .venv/bin/python benchmarks/fine_grained.py --seeds 0 --rules 4
    .venv/bin/python benchmarks/fine_grained.py --seeds 0 --systems aligned --set rank=16
    .venv/bin/python benchmarks/fine_grained.py --seeds 1 --train-sentences 40 --takes 2 \\
        --test-sentences 12 --max-words 4 --epochs 30                   # the test's size

Results: benchmarks/RESULTS.md, ``## Fine-grained``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import get_args

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import learnability  # noqa: E402

from apa.data.inputs import read_utterances  # noqa: E402
from apa.metrics.detection import phone_error_auc  # noqa: E402
from apa.metrics.evaluate import evaluate_system  # noqa: E402
from apa.schema import Assessment  # noqa: E402
from apa.synth.corpus import ErrorKind, error_kind  # noqa: E402
from apa.tables import read_assessments, write_assessments_jsonl  # noqa: E402

ALIGNMENT_OF = {
    "plain": "off",
    "aligned": "spans",
    "aligned+next": "spans+next",
    "aligned+words": "spans+words",
    "aligned+next+words": "spans+next+words",
    "aligned+wide": "spans+wide",
}
"""The LMM systems and the ``alignment`` each fine-tunes and scores with."""
SYSTEMS = ("gop", *ALIGNMENT_OF)
DEFAULT_SYSTEMS = ("gop", "plain", "aligned")
ROWS = [
    ("sentence", "accuracy"),
    ("sentence", "fluency"),
    ("sentence", "total"),
    ("word", "accuracy"),
    ("word", "total"),
    ("phone", "accuracy"),
]
ERROR_KINDS = get_args(ErrorKind)


def corpus_args(args: argparse.Namespace, seed: int) -> argparse.Namespace:
    """learnability.py's arguments for ``seed`` (it writes the corpus and fine-tunes)."""
    return argparse.Namespace(**{**vars(args), "seed": seed, "verbose": False})


def gop_system(corpus: Path, args: argparse.Namespace) -> tuple[list[Assessment], float]:
    """``builtin:gop`` refit on ``--gop-takes`` takes per train sentence, scoring the
    held-out split: its predictions and wall time."""
    from apa.gop.refit import refit_calibration
    from apa.gop.scorer import GopScorer
    from apa.scoring.pipeline import score_utterances

    started = time.perf_counter()
    train = read_utterances(str(corpus / "train")).utterances
    per_sentence: dict[str, int] = {}
    chosen = []
    for utt in train:
        taken = per_sentence.get(utt.text, 0)
        if taken < args.gop_takes:
            chosen.append(utt)
            per_sentence[utt.text] = taken + 1
    calibration, errors, _ = refit_calibration(chosen)
    held_out = read_utterances(str(corpus / "test")).utterances
    results = list(score_utterances(held_out, GopScorer(calibration=calibration)))
    predictions = [r for r in results if isinstance(r, Assessment)]
    print(
        f"  gop: refit on {calibration.fitted_on} train utterances ({len(errors)} unusable), "
        f"{len(predictions)}/{len(held_out)} held-out scored"
    )
    return predictions, time.perf_counter() - started


def lmm_system(
    args: argparse.Namespace, seed: int, alignment: str
) -> tuple[list[Assessment], float, Path]:
    run_args = corpus_args(args, seed)
    run_args.set = [*(args.set or []), f'alignment="{alignment}"']
    result = learnability.run(run_args)
    predictions = read_assessments(str(Path(result["run"]) / "predictions" / "adapter.jsonl"))
    return predictions, result["wall_s"], Path(result["corpus"])


def measure(predictions: list[Assessment], corpus: Path, rules: int) -> dict:
    gold_utts = read_utterances(str(corpus / "test")).utterances
    gold = [u.human for u in gold_utts if u.human is not None]
    system = evaluate_system(predictions, gold, name="system", n_resamples=0)
    metrics = {
        f"{a.level}/{a.aspect}": {"pcc": a.pcc.value, "scc": a.scc.value} for a in system.aspects
    }
    substituted = phone_error_auc(predictions, gold)
    out = {
        "metrics": metrics,
        "auc_substitution": substituted.auc,
        "substituted": substituted.mispronounced,
        "intact": substituted.intact,
        "scored": len(predictions),
        "held_out": len(gold),
    }
    if rules >= 4:  # each kind of error apart, then all as one class
        for kind in ERROR_KINDS:
            detection = phone_error_auc(
                predictions, gold, mispronounced=lambda ph, kind=kind: error_kind(ph) == kind
            )
            out[f"auc_{kind}"] = detection.auc
            out[f"n_{kind}"] = detection.mispronounced
        out["auc_any_error"] = phone_error_auc(
            predictions, gold, mispronounced=lambda ph: error_kind(ph) is not None
        ).auc
    return out


def run_seed(args: argparse.Namespace, seed: int, work: Path) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for system in args.systems:
        path = work / f"result-r{args.rules}-s{seed}-{system}-{_size(args)}.json"
        if path.is_file():
            results[system] = json.loads(path.read_text())
            continue
        saved = path.with_name(path.stem.replace("result-", "predictions-") + ".jsonl")
        if saved.is_file():  # measured again from the run's saved predictions
            print(f"seed {seed}: {system} (measuring {saved.name}) ...", flush=True)
            corpus, _ = learnability.write_corpus(corpus_args(args, seed))
            predictions = read_assessments(str(saved))
            wall = json.loads(saved.with_suffix(".wall").read_text())
        else:
            print(f"seed {seed}: {system} ...", flush=True)
            if system == "gop":
                corpus, _ = learnability.write_corpus(corpus_args(args, seed))
                predictions, wall = gop_system(corpus, args)
            else:
                predictions, wall, corpus = lmm_system(args, seed, ALIGNMENT_OF[system])
            write_assessments_jsonl(predictions, str(saved))
            saved.with_suffix(".wall").write_text(json.dumps(wall))
        result = {**measure(predictions, corpus, args.rules), "wall_s": round(wall, 1)}
        result.update(seed=seed, system=system, rules=args.rules, device="cpu")
        path.write_text(json.dumps(result))
        results[system] = result
    return results


def _size(args: argparse.Namespace) -> str:
    return (
        f"{args.train_sentences}x{args.takes}-t{args.test_sentences}-w{args.min_words}-"
        f"{args.max_words}-e{args.epochs}"
    )


def _f(x: float | None) -> str:
    return "  -   " if x is None else f"{x:+.3f}"


def report(all_results: dict[int, dict[str, dict]], args: argparse.Namespace) -> None:
    seeds = sorted(all_results)
    print(
        f"\nfine-grained, rules version {args.rules}, seeds {seeds}, {_size(args)}, "
        f"held-out PCC (SCC) per system; device: cpu"
    )
    systems = [s for s in SYSTEMS if s in args.systems]
    print(f"{'level/aspect':<18}" + "".join(f"{s:>32}" for s in systems))
    for level, aspect in ROWS:
        key = f"{level}/{aspect}"
        cells = []
        for s in systems:
            pccs = [all_results[seed][s]["metrics"].get(key, {}).get("pcc") for seed in seeds]
            sccs = [all_results[seed][s]["metrics"].get(key, {}).get("scc") for seed in seeds]
            cells.append(f"{_span(pccs)} ({_span(sccs)})")
        print(f"{key:<18}" + "".join(f"{c:>32}" for c in cells))
    aucs = ["auc_substitution", *(f"auc_{kind}" for kind in ERROR_KINDS), "auc_any_error"]
    for name in aucs:
        if any(name in all_results[seed][s] for seed in seeds for s in systems):
            cells = [_span([all_results[seed][s].get(name) for seed in seeds]) for s in systems]
            print(f"{name:<18}" + "".join(f"{c:>32}" for c in cells))
    walls = [_span([all_results[seed][s]["wall_s"] for seed in seeds], "{:.0f}") for s in systems]
    print(f"{'wall s':<18}" + "".join(f"{c:>32}" for c in walls))


def _span(values: list[float | None], fmt: str = "{:.3f}") -> str:
    real = [v for v in values if v is not None]
    if not real:
        return "-"
    lo, hi = min(real), max(real)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}..{fmt.format(hi)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(DEFAULT_SYSTEMS))
    parser.add_argument("--gop-takes", type=int, default=1)
    learnability.add_run_arguments(parser, work="/tmp/apa-fine-grained")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    all_results = {seed: run_seed(args, seed, work) for seed in args.seeds}
    report(all_results, args)
    if args.json:
        print(json.dumps(all_results))


if __name__ == "__main__":
    main()
