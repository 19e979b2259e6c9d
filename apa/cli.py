"""The ``apa`` command line.

``apa evaluate``: agreement of predicted scores with human scores, as a table, ``metrics.json``
and a report with scatter plots; two prediction files compare two systems.
``apa prepare``: a Speechocean762 directory as a JSONL manifest.
``apa synth``: a synthetic, rule-labelled Speechocean762-format corpus spoken by espeak-ng.
``apa finetune``: a LoRA adapter trained on labelled data, validated every epoch.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from apa.cli_options import given, setting_flags, setting_option
from apa.errors import ApaError
from apa.finetune.config import TrainConfig
from apa.log import configure_logging, get_logger
from apa.scoring.settings import ScoringSettings

app = typer.Typer(
    name="apa",
    help="Automatic pronunciation assessment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
log = get_logger("apa.cli")


def _fail(message: str) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


def _system_names(preds: list[str], names: list[str]) -> list[str]:
    if names and len(names) != len(preds):
        raise _fail(f"give one --name per --pred ({len(preds)} predictions, {len(names)} names)")
    if not names:
        names = [Path(p.rstrip("/")).name.split(".")[0] for p in preds]
        names = [n or f"system{i}" for i, n in enumerate(names)]
    if len(set(names)) != len(names):
        names = [f"{n}#{i + 1}" for i, n in enumerate(names)]
    return names


@app.command()
def evaluate(
    pred: Annotated[
        list[str],
        typer.Option(
            help="Predictions: a score-table directory, its utterances table, or JSONL of "
            "assessments (local or s3://). Give it twice to compare two systems."
        ),
    ],
    gold: Annotated[
        str,
        typer.Option(
            help="Human scores: scores.json, a Speechocean762 directory, or a manifest with scores."
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Directory for metrics.json, report.md, plots/.")
    ] = Path("evaluation"),
    name: Annotated[
        list[str] | None, typer.Option(help="A name per --pred, in order (default: file names).")
    ] = None,
    resamples: Annotated[int, typer.Option(min=0, help="Bootstrap resamples (0: no CIs).")] = 1000,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999)] = 0.95,
    seed: Annotated[int, typer.Option(help="Bootstrap seed; same seed, same intervals.")] = 0,
) -> None:
    """Compare predicted scores with human scores at sentence, word and phone level."""
    configure_logging()
    from apa.data.human_scores import read_human_scores
    from apa.metrics.evaluate import evaluate as run_evaluation
    from apa.metrics.join import paired_scores
    from apa.report import console_table, write_report
    from apa.tables import read_assessments

    if len(pred) > 2:
        raise _fail("give one or two --pred")
    names = _system_names(pred, name or [])
    started = time.perf_counter()
    try:
        human = read_human_scores(gold)
        systems = {n: read_assessments(p) for n, p in zip(names, pred, strict=True)}
    except (OSError, ValueError) as e:
        raise _fail(str(e)) from e
    if not human.assessments:
        raise _fail(f"no human scores in {gold}")
    log.info(
        "inputs_read",
        gold=gold,
        human_scored=len(human.assessments),
        human_unscored=human.unscored,
        human_errors=len(human.errors),
        **{f"pred_{n}": len(a) for n, a in systems.items()},
    )
    console = Console(soft_wrap=True)
    if human.errors:
        console.print(
            f"[yellow]{len(human.errors)} human-score entries could not be read[/] "
            f"(first: {human.errors[0].reason}: {human.errors[0].message})"
        )
    evaluation = run_evaluation(
        systems, human.assessments, n_resamples=resamples, confidence=confidence, seed=seed
    )
    pairs = {n: paired_scores(a, human.assessments) for n, a in systems.items()}
    sources = {"human scores": gold, **dict(zip(names, pred, strict=True))}
    written = write_report(evaluation, pairs, out, sources=sources)
    console.print(console_table(evaluation))
    for system in evaluation.systems:
        for j in system.join:
            if j.pred_only or j.gold_only or j.mismatched or j.duplicate_predictions:
                console.print(
                    f"{system.name} {j.level}: {j.matched} matched, {j.mismatched} mismatched, "
                    f"{j.pred_only} predicted only, {j.gold_only} human only, "
                    f"{j.duplicate_predictions} duplicate"
                )
    console.print(f"metrics: {written['metrics']}\nreport:  {written['report']}")
    log.info("evaluated", seconds=round(time.perf_counter() - started, 2), out=str(out))


@app.command()
@setting_flags(ScoringSettings)
def score(
    input: Annotated[
        str,
        typer.Option(
            "--input", help="Speechocean762 directory, or a manifest (JSONL/CSV/Parquet, s3://)."
        ),
    ],
    output: Annotated[
        str, typer.Option(help="Directory (local or s3://) for the Parquet score tables.")
    ],
    limit: Annotated[
        int | None, typer.Option(min=1, help="Score only the first N utterances read.")
    ] = None,
    *,
    flags: dict[str, Any],  # a flag for every ScoringSettings field (apa.cli_options)
) -> None:
    """Score utterances in-process and write utterances/words/phones/errors tables."""
    configure_logging()
    from apa.scoring.run import run_scoring

    try:
        settings = ScoringSettings(**given(ScoringSettings, flags))
    except ValueError as e:
        raise _fail(str(e)) from e
    console = Console(soft_wrap=True)
    try:
        summary = run_scoring(input, output, settings, limit=limit, progress=sys.stderr.isatty())
    except ApaError as e:
        raise _fail(e.message) from e
    except (OSError, ValueError) as e:
        raise _fail(str(e)) from e
    console.print(
        f"{summary.inputs} inputs = {summary.scored} scored + {summary.errors} errors; "
        f"{summary.utterances_per_second:.2f} utterances/s, "
        f"RTF {summary.realtime_factor if summary.realtime_factor is not None else '-'}"
        + (
            f", {summary.lm_forward_passes_per_utterance:g} LM passes/utterance"
            if summary.lm_forward_passes_per_utterance is not None
            else ""
        )
        + f" ({summary.scorer.name}{', RANDOM WEIGHTS' if summary.scorer.model_is_random else ''})"
    )
    for reason, count in summary.errors_by_reason.items():
        console.print(f"  {count} × {reason}")
    console.print(f"tables: {output}")


@app.command("calibrate")
def calibrate_gop(
    input: Annotated[
        str,
        typer.Option(
            "--input",
            help="Labelled data: Speechocean762 dir with scores.json, or "
            "a manifest with human scores.",
        ),
    ],
    out: Annotated[str, typer.Option(help="Calibration JSON to write (path or s3://).")],
) -> None:
    """Refit the builtin:gop calibration (GOP features → 0-2 / 0-10 scores) on labelled data."""
    configure_logging()
    from apa import storage
    from apa.data.inputs import read_utterances
    from apa.gop.refit import refit_calibration

    try:
        source = read_utterances(input)
        calibration, errors, unlabelled = refit_calibration(source.utterances)
    except (OSError, ValueError) as e:
        raise _fail(str(e)) from e
    storage.write_bytes(out, (calibration.model_dump_json(indent=2) + "\n").encode())
    console = Console(soft_wrap=True)
    console.print(
        f"fitted on {calibration.fitted_on} utterances; {len(errors)} unusable, "
        f"{unlabelled} without human scores, {len(source.errors)} unreadable; wrote {out}"
    )
    for e in [*source.errors, *errors]:
        log.warning("utterance_error", **e.model_dump(exclude_none=True))


@app.command()
def prepare(
    corpus: Annotated[Path, typer.Argument(help="Speechocean762 root or split directory.")],
    out: Annotated[str, typer.Option(help="Manifest to write (.jsonl or .jsonl.gz).")],
    split: Annotated[
        list[str] | None, typer.Option(help="Splits to include (default: train and test).")
    ] = None,
) -> None:
    """Write a Speechocean762 corpus as a JSONL manifest (with human scores when present)."""
    configure_logging()
    from apa.data.manifest import write_manifest
    from apa.data.speechocean762 import prepare_speechocean762

    try:
        data = prepare_speechocean762(corpus, splits=tuple(split or ("train", "test")))
    except FileNotFoundError as e:
        raise _fail(str(e)) from e
    write_manifest(data.utterances, out)
    errors = data.all_errors
    Console(soft_wrap=True).print(
        f"{len(data.utterances)} utterances written to {out}, {len(errors)} errors"
    )
    for e in errors:
        log.warning("utterance_error", **e.model_dump(exclude_none=True))


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Corpus directory to write.")],
    train_sentences: Annotated[int, typer.Option(min=1, help="Distinct training sentences.")] = 30,
    test_sentences: Annotated[int, typer.Option(min=1, help="Distinct held-out sentences.")] = 10,
    takes: Annotated[int, typer.Option(min=1, help="Utterances per sentence.")] = 4,
    min_words: Annotated[int, typer.Option(min=1, help="Fewest words in a sentence.")] = 3,
    max_words: Annotated[int, typer.Option(min=1, help="Most words in a sentence.")] = 6,
    phones: Annotated[
        int | None, typer.Option(min=1, help="Only sentences of exactly this many phones.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same corpus.")] = 0,
    rules: Annotated[
        int,
        typer.Option(
            min=3, max=4, help="Labelling rules: 3, or 4 (near pairs, reduced vowels, deletions)."
        ),
    ] = 3,
) -> None:
    """Write a synthetic Speechocean762-format corpus with rule-based labels
    (docs/synthetic-corpus.md)."""
    configure_logging()
    from apa.synth.corpus import SynthConfig, write_synthetic_corpus
    from apa.synth.espeak import EspeakError

    try:
        config = SynthConfig(
            train_sentences=train_sentences,
            test_sentences=test_sentences,
            takes=takes,
            min_words=min_words,
            max_words=max_words,
            phones=phones,
            seed=seed,
            rules=rules,
        )
        write_synthetic_corpus(out, config)
    except (EspeakError, ValueError) as e:
        raise _fail(str(e)) from e
    Console(soft_wrap=True).print(f"corpus: {out} (train/, test/, resource/scores.json)")


@app.command()
def finetune(
    # TrainConfig fields (apa.cli_options); --set gives any other
    train: Annotated[str | None, setting_option(TrainConfig, "train")] = None,
    out: Annotated[str | None, setting_option(TrainConfig, "out")] = None,
    valid: Annotated[str | None, setting_option(TrainConfig, "valid")] = None,
    model: Annotated[str | None, setting_option(TrainConfig, "model")] = None,
    epochs: Annotated[int | None, setting_option(TrainConfig, "epochs")] = None,
    config: Annotated[
        Path | None, typer.Option(help="TrainConfig as JSON; flags and --set override it.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="key=value for any TrainConfig field (JSON values)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest checkpoint in --out.")
    ] = False,
) -> None:
    """Train a LoRA adapter in the one-pass answer format (docs/finetuning.md)."""
    configure_logging()
    from apa.finetune.config import load_train_config
    from apa.finetune.loop import finetune as run_finetune
    from apa.finetune.loop import latest_checkpoint

    flags = {"train": train, "out": out, "valid": valid, "model": model, "epochs": epochs}
    try:
        train_config = load_train_config(config, flags, set_)
    except (OSError, ValueError) as e:
        raise _fail(str(e)) from e
    resume_from = latest_checkpoint(train_config.out) if resume else None
    if resume and resume_from is None:
        raise _fail(f"--resume: no checkpoint in {train_config.out}")
    try:
        result = run_finetune(train_config, resume_from=resume_from)
    except (OSError, ValueError) as e:
        raise _fail(str(e)) from e
    console = Console(soft_wrap=True)
    console.print(f"{result.steps} steps in {result.wall_s:.1f} s; adapter: {result.adapter_dir}")
    if train_config.valid and result.adapter_dir is not None:
        preds = Path(train_config.out) / "predictions"
        console.print(
            f"compare: apa evaluate --pred {preds / 'adapter.jsonl'} "
            f"--pred {preds / 'base.jsonl'} --gold {train_config.valid}"
        )


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
