"""Confidence intervals for a pilot evaluation: a percentile bootstrap over dialogues.

Utterances of one dialogue share speakers, topic and recording conditions, so their
errors are correlated; resampling utterances as if they were independent makes an
interval too narrow for a site that labels a few dialogues. Here whole dialogues are
drawn with replacement (every utterance of a drawn dialogue counts as often as the
dialogue was drawn) and the metric is recomputed on each resample; the interval is the
2.5th and 97.5th percentile. The seed is fixed, so a rerun prints the same interval.

Every score is computed from per-utterance *weights* — a ``(rows, utterances)`` matrix of
how often each utterance counts — so one matrix product scores all resamples at once.
The same function scores groups of speakers (0/1 weights) in :mod:`joyful.analysis.fairness`.

Names, in ``ci`` and in per-group scores (one flat mapping, every value one number or
an interval): classification ``accuracy``, ``weighted_f1``, ``macro_f1`` and ``f1_<class>``;
multilabel ``weighted_f1``, ``micro_f1``, ``macro_f1``, ``subset_accuracy`` and
``f1_<emotion>``; regression ``mae``, ``corr``, ``acc2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from joyful.benchmark.stats import _resample_counts
from joyful.data.schema import DialogueSet

DEFAULT_RESAMPLES = 1000
#: Pilot sizes (labelled dialogues) for which :func:`half_width_by_size` reports the interval's width.
PILOT_SIZES = (5, 10, 20, 40, 80)


@dataclass(frozen=True)
class Scored:
    """The labelled utterances of an evaluation, in the order ``Joyful.evaluate`` returns them.

    ``y_true``/``y_pred``: class ids, 0/1 rows per emotion, or scores, as
    ``evaluate(..., with_predictions=True)`` gives them; ``dialogue``: the index of each
    utterance's dialogue (0 … D−1).
    """

    task: str
    y_true: np.ndarray
    y_pred: np.ndarray
    dialogue: np.ndarray
    labels: tuple[str, ...]

    @property
    def n_dialogues(self) -> int:
        return int(self.dialogue.max()) + 1 if len(self.dialogue) else 0

    def subset(self, dialogues: np.ndarray) -> Scored:
        """The utterances of the given dialogues (indices), renumbered 0 … len−1 in that order."""
        code = np.full(self.n_dialogues, -1)
        code[dialogues] = np.arange(len(dialogues))
        keep = code[self.dialogue] >= 0
        return Scored(self.task, self.y_true[keep], self.y_pred[keep], code[self.dialogue[keep]], self.labels)


def labelled_utterances(ds: DialogueSet) -> list[tuple[int, int]]:
    """``(dialogue index, utterance index)`` of every labelled utterance, in evaluation order."""
    return [(k, i) for k, d in enumerate(ds) for i, lab in enumerate(d.labels or ()) if lab is not None]


def scored(metrics: dict, ds: DialogueSet) -> Scored:
    """Predictions of ``evaluate(ds, with_predictions=True)`` tied to the dialogues of ``ds`` (as the model saw it)."""
    where = labelled_utterances(ds)
    if len(where) != len(metrics["y_true"]):
        raise ValueError(f"{len(metrics['y_true'])} predictions for {len(where)} labelled utterances")
    task = metrics.get("task", "classification")
    dtype = np.float64 if task == "regression" else np.int64
    dialogue = np.unique([k for k, _ in where], return_inverse=True)[1] if where else np.zeros(0, dtype=np.int64)
    labels = tuple(metrics.get("labels", ()))
    return Scored(task, np.asarray(metrics["y_true"], dtype=dtype), np.asarray(metrics["y_pred"], dtype=dtype),
                  dialogue.astype(np.int64), labels)


def weighted_scores(s: Scored, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of the task for each row of ``weights`` ``(rows, utterances)``; NaN where undefined.

    F1 follows scikit-learn with ``zero_division=0`` (a class with no true and no
    predicted utterance scores 0 and still counts in the macro mean), so a row of ones
    gives exactly :mod:`joyful.analysis.metrics`' figures.
    """
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum(1)
    if s.task == "regression":
        return _regression(s.y_true, s.y_pred, w, total)
    if s.task == "multilabel":
        y, p = s.y_true, s.y_pred
        tp, fp, fn = w @ (y & p), w @ ((1 - y) & p), w @ (y & (1 - p))
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        out = {
            "weighted_f1": _ratio((f1 * (tp + fn)).sum(1), (tp + fn).sum(1)),
            "micro_f1": _ratio(2 * tp.sum(1), (2 * tp + fp + fn).sum(1)),
            "macro_f1": f1.mean(1),
            "subset_accuracy": _ratio(w @ (y == p).all(1), total),
        }
        return out | {f"f1_{name}": f1[:, k] for k, name in enumerate(s.labels)}
    k = len(s.labels)
    cells = np.zeros((len(s.y_true), k * k))
    cells[np.arange(len(s.y_true)), s.y_true * k + s.y_pred] = 1.0
    confusion = (w @ cells).reshape(-1, k, k)
    hits, support, predicted = np.einsum("rii->ri", confusion), confusion.sum(2), confusion.sum(1)
    f1 = _ratio(2 * hits, support + predicted)
    out = {
        "accuracy": _ratio(hits.sum(1), total),
        "weighted_f1": _ratio((f1 * support).sum(1), support.sum(1)),
        "macro_f1": f1.mean(1),
    }
    return out | {f"f1_{name}": f1[:, j] for j, name in enumerate(s.labels)}


def _regression(y: np.ndarray, p: np.ndarray, w: np.ndarray, total: np.ndarray) -> dict[str, np.ndarray]:
    """MAE, Pearson's r and Acc-2 (negative vs non-negative) from weighted moments."""
    mean_y, mean_p = _ratio(w @ y, total), _ratio(w @ p, total)
    cov = _ratio(w @ (y * p), total) - mean_y * mean_p
    var_y = _ratio(w @ (y * y), total) - mean_y**2
    var_p = _ratio(w @ (p * p), total) - mean_p**2
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where((var_y > 1e-12) & (var_p > 1e-12), cov / np.sqrt(var_y * var_p), np.nan)
    return {
        "mae": _ratio(w @ np.abs(y - p), total),
        "corr": corr,
        "acc2": _ratio(w @ ((y >= 0) == (p >= 0)), total),
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, 0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros(np.shape(num)), where=np.asarray(den) > 0)


def dialogue_resamples(n_dialogues: int, n_resamples: int, seed: int) -> np.ndarray:
    """How often each dialogue is drawn in each resample, ``(n_resamples, n_dialogues)``."""
    index = np.random.default_rng(seed).integers(0, n_dialogues, size=(n_resamples, n_dialogues))
    return _resample_counts(index, n_dialogues)


def bootstrap_intervals(
    s: Scored, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, confidence: float = 0.95
) -> dict[str, list[float] | None]:
    """``metric → [low, high]``: the percentile interval over ``n_resamples`` resamples of whole dialogues.

    ``None`` for a metric no resample defines (a correlation of constant scores).
    """
    if s.n_dialogues == 0:
        raise ValueError("no labelled utterance to resample")
    weights = dialogue_resamples(s.n_dialogues, n_resamples, seed)[:, s.dialogue]
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    out: dict[str, list[float] | None] = {}
    for name, values in weighted_scores(s, weights).items():
        finite = values[np.isfinite(values)]
        out[name] = [float(x) for x in np.quantile(finite, q)] if len(finite) else None
    return out


def half_width_by_size(
    s: Scored,
    sizes: Sequence[int] = PILOT_SIZES,
    *,
    metric: str = "weighted_f1",
    draws: int = 50,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[dict]:
    """How wide the interval of a pilot with k labelled dialogues is, for each k in ``sizes``.

    For each k, ``draws`` sets of k dialogues are drawn without replacement from ``s``
    (sizes beyond the dialogues available are skipped) and each gets its own bootstrap
    interval; the answer is the mean half-width ((high − low) / 2) over the draws, with
    the mean number of utterances, so a site can read off how many dialogues it must
    label for, say, ±0.05.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for k in sizes:
        if k > s.n_dialogues:
            continue
        widths, utterances = [], []
        for _ in range(draws):
            part = s.subset(rng.choice(s.n_dialogues, size=k, replace=False))
            interval = bootstrap_intervals(part, n_resamples=n_resamples, seed=int(rng.integers(2**31)))[metric]
            if interval is not None:
                widths.append((interval[1] - interval[0]) / 2)
            utterances.append(len(part.y_true))
        rows.append({
            "dialogues": int(k),
            "utterances": float(np.mean(utterances)),
            "half_width": float(np.mean(widths)) if widths else None,
            "half_width_p90": float(np.quantile(widths, 0.9)) if widths else None,
        })
    return rows


__all__ = [
    "DEFAULT_RESAMPLES", "PILOT_SIZES", "Scored", "bootstrap_intervals", "dialogue_resamples", "half_width_by_size",
    "labelled_utterances", "scored", "weighted_scores",
]
