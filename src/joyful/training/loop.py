"""The training loop: Adam, early stopping on the task's validation metric, per-epoch history."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from joyful.batching import EncodedDialogue, iterate_batches
from joyful.data.tasks import Task
from joyful.model import JoyfulModel
from joyful.training import distributed
from joyful.training.device import autocast, module_device
from joyful.training.inference import evaluate_encoded
from joyful.training.seeding import seed_everything

LOSS_PARTS = ("all", "ce", "mf", "ct", "kd")
#: Validation scores kept in the history, whichever of them the task reports.
HISTORY_METRICS = ("loss", "accuracy", "weighted_f1", "macro_f1", "micro_f1", "mae", "corr", "acc2")


@dataclass
class EpochRecord:
    """Mean training losses of one epoch and, when there is a validation set, its scores."""

    epoch: int
    losses: dict[str, float]
    valid: dict | None
    seconds: float
    member: int | None = None
    """Which member of an ensemble (``config.ensemble`` > 1) this epoch trained."""

    def row(self) -> dict[str, float | int]:
        row: dict[str, float | int] = {} if self.member is None else {"member": self.member}
        row.update({"epoch": self.epoch, "seconds": round(self.seconds, 3)})
        row.update({f"loss_{k}": v for k, v in self.losses.items()})
        if self.valid is not None:
            row.update({f"valid_{k}": self.valid[k] for k in HISTORY_METRICS if k in self.valid})
        return row


@dataclass
class TrainResult:
    best_epoch: int
    best_valid: dict | None
    history: list[EpochRecord] = field(default_factory=list)
    stopped_early: bool = False


def class_weights(dialogues: Sequence[EncodedDialogue], n_classes: int, task: Task) -> torch.Tensor | None:
    """Classification: inverse-frequency weights normalised to mean 1, absent classes 0.

    Multilabel: each emotion's positives weighted by negatives/positives (BCE's
    ``pos_weight``; 1 for an emotion never present). Regression: none.
    """
    y = torch.cat([d.label for d in dialogues])
    y = y[task.labelled(y)]
    if task.name == "regression":
        return None
    if task.name == "multilabel":
        pos = y.sum(0)
        return torch.where(pos > 0, (len(y) - pos) / pos.clamp(min=1), torch.ones_like(pos))
    counts = torch.bincount(y, minlength=n_classes).float()
    w = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return w * n_classes / w.sum()


def train(
    model: JoyfulModel,
    train_set: Sequence[EncodedDialogue],
    valid_set: Sequence[EncodedDialogue] | None,
    labels: Sequence[str],
    *,
    on_improvement: Callable[[int, dict | None], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: bool = True,
    selection: Callable[[dict | None], float] | None = None,
    initial_score: float | None = None,
) -> TrainResult:
    """Train in place and leave the best weights loaded.

    ``on_improvement`` is called after every epoch that beats the best selection score so
    far (the task's validation metric — weighted F1, or −MAE for regression —, the negated
    validation loss with ``select_by = "loss"``, or ``selection(valid_metrics)`` when given; every epoch
    without a validation set); the caller writes the checkpoint there, so an interrupted
    run keeps its best model. ``initial_score`` is the selection score of the weights as
    given (fine-tuning a trained model): they count as epoch 0, and are restored if no
    epoch beats them.
    """
    c = model.config
    device = module_device(model)
    ranks = distributed.current()
    main = ranks is None or ranks.is_main  # only the main process reports and writes
    progress = progress and main
    generator = seed_everything(c.seed, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    # fp16 gradients underflow without loss scaling; bf16 keeps fp32's range and needs none.
    scaler = torch.amp.GradScaler(device.type, enabled=c.precision == "fp16")
    weight = class_weights(train_set, len(labels), model.task) if c.class_weights else None
    weight = weight.to(device) if weight is not None else None
    average = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(c.ema_decay), use_buffers=True) if c.ema_decay > 0 else None
    )
    result = TrainResult(best_epoch=0, best_valid=None)
    best_score, best_state, waited = float("-inf"), None, 0
    if initial_score is not None:
        best_score = initial_score
        best_state = _snapshot(model)
    # DDP averages the gradients of the processes after every backward pass. No parameter of
    # the configurations probed sits out a forward pass, but a graph without some relation
    # type or modality must not stop a long run, so DDP is told to look (one warning if none).
    net = (
        torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        ) if ranks else model
    )
    shard = (ranks.rank, ranks.world_size) if ranks else None
    n_batches = -(-len(train_set) // c.batch_size)
    epochs = tqdm(range(1, c.epochs + 1), desc="training", unit="epoch", disable=not progress, dynamic_ncols=True)
    for epoch in epochs:
        start = time.perf_counter()
        model.train()
        sums = dict.fromkeys(LOSS_PARTS, 0.0)
        for batch in tqdm(
            iterate_batches(
                train_set, c.batch_size, model.n_speakers, shuffle=True, generator=generator, device=device, shard=shard
            ),
            total=n_batches, desc=f"epoch {epoch}", leave=False, disable=not progress, dynamic_ncols=True,
        ):
            with autocast(device, c.precision):
                losses = net(batch, class_weight=weight).losses
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["all"] * batch.loss_scale).backward()
            scaler.step(optimizer)
            scaler.update()
            if average is not None:
                average.update_parameters(model)
            for k in LOSS_PARTS:
                sums[k] += float(losses[k].detach()) * batch.loss_scale
        live = _swap_in(model, average)  # the averaged weights are what is validated and checkpointed
        if ranks:  # BatchNorm statistics saw each process's own share; rank 0's are kept by all
            distributed.share_buffers(model)
        valid = evaluate_encoded(model, valid_set, labels, c.batch_size) if valid_set else None
        record = EpochRecord(epoch, {k: v / n_batches for k, v in sums.items()}, valid, time.perf_counter() - start)
        result.history.append(record)
        if on_epoch and main:
            on_epoch(record)
        score = _selection_score(model, valid, selection) if valid else float(epoch)
        improved = score > best_score
        if ranks:  # decided once, by rank 0, so no process stops or checkpoints alone
            improved = distributed.from_main(improved)
        if improved:
            best_score, waited = score, 0
            best_state = _snapshot(model)
            result.best_epoch, result.best_valid = epoch, valid
            if on_improvement and main:
                on_improvement(epoch, valid)
        else:
            waited += 1
        if live is not None:
            model.load_state_dict(live)
        metric = model.task.primary_metric
        epochs.set_postfix(loss=f"{record.losses['all']:.3f}", **{f"valid_{metric}": f"{valid[metric]:.4f}" if valid else "-"})
        if valid and waited >= c.patience:
            result.stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


def _selection_score(model: JoyfulModel, valid: dict, selection: Callable[[dict | None], float] | None) -> float:
    """Higher is better: the caller's ``selection``, else the config's ``select_by``."""
    if selection is not None:
        return selection(valid)
    if model.config.select_by == "loss":
        return -valid["loss"]
    return model.task.selection_score(valid)


def _snapshot(model: JoyfulModel) -> dict:
    """A copy of the weights and buffers that later steps do not change."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _swap_in(model: JoyfulModel, average: AveragedModel | None) -> dict | None:
    """Load the moving average into ``model``; return the live weights to restore (``None``: no average)."""
    if average is None:
        return None
    live = _snapshot(model)
    model.load_state_dict(average.module.state_dict())
    return live
