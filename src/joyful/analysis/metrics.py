"""The metrics of every evaluation, per task (scikit-learn's implementations), and calibration error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict:
    """Accuracy, weighted and macro F1, per-class F1 and the confusion matrix, as plain JSON types.

    Fractions in [0, 1]. Every class of the label set is scored, including classes absent
    from ``y_true``, so tables from different splits line up.
    """
    ids = list(range(len(labels)))
    per_class = f1_score(y_true, y_pred, labels=ids, average=None, zero_division=0)
    return {
        "task": "classification",
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "per_class_f1": {name: float(v) for name, v in zip(labels, per_class, strict=True)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        "labels": list(labels),
        "n_utterances": int(len(y_true)),
    }


def multilabel_metrics(y_true: np.ndarray, y_prob: np.ndarray, labels: Sequence[str], thresholds: Sequence[float]) -> dict:
    """Per-emotion and pooled scores of a multi-label head, as CMU-MOSEI papers report them.

    ``y_true`` is the 0/1 matrix ``(N, K)``, ``y_prob`` the emotion probabilities; an emotion
    is predicted at or above its threshold. ``weighted_accuracy`` is (TP·N/P + TN) / 2N
    (MulT and later papers), i.e. the mean of the rates on positives and negatives; with
    no positive (or no negative) utterance it is the rate on the class that is present.
    """
    t = np.asarray(thresholds, dtype=float)
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1, len(labels))
    y_pred = (np.asarray(y_prob).reshape(-1, len(labels)) >= t).astype(np.int64)
    per_emotion = {}
    for k, name in enumerate(labels):
        truth, pred = y_true[:, k], y_pred[:, k]
        pos, neg = truth == 1, truth == 0
        rates = [float((pred[m] == truth[m]).mean()) for m in (pos, neg) if m.any()]
        per_emotion[name] = {
            "weighted_accuracy": float(np.mean(rates)) if rates else 0.0,
            "f1": float(f1_score(truth, pred, zero_division=0)),
            "accuracy": float((truth == pred).mean()) if len(truth) else 0.0,
            "threshold": float(t[k]),
            "positives": int(pos.sum()),
        }
    pooled = {
        avg: float(f1_score(y_true, y_pred, average=avg, zero_division=0)) if len(y_true) else 0.0
        for avg in ("micro", "macro", "weighted")
    }
    return {
        "task": "multilabel",
        "per_emotion": per_emotion,
        "micro_f1": pooled["micro"],
        "macro_f1": pooled["macro"],
        "weighted_f1": pooled["weighted"],
        "subset_accuracy": float((y_true == y_pred).all(axis=1).mean()) if len(y_true) else 0.0,
        "labels": list(labels),
        "n_utterances": int(len(y_true)),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Sentiment scores the way MOSI/MOSEI papers report them (MMSA's conventions).

    ``acc2``/``f1``: negative (< 0) against non-negative; ``acc2_non0``/``f1_non0``: negative
    against positive with true zeros left out; F1 weighted over the two classes;
    ``acc5``/``acc7``: scores clipped to [-2, 2] / [-3, 3] and rounded to integers. ``corr``
    is Pearson's r, ``None`` when either side is constant.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    n = len(y_true)

    def binary(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
        if not len(truth):
            return 0.0, 0.0
        return float(accuracy_score(truth, pred)), float(f1_score(truth, pred, average="weighted", zero_division=0))

    acc2, f1 = binary(y_true >= 0, y_pred >= 0)
    nonzero = y_true != 0
    acc2_non0, f1_non0 = binary(y_true[nonzero] > 0, y_pred[nonzero] > 0)
    corr = None
    if n > 1 and y_true.std() > 0 and y_pred.std() > 0:
        corr = float(np.corrcoef(y_true, y_pred)[0, 1])
    return {
        "task": "regression",
        "mae": float(np.abs(y_true - y_pred).mean()) if n else 0.0,
        "corr": corr,
        "acc2": acc2,
        "f1": f1,
        "acc2_non0": acc2_non0,
        "f1_non0": f1_non0,
        "acc5": float((np.round(np.clip(y_true, -2, 2)) == np.round(np.clip(y_pred, -2, 2))).mean()) if n else 0.0,
        "acc7": float((np.round(np.clip(y_true, -3, 3)) == np.round(np.clip(y_pred, -3, 3))).mean()) if n else 0.0,
        "n_utterances": int(n),
    }


#: Equal-width confidence bins of the expected calibration error (Guo et al., 2017, use 15).
ECE_BINS = 15


@dataclass(frozen=True)
class ReliabilityBins:
    """Per equal-width bin of [0, 1]: how many points fell in it, their mean confidence and the rate they were right."""

    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    """NaN for an empty bin."""

    @property
    def ece(self) -> float:
        """Σ_b |B_b|/n · |accuracy_b − confidence_b|: how far stated confidence is from the observed rate."""
        n = self.count.sum()
        if not n:
            return 0.0
        gap = np.abs(self.accuracy - self.confidence)
        return float(np.nansum(self.count * gap) / n)


def reliability_bins(task: str, y_true: np.ndarray, y_prob: np.ndarray, bins: int = ECE_BINS) -> ReliabilityBins:
    """The points whose calibration is measured, binned by confidence (bin b holds [b/B, (b+1)/B), 1.0 in the last).

    Classification: one point per utterance, (max probability, argmax == truth), since the
    top class is what is served as the decision. Multilabel: one point per (utterance,
    emotion) cell, (the emotion's probability, emotion present), since every emotion's
    probability is served and should be a frequency, whatever threshold decides on it.
    """
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if task == "classification":
        confidence = y_prob.max(-1) if len(y_prob) else np.zeros(0)
        outcome = (y_prob.argmax(-1) == np.asarray(y_true)).astype(np.float64) if len(y_prob) else np.zeros(0)
    elif task == "multilabel":
        confidence, outcome = y_prob.ravel(), np.asarray(y_true, dtype=np.float64).ravel()
    else:
        raise ValueError(f"a {task} task serves no probabilities to calibrate")
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(which, confidence, bins) / count
        accuracy = np.bincount(which, outcome, bins) / count
    return ReliabilityBins(count.astype(np.int64), mean_confidence, accuracy)


def expected_calibration_error(task: str, y_true: np.ndarray, y_prob: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of served probabilities over :func:`reliability_bins` (0 with no point); see there for the points."""
    return reliability_bins(task, y_true, y_prob, bins).ece
