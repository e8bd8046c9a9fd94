"""Class probabilities and scores of a trained model, in mini-batches on the model's device.

In a distributed run each process scores its share of the dialogues and the predictions
are gathered, so every process gets the metrics over all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from joyful.analysis.metrics import classification_metrics
from joyful.batching import IGNORE_INDEX, EncodedDialogue, iterate_batches
from joyful.model import JoyfulModel
from joyful.training import distributed
from joyful.training.device import autocast, module_device


@torch.no_grad()
def predict_probabilities(model: JoyfulModel, dialogues: Sequence[EncodedDialogue], batch_size: int) -> list[np.ndarray]:
    """Class probabilities ``(n_utterances, n_classes)`` for each dialogue, in input order, on the host."""
    model.eval()
    device = module_device(model)
    out: list[np.ndarray] = []
    for batch in iterate_batches(dialogues, batch_size, model.n_speakers, shuffle=False, device=device):
        with autocast(device, model.config.precision):
            logits = model(batch).logits
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        out.extend(np.split(probs, np.cumsum(batch.lengths.cpu().numpy())[:-1]))
    return out


def evaluate_encoded(
    model: JoyfulModel, dialogues: Sequence[EncodedDialogue], labels: Sequence[str], batch_size: int,
    *, with_predictions: bool = False,
) -> dict:
    """Metrics over every labelled utterance of ``dialogues``.

    ``with_predictions`` adds ``y_true`` and ``y_pred`` (class indices, in utterance order)
    for paired comparisons such as the bootstrap.
    """
    ranks = distributed.current()
    shard = dialogues[ranks.rank :: ranks.world_size] if ranks else dialogues
    probs = predict_probabilities(model, shard, batch_size) if shard else []
    y_true = torch.cat([d.label for d in shard]).numpy() if shard else np.zeros(0, dtype=np.int64)
    y_pred = np.concatenate([p.argmax(-1) for p in probs]) if probs else np.zeros(0, dtype=np.int64)
    if ranks:  # each process scored its share of the dialogues; the metrics are over all of them
        parts = distributed.gather((y_true, y_pred))
        y_true, y_pred = np.concatenate([t for t, _ in parts]), np.concatenate([p for _, p in parts])
    known = y_true != IGNORE_INDEX
    metrics = classification_metrics(y_true[known], y_pred[known], labels)
    if with_predictions:
        metrics.update(y_true=y_true[known].tolist(), y_pred=y_pred[known].tolist())
    return metrics
