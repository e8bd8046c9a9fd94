"""Temperature scaling: one number that makes a trained model's probabilities mean what they say.

Networks trained to convergence on cross-entropy are over-confident (Guo et al., 2017): a
class served at 0.9 is right far less often than 9 times in 10, which matters as soon as
a person acts on the number (a review queue, an abstention threshold, drift alarms on
mean confidence). Dividing the logits by one temperature T > 0 fitted on validation data
fixes most of it without moving any decision: the argmax is unchanged, and so is every
multilabel decision at 0.5 (thresholds chosen per emotion are chosen after it, on the
calibrated probabilities).

T minimises the validation negative log-likelihood: softmax cross-entropy (classification)
or the mean binary cross-entropy of the emotions' sigmoids, one T shared by all of them
(multilabel). The NLL is convex in 1/T, hence unimodal in log T, so a bounded Brent search
on log T finds its minimum, deterministically. Regression serves scores, not
probabilities: it is never calibrated. An ensemble is calibrated as one model, on the
logits whose outputs are its members' mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from joyful.analysis.metrics import expected_calibration_error
from joyful.batching import EncodedDialogue
from joyful.data.tasks import Task
from joyful.model import JoyfulModel
from joyful.training.inference import labelled_logits, served_outputs

#: log T is searched in [-LOG_T_BOUND, LOG_T_BOUND], T in [0.05, 20]: far beyond what trained models need.
LOG_T_BOUND = 3.0


def negative_log_likelihood(task: Task, logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean NLL of the targets under ``logits / temperature`` (per utterance, or per emotion cell)."""
    s = np.asarray(logits, dtype=np.float64) / temperature
    if task.name == "classification":
        return float(np.mean(logsumexp(s, axis=-1) - s[np.arange(len(s)), np.asarray(y)]))
    if task.name == "multilabel":
        return float(np.mean(np.logaddexp(0.0, s) - np.asarray(y, dtype=np.float64) * s))
    raise ValueError(f"a {task.name} task has no likelihood to calibrate")


def fit_temperature(task: Task, logits: np.ndarray, y: np.ndarray) -> float:
    """The T > 0 of lowest NLL on ``(logits, y)`` (labelled rows only); 1.0 when there is nothing to fit on."""
    if not len(y):
        return 1.0
    found = minimize_scalar(
        lambda u: negative_log_likelihood(task, logits, y, float(np.exp(u))),
        bounds=(-LOG_T_BOUND, LOG_T_BOUND), method="bounded", options={"xatol": 1e-6},
    )
    return float(np.exp(found.x))


def calibrate(
    model: JoyfulModel, valid: Sequence[EncodedDialogue], labels: Sequence[str], batch_size: int
) -> dict[str, float]:
    """Fit the model's temperature on ``valid`` and set it; return it with the validation ECE before and after.

    The returned dict is what ``meta.json`` keeps under ``calibration``.
    """
    task = model.task
    y, z = labelled_logits(model, valid, len(labels), batch_size)
    t = fit_temperature(task, z, y)
    model.temperature = t
    return {
        "temperature": t,
        "ece_uncalibrated": expected_calibration_error(task.name, y, served_outputs(task, z)),
        "ece": expected_calibration_error(task.name, y, served_outputs(task, z, t)),
    }


def validation_outputs(
    model: JoyfulModel, valid: Sequence[EncodedDialogue], labels: Sequence[str], batch_size: int,
    thresholds: Sequence[float] | None = None,
) -> dict:
    """What the model served on its labelled validation utterances: the reference of selective prediction and drift.

    ``confidence`` (:meth:`Task.confidence` of the served outputs) and ``correct`` (the
    class, or every emotion, right) per utterance, classification and multilabel only;
    ``predicted`` (class id, 0/1 per emotion, or score) and ``missing_rate`` per modality
    (fraction of these utterances without it), for every task. Rounded to 6 digits, so a
    thousand utterances take a few tens of kilobytes of ``meta.json``.
    """
    task = model.task
    y, z = labelled_logits(model, valid, len(labels), batch_size)
    outputs = served_outputs(task, z, model.temperature)
    decided = task.decide(outputs, thresholds)
    known = [task.labelled(d.label) for d in valid]
    missing = {
        m: float(sum(int(torch.isnan(d.features[m][k]).all(-1).sum()) for d, k in zip(valid, known, strict=True)))
        for m in model.modalities
    }
    n = len(y)
    out: dict = {
        "predicted": _rounded(decided) if task.name == "regression" else decided.tolist(),
        "missing_rate": {m: round(v / n, 6) if n else 0.0 for m, v in missing.items()},
        "n_utterances": n,
    }
    if task.name != "regression":
        right = decided == y if task.name == "classification" else (decided == y.astype(np.int64)).all(-1)
        out["confidence"] = _rounded(task.confidence(outputs, thresholds))
        out["correct"] = right.tolist()
    return out


def _rounded(x: np.ndarray) -> list[float]:
    """6 decimals of float64 values: float32's own digits would print as 0.91234499216…"""
    return np.round(np.asarray(x, dtype=np.float64), 6).tolist()


__all__ = ["LOG_T_BOUND", "calibrate", "fit_temperature", "negative_log_likelihood", "validation_outputs"]
