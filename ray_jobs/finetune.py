"""Fine-tuning on Ray Train: the same loop as ``apa finetune`` in N data-parallel workers.

Run it in place (a local Ray is started when there is no cluster) or on a cluster::

    python -m ray_jobs.finetune --train data/train --valid data/test --out /tmp/run --workers 2
    python -m ray_jobs.finetune --config cfg.json --workers 4 --gpu --storage s3://b/ft --name r7
    ray job submit --address http://HEAD:8265 -- python -m ray_jobs.finetune ...

A :class:`ray.train.torch.TorchTrainer` starts ``--workers`` workers, sets up
``torch.distributed`` (gloo on CPU, NCCL on GPU) and runs :func:`train_loop_per_worker`, which
calls :func:`apa.finetune.loop.finetune` with a :class:`RayReporter`: the loop itself (data
sharding across ranks, gradient averaging, rank-0 validation and checkpoints) lives in
``apa/``. Every validated epoch is reported to Ray Train (``ray.train.report``) with the same
metrics ``apa finetune`` logs and, from rank 0, the checkpoint it just wrote; Ray Train keeps
the checkpoints under ``--storage`` (a local directory or ``s3://``, honouring
``AWS_ENDPOINT_URL``) and hands the newest back when a run with the same ``--name`` is
restarted, from which the loop resumes exactly. The last report's checkpoint also holds the
adapter (``adapter/``: peft files, ``training.json``, ``metrics.json``), ready for
``apa score --adapter``.

Settings: :class:`apa.finetune.config.TrainConfig` (``--config`` JSON, flags, ``--set
key=value``); ``out`` is each worker's local scratch directory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from apa import storage
from apa.finetune.checkpoint import STATE_FILE
from apa.finetune.config import TrainConfig, load_train_config
from apa.finetune.loop import ADAPTER_DIR, finetune, latest_checkpoint
from apa.log import configure_logging, get_logger
from ray_jobs.runtime import forwarded_env

log = get_logger("ray_jobs.finetune")


class RayReporter:
    """:class:`apa.finetune.loop.TrainHooks` for Ray Train: each report goes to
    ``ray.train.report``, with the checkpoint directory when the rank wrote one."""

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        import ray.train

        numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        ray.train.report(
            numbers,
            checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None,
        )


def train_loop_per_worker(settings: dict[str, Any]) -> None:
    """One Ray Train worker: resume from Ray's newest checkpoint if any, run the apa loop,
    then report the final checkpoint (training state + adapter) from rank 0."""
    import ray.train
    import ray.train.torch

    config = TrainConfig(**settings["config"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    scratch = Path(config.out) / f"rank-{rank}" if rank else Path(config.out)
    device = str(ray.train.torch.get_device()) if settings["use_gpu"] else "cpu"
    config = config.model_copy(update={"out": str(scratch), "device": device})
    resume = ray.train.get_checkpoint()
    with tempfile.TemporaryDirectory() as tmp:
        resume_from = None
        if resume is not None:
            resume_from = Path(resume.to_directory(str(Path(tmp) / "resume")))
            log.info("resuming", rank=rank, checkpoint=str(resume_from))
        result = finetune(config, hooks=RayReporter(), resume_from=resume_from)
    final = None
    if result.adapter_dir is not None:
        final = scratch / "final"
        shutil.rmtree(final, ignore_errors=True)
        final.mkdir(parents=True)
        last = latest_checkpoint(scratch)
        if last is not None:
            shutil.copy2(last / STATE_FILE, final / STATE_FILE)
        shutil.copytree(result.adapter_dir, final / ADAPTER_DIR)
    ray.train.report(
        {"step": result.steps, "wall_s": result.wall_s, "final": 1},
        checkpoint=ray.train.Checkpoint.from_directory(str(final)) if final else None,
    )


def run_training(
    config: TrainConfig,
    *,
    workers: int = 2,
    use_gpu: bool = False,
    storage_path: str | None = None,
    name: str = "apa-finetune",
) -> Any:
    """Fit a :class:`~ray.train.torch.TorchTrainer` running the apa loop on ``workers``
    workers; returns Ray Train's ``Result`` (its ``checkpoint`` holds ``adapter/``)."""

    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        ray.init(runtime_env={"env_vars": forwarded_env()})
    storage_path = storage_path or str(Path(config.out).resolve() / "ray")
    filesystem = None
    if storage.is_s3(storage_path):
        filesystem, storage_path = storage.filesystem(storage_path)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.model_dump(mode="json"), "use_gpu": use_gpu},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints + 1),
        ),
    )
    result = trainer.fit()
    log.info("ray_finetune_done", checkpoint=str(result.checkpoint), metrics=result.metrics)
    return result


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    train: Annotated[str | None, typer.Option(help="Training data (dir or manifest).")] = None,
    valid: Annotated[str | None, typer.Option(help="Validation data.")] = None,
    out: Annotated[str | None, typer.Option(help="Workers' local run directory.")] = None,
    model: Annotated[str | None, typer.Option(help="Base model.")] = None,
    config: Annotated[Path | None, typer.Option(help="TrainConfig JSON.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="key=value for any TrainConfig field.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Data-parallel workers.")] = 2,
    gpu: Annotated[bool, typer.Option(help="One GPU per worker (NCCL).")] = False,
    storage_path: Annotated[
        str | None, typer.Option("--storage", help="Ray Train storage: directory or s3://.")
    ] = None,
    name: Annotated[str, typer.Option(help="Run name (same name: resume).")] = "apa-finetune",
) -> None:
    """Fine-tune a LoRA adapter with Ray Train (module docstring)."""
    configure_logging()
    flags = {"train": train, "valid": valid, "out": out, "model": model}
    try:
        train_config = load_train_config(config, flags, set_)
    except (OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from None
    result = run_training(
        train_config, workers=workers, use_gpu=gpu, storage_path=storage_path, name=name
    )
    typer.echo(json.dumps({"checkpoint": str(result.checkpoint.path), **result.metrics}))


if __name__ == "__main__":
    app()
