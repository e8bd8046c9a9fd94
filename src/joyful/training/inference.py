"""What a trained model outputs, and its scores, in mini-batches on the model's device.

Outputs are the task's (:mod:`joyful.data.tasks`): class probabilities, emotion
probabilities, or sentiment scores. In a distributed run each process scores its share
of the dialogues and the outputs are gathered, so every process gets the metrics over
all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from joyful.analysis.metrics import (
    classification_metrics, expected_calibration_error, multilabel_metrics, regression_metrics,
)
from joyful.batching import EncodedDialogue, iterate_batches
from joyful.data.tasks import Task
from joyful.model import JoyfulModel
from joyful.training import distributed
from joyful.training.device import autocast, module_device

#: What ``evaluate_encoded(..., with_predictions=True)`` adds to the metrics: per-utterance lists, not scores.
PREDICTION_KEYS = ("y_true", "y_pred", "y_prob", "y_uncalibrated")


def served_outputs(task: Task, logits: Tensor | np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The task's outputs of ``logits / temperature``, on the host: the one place calibration is applied.

    Every served probability (evaluate, predict, explain, the service, ensembles) comes
    from here, so a model's temperature can never apply to one path and not another.
    """
    return task.outputs(torch.as_tensor(logits).float() / temperature).cpu().numpy()


@torch.no_grad()
def predict_logits(model: JoyfulModel, dialogues: Sequence[EncodedDialogue], batch_size: int) -> list[np.ndarray]:
    """The head's logits for each dialogue, in input order, as float32 on the host (before any temperature)."""
    model.eval()
    device = module_device(model)
    out: list[np.ndarray] = []
    for batch in iterate_batches(dialogues, batch_size, model.n_speakers, shuffle=False, device=device):
        with autocast(device, model.config.precision):
            logits = model(batch).logits
        out.extend(np.split(logits.float().cpu().numpy(), np.cumsum(batch.lengths.cpu().numpy())[:-1]))
    return out


def predict_probabilities(model: JoyfulModel, dialogues: Sequence[EncodedDialogue], batch_size: int) -> list[np.ndarray]:
    """The task's outputs for each dialogue, in input order, on the host, at the model's temperature.

    ``(n_utterances, n_classes)`` probabilities (classification: summing to 1; multilabel:
    one per emotion), or ``(n_utterances,)`` clipped scores (regression).
    """
    return [served_outputs(model.task, z, model.temperature) for z in predict_logits(model, dialogues, batch_size)]


def labelled_logits(
    model: JoyfulModel, dialogues: Sequence[EncodedDialogue], n_labels: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, logits (N, n_labels))`` of every labelled utterance of ``dialogues``, in utterance order.

    In a distributed run each process scores its share and every process gets all of them.
    """
    task = model.task
    ranks = distributed.current()
    shard = dialogues[ranks.rank :: ranks.world_size] if ranks else dialogues
    logits = predict_logits(model, shard, batch_size) if shard else []
    y_true = torch.cat([d.label for d in shard]).numpy() if shard else _empty(task.name, n_labels)
    z = np.concatenate(logits) if logits else np.zeros((0, n_labels), dtype=np.float32)
    if ranks:
        parts = distributed.gather((y_true, z))
        y_true, z = np.concatenate([t for t, _ in parts]), np.concatenate([p for _, p in parts])
    known = task.labelled(torch.from_numpy(y_true)).numpy()
    return y_true[known], z[known]


def evaluate_encoded(
    model: JoyfulModel, dialogues: Sequence[EncodedDialogue], labels: Sequence[str], batch_size: int,
    *, with_predictions: bool = False, thresholds: Sequence[float] | None = None,
) -> dict:
    """The task's metrics over every labelled utterance of ``dialogues``.

    ``thresholds``: per emotion (multilabel; default 0.5 each). ``loss`` is the task's
    supervised loss (cross-entropy, BCE or L1) of the logits at temperature 1. Classification and
    multilabel also get ``ece`` (of the probabilities served, at the model's temperature)
    and ``ece_uncalibrated`` (at temperature 1), so a report shows what calibration did.
    ``with_predictions`` adds ``y_true`` and ``y_pred`` (class indices, 0/1 rows, or
    scores; classification and multilabel also ``y_prob``, the served probabilities) and
    ``y_uncalibrated`` (the outputs at temperature 1, what an ensemble averages), in
    utterance order, for paired comparisons such as the bootstrap.
    """
    task = model.task
    y_true, z = labelled_logits(model, dialogues, len(labels), batch_size)
    y_out = served_outputs(task, z, model.temperature)
    if task.name == "classification":
        y_pred = y_out.argmax(-1) if len(y_out) else np.zeros(0, dtype=np.int64)
        metrics = classification_metrics(y_true, y_pred, labels)
    elif task.name == "multilabel":
        t = [0.5] * len(labels) if thresholds is None else list(thresholds)
        metrics = multilabel_metrics(y_true, y_out, labels, t)
        y_pred = task.decide(y_out, t)
    else:
        y_pred = y_out
        metrics = regression_metrics(y_true, y_pred)
    y_uncalibrated = served_outputs(task, z)
    if len(z):  # the supervised loss at temperature 1, what early stopping with select_by = "loss" watches
        metrics["loss"] = float(task.loss(torch.from_numpy(z), torch.from_numpy(y_true)))
    if task.name != "regression":
        metrics.update(
            ece=expected_calibration_error(task.name, y_true, y_out),
            ece_uncalibrated=expected_calibration_error(task.name, y_true, y_uncalibrated),
        )
    if with_predictions:
        truth = y_true.astype(np.int64) if task.name == "multilabel" else y_true
        metrics.update(y_true=truth.tolist(), y_pred=y_pred.tolist(), y_uncalibrated=y_uncalibrated.tolist())
        if task.name != "regression":
            metrics["y_prob"] = y_out.tolist()
    return metrics


def _empty(task: str, k: int) -> np.ndarray:
    if task == "classification":
        return np.zeros(0, dtype=np.int64)
    return np.zeros((0, k) if task == "multilabel" else 0, dtype=np.float32)
