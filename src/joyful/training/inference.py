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

from joyful.analysis.metrics import classification_metrics, multilabel_metrics, regression_metrics
from joyful.batching import EncodedDialogue, iterate_batches
from joyful.model import JoyfulModel
from joyful.training import distributed
from joyful.training.device import autocast, module_device


@torch.no_grad()
def predict_probabilities(model: JoyfulModel, dialogues: Sequence[EncodedDialogue], batch_size: int) -> list[np.ndarray]:
    """The task's outputs for each dialogue, in input order, on the host.

    ``(n_utterances, n_classes)`` probabilities (classification: summing to 1; multilabel:
    one per emotion), or ``(n_utterances,)`` clipped scores (regression).
    """
    model.eval()
    device = module_device(model)
    out: list[np.ndarray] = []
    for batch in iterate_batches(dialogues, batch_size, model.n_speakers, shuffle=False, device=device):
        with autocast(device, model.config.precision):
            logits = model(batch).logits
        outputs = model.task.outputs(logits).cpu().numpy()
        out.extend(np.split(outputs, np.cumsum(batch.lengths.cpu().numpy())[:-1]))
    return out


def evaluate_encoded(
    model: JoyfulModel, dialogues: Sequence[EncodedDialogue], labels: Sequence[str], batch_size: int,
    *, with_predictions: bool = False, thresholds: Sequence[float] | None = None,
) -> dict:
    """The task's metrics over every labelled utterance of ``dialogues``.

    ``thresholds``: per emotion (multilabel; default 0.5 each). ``with_predictions`` adds
    ``y_true`` and ``y_pred`` (class indices, 0/1 rows, or scores; multilabel also
    ``y_prob``), in utterance order, for paired comparisons such as the bootstrap.
    """
    task = model.task
    ranks = distributed.current()
    shard = dialogues[ranks.rank :: ranks.world_size] if ranks else dialogues
    outputs = predict_probabilities(model, shard, batch_size) if shard else []
    y_true = torch.cat([d.label for d in shard]).numpy() if shard else _empty(task.name, len(labels))
    y_out = np.concatenate(outputs) if outputs else _empty(task.name, len(labels)).astype(np.float32)
    if ranks:  # each process scored its share of the dialogues; the metrics are over all of them
        parts = distributed.gather((y_true, y_out))
        y_true, y_out = np.concatenate([t for t, _ in parts]), np.concatenate([p for _, p in parts])
    known = task.labelled(torch.from_numpy(y_true)).numpy()
    y_true, y_out = y_true[known], y_out[known]
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
    if with_predictions:
        truth = y_true.astype(np.int64) if task.name == "multilabel" else y_true
        metrics.update(y_true=truth.tolist(), y_pred=y_pred.tolist())
        if task.name == "multilabel":
            metrics["y_prob"] = y_out.tolist()
    return metrics


def _empty(task: str, k: int) -> np.ndarray:
    if task == "classification":
        return np.zeros(0, dtype=np.int64)
    return np.zeros((0, k) if task == "multilabel" else 0, dtype=np.float32)
