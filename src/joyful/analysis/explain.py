"""Why an utterance got its label: which modalities and which other utterances it rests on.

Both parts are occlusion tests on the trained model, so they explain the model actually
used (not a surrogate) and need nothing from its internals:

- a modality's contribution is how much the predicted label's probability drops when that
  modality is marked missing for the whole dialogue (the model's learned stand-in takes
  its place, exactly as for a recording without it);
- a context utterance's influence is how much it drops when that one utterance's content
  (every modality) is marked missing, the graph and speakers left as they are.

For a multi-label model the quantity is the confidence in the whole decision (the mean,
over emotions, of p for an emotion predicted present and 1 − p for one predicted absent);
for a sentiment model it is the score itself, so Δ > 0 means the part raised the score.

Every variant of a dialogue is an ordinary dialogue, so all of them go through the model
in mini-batches, one forward pass per batch; a dialogue of n utterances costs n + |M|
extra dialogues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from joyful.batching import EncodedDialogue
from joyful.model import JoyfulModel
from joyful.training.inference import predict_probabilities


def _occluded(d: EncodedDialogue, modalities: Sequence[str], rows: slice | int) -> EncodedDialogue:
    """A copy of ``d`` with ``modalities`` marked missing on ``rows``."""
    features = dict(d.features)
    for m in modalities:
        x = features[m].clone()
        x[rows] = float("nan")
        features[m] = x
    return replace(d, features=features)


def explain_dialogues(
    model: JoyfulModel, dialogues: Sequence[EncodedDialogue], batch_size: int, top_k: int = 3,
    thresholds: Sequence[float] | None = None,
) -> list[list[dict]]:
    """Per dialogue, per utterance: the decision, its support and the two attributions.

    Returns for each utterance ``{"class": c, "probability": p, "modalities": {m: Δp},
    "context": [(j, Δp), ...]}`` with the ``top_k`` other utterances of largest |Δp|, most
    influential first; Δp > 0 means the part supported the prediction. Indices ``j`` are
    positions in the encoded dialogue (the caller maps them to its own numbering). For
    multilabel and regression models ``class`` is ``None`` and ``probability`` is the
    support described in the module docstring (emotions decided at ``thresholds``, default 0.5).
    """
    modalities = model.modalities
    task = model.task
    out = []
    for d in dialogues:
        n = len(d)
        variants = [d] + [_occluded(d, (m,), slice(None)) for m in modalities]
        variants += [_occluded(d, modalities, j) for j in range(n)]
        outputs = np.stack(predict_probabilities(model, variants, batch_size))  # (1 + |M| + n, n[, C])
        predicted, chosen = _support(task.name, outputs, thresholds)  # chosen (1 + |M| + n, n): each variant's support
        drop = chosen[0] - chosen[1:]
        by_modality, by_utterance = drop[: len(modalities)], drop[len(modalities) :]  # (|M|, n), (n_j, n_i)
        rows = []
        for i in range(n):
            influence = by_utterance[:, i].copy()
            influence[i] = 0.0
            order = [j for j in np.argsort(-np.abs(influence), kind="stable") if j != i][:top_k]
            rows.append({
                "class": None if predicted is None else int(predicted[i]),
                "probability": float(chosen[0, i]),
                "modalities": {m: float(by_modality[k, i]) for k, m in enumerate(modalities)},
                "context": [(int(j), float(influence[j])) for j in order],
            })
        out.append(rows)
    return out


def _support(
    task: str, outputs: np.ndarray, thresholds: Sequence[float] | None
) -> tuple[np.ndarray | None, np.ndarray]:
    """The unoccluded decision, and every variant's support for it (see the module docstring)."""
    if task == "regression":
        return None, outputs
    if task == "multilabel":
        present = outputs[0] >= (0.5 if thresholds is None else np.asarray(thresholds))
        return None, np.where(present, outputs, 1.0 - outputs).mean(-1)
    predicted = outputs[0].argmax(-1)
    return predicted, outputs[:, np.arange(outputs.shape[1]), predicted]


__all__ = ["explain_dialogues"]
