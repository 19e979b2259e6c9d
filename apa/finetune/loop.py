"""The fine-tuning loop: LoRA (peft) on an audio LMM, trained in the one-pass answer format.

:func:`finetune` runs a whole run from a :class:`~apa.finetune.config.TrainConfig`:

1. *setup*: the base model is loaded as the scorer loads it
   (:func:`apa.engine.scorer.load_lmm_scorer`: answer tokens added before the adapter), a peft
   LoRA (``target_modules``) plus fully trained ``modules_to_save`` goes on, and the
   training and validation utterances become :class:`~apa.finetune.data.Example` s.
2. *train*: AdamW, linear warmup then a constant, linear or cosine schedule, gradient
   accumulation, gradient clipping, bfloat16 autocast on CUDA. Each micro-batch runs the
   scorer's own one-pass forward (:meth:`apa.engine.scorer.LmmScorer.slot_states`: placeholders
   in, the state before each slot out), the output head at the slots, and a soft-target
   cross-entropy over the whole vocabulary against the rendered targets; the loss is the
   weighted mean of each slot group's mean (sentence, word, phone scores; pronounced
   phones), so the 5 sentence slots are not drowned by the phone slots.
3. *validate* before training and every ``eval_every_epochs`` epochs: the validation split
   is scored by real inference (the same :class:`~apa.engine.scorer.LmmScorer`, one-pass, with
   :func:`apa.scoring.pipeline.score_batch`) and compared with its human scores by
   :func:`apa.metrics.evaluate.evaluate_system` (PCC, SCC, Kendall, RMSE per level and
   aspect).
4. *save*: a checkpoint every epoch (and every ``checkpoint_every_steps``) that resumes
   exactly; at the end the adapter (``adapter/``: peft files + ``training.json`` +
   ``metrics.json``), the base and adapter predictions on the validation split
   (``predictions/{base,adapter}.jsonl``, for ``apa evaluate``) and ``history.jsonl``.

Data parallel: when ``torch.distributed`` is initialised (a Ray Train worker, ``torchrun``),
each rank takes its share of every global micro-batch (``batch_size`` per rank) and
``DistributedDataParallel`` averages the trainable parameters' gradients across ranks in the
backward pass of each optimizer step's last micro-batch (``no_sync`` before it); gloo on
CPU, NCCL on GPU. DDP wraps :class:`MicroBatchLoss`, the loss of a micro-batch as a module,
since scoring runs the model in parts (audio, LM, output head at the slots only), not
through one ``forward``. Rank 0 alone validates,
writes checkpoints and the adapter; the metrics are broadcast so that every rank reports the
same. :class:`TrainHooks` lets a caller (``ray_jobs/finetune.py``) receive each epoch's
metrics and checkpoint without owning the loop.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from apa.engine.scorer import LmmScorer, load_lmm_scorer
from apa.finetune.checkpoint import (
    CHECKPOINTS_DIR,
    Progress,
    checkpoint_dirs,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from apa.finetune.config import TrainConfig
from apa.finetune.data import (
    GROUPS,
    Example,
    Targets,
    build_examples,
    collate_targets,
    epoch_order,
    labelled_utterances,
)
from apa.log import get_logger
from apa.metrics.evaluate import evaluate, evaluate_system
from apa.metrics.result import SystemMetrics
from apa.models.card import write_card
from apa.models.families import by_name
from apa.models.peft_quiet import quiet_peft
from apa.schema import Assessment
from apa.scoring.pipeline import length_batches, score_batch
from apa.tables import write_assessments_jsonl

log = get_logger("apa.finetune")

ADAPTER_DIR = "adapter"
PREDICTIONS_DIR = "predictions"
HISTORY_FILE = "history.jsonl"


class TrainHooks(Protocol):
    """Called on every rank after each validated epoch (and once at the end of training)."""

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """``metrics``: flat numbers (``loss``, ``step``, ``epoch``,
        ``valid/sentence/fluency/pcc``, ...); ``checkpoint``: the directory just written
        (rank 0 only), else ``None``."""
        ...


@dataclass
class FinetuneResult:
    adapter_dir: Path | None
    """``out/adapter`` (rank 0), ``None`` on other ranks."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """One entry per validation (epoch 0: before training)."""
    steps: int = 0
    wall_s: float = 0.0


class MicroBatchLoss(torch.nn.Module):
    """The training loss of a micro-batch as a module, for ``DistributedDataParallel`` to
    wrap: its parameters are the peft model's (``model``, a submodule), its ``forward``
    takes the micro-batch's example indices and returns ``loss(indices)``. Indices, not
    examples, go through DDP's ``forward``, which moves its inputs to the device."""

    def __init__(
        self, model: torch.nn.Module, loss: Callable[[Sequence[int]], torch.Tensor]
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, indices: Sequence[int]) -> torch.Tensor:
        return self.loss(indices)


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def flat_metrics(system: SystemMetrics, prefix: str = "valid") -> dict[str, float | None]:
    """``{prefix}/{level}/{aspect}/{pcc,scc,rmse}`` -> value, for logs and reporters."""
    out: dict[str, float | None] = {}
    for a in system.aspects:
        for name in ("pcc", "scc", "rmse"):
            out[f"{prefix}/{a.level}/{a.aspect}/{name}"] = getattr(a, name).value
    return out


def lr_lambda(config: TrainConfig, total_steps: int):
    """The learning-rate factor at each optimizer step: linear warmup, then the schedule."""
    warmup = config.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        span = max(1, total_steps - warmup)
        done = min(1.0, (step - warmup) / span)
        if config.schedule == "linear":
            return 1.0 - done
        return 0.5 * (1.0 + math.cos(math.pi * done))

    return factor


def expected_score_error(
    scorer: LmmScorer, logits: torch.Tensor, kinds: torch.Tensor, targets: Targets
) -> torch.Tensor:
    """Per target slot (``logits`` ``(targets, vocab)``, slot ``kinds`` ``(targets,)``), the
    squared error between the score the model reads as (its expected value over the slot's
    scores, as one-pass scoring reads it) and the target's, in points of a 0-10 scale (a
    phone's 0-2 counts five times); 0 for pronounced slots."""
    score = targets.groups != GROUPS.index("pronounced")
    model = scorer.allowed(logits[score], kinds[score], -torch.inf)
    wanted = scorer.allowed(targets.dense[score], kinds[score], 0.0)
    points = torch.arange(model.shape[1], device=model.device) * 10.0
    high = torch.isfinite(model).sum(-1) - 1
    error = ((torch.softmax(model, dim=-1) - wanted) * points).sum(-1) / high
    return torch.zeros_like(targets.groups, dtype=logits.dtype).index_put(
        (score.nonzero().squeeze(1),), error**2
    )


class Trainer:
    """One fine-tuning run: :meth:`setup`, :meth:`train`, :meth:`save_adapter`
    (:func:`finetune` calls them in turn)."""

    def __init__(self, config: TrainConfig, *, hooks: TrainHooks | None = None) -> None:
        self.config = config
        self.hooks = hooks
        self.rank, self.world = _dist()
        self.out = Path(config.out)
        self.progress = Progress()
        self.history: list[dict[str, Any]] = []
        self.base_predictions: list[Assessment] | None = None

    # -- setup ----------------------------------------------------------------------------

    def setup(self, resume_from: str | Path | None = None) -> None:
        from peft import LoraConfig, get_peft_model

        config = self.config
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_everything(config.seed)
        base = load_lmm_scorer(
            config.model,
            device=config.device,
            dtype="float32",
            prompt=config.prompt,
            mode="one-pass",
            alignment=config.alignment,
        )
        loaded = base.loaded
        family = by_name(loaded.family)
        targets = config.target_modules or list(family.lora_targets)
        to_save = config.modules_to_save
        if to_save is None:
            to_save = list(family.modules_to_save)
        lora = LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=targets,
            modules_to_save=to_save or None,
        )
        seed_everything(config.seed)
        with quiet_peft():
            model = get_peft_model(loaded.model, lora)
        self.model = model
        self.scorer = LmmScorer(
            replace(loaded, model=model),
            mode="one-pass",
            scores="expected",
            prompt=config.prompt,
            alignment=config.alignment,
        )
        self.device = torch.device(loaded.device)
        self.vocab = self.scorer.head.weight.shape[0]
        self.params = [p for p in model.parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in self.params)
        total = sum(p.numel() for p in model.parameters())

        train_utts, train_errors = labelled_utterances(config.train)
        self.train_examples, errors = build_examples(self.scorer, train_utts)
        train_errors += errors
        self.valid_examples: list[Example] = []
        valid_errors: list = []
        if config.valid is not None:
            valid_utts, valid_errors = labelled_utterances(config.valid)
            self.valid_examples, errors = build_examples(self.scorer, valid_utts)
            valid_errors += errors
        if not self.train_examples:
            first = train_errors[0].message if train_errors else "no utterances"
            raise ValueError(f"no training examples in {config.train} ({first})")
        for split, errs in (("train", train_errors), ("valid", valid_errors)):
            for e in errs[:5]:
                log.warning("example_skipped", split=split, reason=e.reason, message=e.message)

        self.global_batch = config.batch_size * self.world
        self.micro_per_epoch = math.ceil(len(self.train_examples) / self.global_batch)
        steps_per_epoch = math.ceil(self.micro_per_epoch / config.grad_accum)
        self.total_steps = config.epochs * steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(config, self.total_steps)
        )
        if resume_from is not None:
            self.progress = load_checkpoint(
                resume_from, model=model, optimizer=self.optimizer, scheduler=self.scheduler
            )
            self._load_history()
        self.ddp: torch.nn.parallel.DistributedDataParallel | None = None
        if self.world > 1:
            # built last: DDP starts every rank from rank 0's parameters
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                MicroBatchLoss(model, self._train_loss),
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,  # no trained buffers
                find_unused_parameters=True,  # a micro-batch need not reach every adapter
            )
        log.info(
            "finetune_setup",
            model=config.model,
            family=loaded.family,
            device=loaded.device,
            rank=self.rank,
            world=self.world,
            trainable_params=trainable,
            total_params=total,
            train=len(self.train_examples),
            train_skipped=len(train_errors),
            valid=len(self.valid_examples),
            valid_skipped=len(valid_errors),
            steps=self.total_steps,
            resumed_from=str(resume_from) if resume_from else None,
            resumed_step=self.progress.step,
        )

    def _load_history(self) -> None:
        path = self.out / HISTORY_FILE
        if path.is_file():
            self.history = [
                h
                for h in (json.loads(line) for line in path.read_text().splitlines() if line)
                if h["step"] <= self.progress.step
            ]

    # -- the loss -------------------------------------------------------------------------

    def loss(self, examples: Sequence[Example]) -> torch.Tensor:
        """The weighted mean over slot groups of the mean soft-target cross-entropy."""
        hidden, kinds = self.scorer.slot_states([e.job for e in examples])
        targets = collate_targets(examples, self.vocab, self.device)
        logits = self.scorer.head(hidden[targets.index]).float()
        ce = -(targets.dense * torch.log_softmax(logits, dim=-1)).sum(-1)
        extra = self.config.expected_score_weights
        if any(extra.values()):
            scale = torch.tensor([extra.get(name, 0.0) for name in GROUPS], device=ce.device)
            errors = expected_score_error(self.scorer, logits, kinds[targets.index], targets)
            ce = ce + scale[targets.groups] * errors
        total = ce.new_zeros(())
        weight_sum = 0.0
        for g, name in enumerate(GROUPS):
            weight = self.config.loss_weights.get(name, 0.0)
            chosen = targets.groups == g
            if weight and bool(chosen.any()):
                total = total + weight * ce[chosen].mean()
                weight_sum += weight
        return total / weight_sum if weight_sum else total

    def _train_loss(self, indices: Sequence[int]) -> torch.Tensor:
        return self.loss([self.train_examples[i] for i in indices])

    def _micro_loss(self, indices: Sequence[int]) -> torch.Tensor:
        """The loss of the training examples ``indices``, through DDP when data parallel."""
        return self._train_loss(indices) if self.ddp is None else self.ddp(indices)

    def _sync(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """Around a micro-batch's forward and backward: DDP averages the gradients across
        ranks in the backward only where ``sync`` (the optimizer step's last micro-batch)."""
        if self.ddp is None or sync:
            return contextlib.nullcontext()
        return self.ddp.no_sync()

    def _autocast(self):
        enabled = self.config.bf16 and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    # -- validation -----------------------------------------------------------------------

    def predict(self, examples: Sequence[Example]) -> list[Assessment]:
        """Real one-pass inference on ``examples`` (errors are logged and left out)."""
        self.model.eval()
        items = [e.item for e in examples]
        results: list = [None] * len(items)
        with self._autocast():
            for batch in length_batches(items, self.config.eval_batch_size):
                for i, r in zip(batch, score_batch(self.scorer, [items[i] for i in batch]),
                                strict=True):  # fmt: skip
                    results[i] = r
        self.model.train()
        out = [r for r in results if isinstance(r, Assessment)]
        if len(out) < len(results):
            log.warning("predictions_failed", failed=len(results) - len(out))
        return out

    def validate(self, loss: float | None) -> dict[str, Any]:
        """Validate on rank 0, share the metrics with every rank, report them."""
        entry: dict[str, Any] = {
            "epoch": self.progress.epoch,
            "step": self.progress.step,
            "loss": loss,
        }
        if self.rank == 0 and self.valid_examples:
            predictions = self.predict(self.valid_examples)
            if self.progress.step == 0:
                self.base_predictions = predictions
            gold = [e.item.utterance.human for e in self.valid_examples]
            system = evaluate_system(
                predictions, gold, name="adapter", n_resamples=0, seed=self.config.seed
            )
            entry.update(flat_metrics(system))
        if self.world > 1:
            shared = [entry]
            torch.distributed.broadcast_object_list(shared, src=0)
            entry = shared[0]
        self.history.append(entry)
        if self.rank == 0:
            with (self.out / HISTORY_FILE).open("a") as f:
                f.write(json.dumps(entry) + "\n")
        log.info("validation", **{k.replace("/", "."): v for k, v in entry.items()})
        return entry

    # -- training -------------------------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        if self.rank != 0:
            return None
        where = self.out / CHECKPOINTS_DIR / f"step-{self.progress.step:06d}"
        save_checkpoint(
            where,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            progress=self.progress,
            config=self.config.model_dump(),
        )
        prune_checkpoints(self.out, self.config.keep_checkpoints)
        log.info("checkpoint_saved", path=str(where), step=self.progress.step)
        return where

    def train(self) -> None:
        config = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        if self.progress.step == 0 and self.progress.micro == 0 and self.progress.epoch == 0:
            self.validate(loss=None)
        self.model.train()
        started = time.perf_counter()
        p = self.progress
        losses: list[float] = []
        while p.step < self.total_steps and p.epoch < config.epochs:
            order = epoch_order(len(self.train_examples), config.seed, p.epoch)
            while p.micro < self.micro_per_epoch and p.step < self.total_steps:
                first = p.micro - p.micro % config.grad_accum
                group = range(first, min(first + config.grad_accum, self.micro_per_epoch))
                self.optimizer.zero_grad(set_to_none=True)
                for micro in group:
                    chunk = order[micro * self.global_batch : (micro + 1) * self.global_batch]
                    mine = chunk[self.rank :: self.world]
                    # DDP averages over ranks: weigh each rank by its share of the chunk
                    weight = len(mine) / len(chunk) * self.world / len(group)
                    if not mine:
                        # the epoch's short last micro-batch left this rank nothing, but
                        # every rank must take part in every synchronising backward
                        mine, weight = chunk[:1], 0.0
                    with self._sync(micro == group[-1]):
                        with self._autocast():
                            loss = self._micro_loss(mine)
                        (loss * weight).backward()
                    if weight:
                        losses.append(float(loss.detach()))
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                p.micro = group[-1] + 1
                p.step += 1
                if p.step % 10 == 0 or p.step == 1:
                    log.info(
                        "train_step",
                        step=p.step,
                        epoch=p.epoch,
                        loss=round(float(np.mean(losses[-10:])), 5),
                        lr=self.scheduler.get_last_lr()[0],
                        elapsed_s=round(time.perf_counter() - started, 1),
                    )
                every = config.checkpoint_every_steps
                if every and p.step % every == 0 and p.micro < self.micro_per_epoch:
                    self.save_checkpoint()
            epoch_done = p.micro >= self.micro_per_epoch
            last = p.step >= self.total_steps or (epoch_done and p.epoch + 1 >= config.epochs)
            if epoch_done:
                p.epoch += 1
                p.micro = 0
            validate = last or (epoch_done and p.epoch % config.eval_every_epochs == 0)
            if epoch_done or last:
                mean_loss = float(np.mean(losses)) if losses else None
                losses = []
                where = self.save_checkpoint()
                entry = self.validate(mean_loss) if validate else {"step": p.step}
                if self.hooks is not None:
                    self.hooks.report(entry, where)
            if last:
                break

    # -- saving ---------------------------------------------------------------------------

    def save_adapter(self, wall_s: float) -> Path | None:
        """The adapter, its card and the predictions (rank 0); returns the adapter dir."""
        if self.rank != 0:
            return None
        adapter_dir = self.out / ADAPTER_DIR
        with quiet_peft():
            self.model.save_pretrained(str(adapter_dir), save_embedding_layers=False)
        metrics: dict[str, Any] = {}
        if self.valid_examples:
            predictions = self.predict(self.valid_examples)
            preds_dir = self.out / PREDICTIONS_DIR
            preds_dir.mkdir(exist_ok=True)
            write_assessments_jsonl(predictions, str(preds_dir / "adapter.jsonl"))
            systems = {"adapter": predictions}
            base_path = preds_dir / "base.jsonl"
            if self.base_predictions is not None:
                write_assessments_jsonl(self.base_predictions, str(base_path))
            if base_path.is_file():
                from apa.tables import read_assessments

                systems["base"] = read_assessments(str(base_path))
            gold = [e.item.utterance.human for e in self.valid_examples]
            evaluation = evaluate(
                systems, gold, n_resamples=self.config.eval_resamples, seed=self.config.seed
            )
            metrics = evaluation.model_dump(mode="json")
        write_card(
            adapter_dir,
            config=self.config.model_dump(mode="json"),
            metrics=metrics,
            extra={
                "mode": "one-pass",  # the answer format trained: placeholders at every slot
                "steps": self.progress.step,
                "epochs_done": self.progress.epoch,
                "world_size": self.world,
                "wall_s": round(wall_s, 2),
                "train_examples": len(self.train_examples),
                "valid_examples": len(self.valid_examples),
                "history": self.history,
            },
        )
        log.info("adapter_saved", path=str(adapter_dir))
        return adapter_dir


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run directory, or ``None``."""
    found = checkpoint_dirs(run_dir)
    return found[-1] if found else None


def finetune(
    config: TrainConfig,
    *,
    hooks: TrainHooks | None = None,
    resume_from: str | Path | None = None,
) -> FinetuneResult:
    """Run (or resume, from a checkpoint directory) a fine-tuning run; see the module
    docstring. Raises ``ValueError`` when the training data has no usable example."""
    started = time.perf_counter()
    trainer = Trainer(config, hooks=hooks)
    trainer.setup(resume_from)
    trainer.train()
    wall = time.perf_counter() - started
    adapter_dir = trainer.save_adapter(wall)
    log.info("finetune_done", steps=trainer.progress.step, wall_s=round(wall, 1))
    return FinetuneResult(adapter_dir, trainer.history, trainer.progress.step, wall)
