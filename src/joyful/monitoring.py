"""Drift: is the live stream still like the data the model was validated on?

A model does well on site only as long as what it sees resembles its validation data.
Each statistic of the last N served predictions is compared with the same statistic of
the model's validation outputs (saved with the model, ``info.extra["validation_outputs"]``)
by the population stability index,

    PSI = Σ_bins (a − e) · ln(a / e),

with ``a`` the live share and ``e`` the reference share of each bin; an empty bin counts as
:data:`EPSILON` so that the index stays finite. A rate (uncertain, corrected, missing) is
a two-bin distribution (yes, no). By the usual rule of thumb a PSI below 0.1 is no shift,
0.1–0.2 a moderate one and above 0.2 a significant one, hence :data:`DEFAULT_THRESHOLD`.

Statistics, each ``{"value", "reference", "psi"}``:

- ``labels`` (classification): the share of each predicted class, PSI over the classes;
  ``label:NAME`` (multilabel): the rate at which each emotion is predicted present;
  ``score`` (regression): the mean score, PSI over the score histogram;
- ``confidence``: the mean confidence, PSI over a histogram whose bins are the deciles of
  the validation confidences (so each holds a tenth of the reference; ties merge bins) —
  distributions are compared, since a mean can hold still while its spread moves;
- ``uncertain_rate``: share below the confidence threshold (only with one);
- ``correction_rate``: among the window's predictions an annotator answered, the share
  whose label was changed; its reference is the validation error rate among uncertain
  decisions (with a threshold, since annotators answer the review queue) or among all;
  its PSI waits for :data:`MIN_ANSWERED` answers, because a few corrections say nothing;
- ``missing:MODALITY``: the share of utterances without that modality.

``alert`` is raised when any PSI passes the threshold and the window holds at least
:data:`MIN_UTTERANCES` predictions: below that, sampling noise alone gives PSIs of the
order of (bins − 1) / N. The predicted label mix (``labels``, ``label:NAME``, ``score``)
must pass :data:`LABEL_MIX_FACTOR` times the threshold: which emotions people express
changes with what a conversation is about, without the model seeing them any worse.
Measured on an IEMOCAP-6 text model: held-out IEMOCAP sessions against its validation
dialogues give a label-mix PSI of 0.20–0.28 (their scripts call for other emotions:
5.6% against 18.7% excited), with confidence PSI 0.05–0.09; MELD dialogues give 0.30–0.40
on the label mix and 0.35–0.42 on confidence. So the label mix alone at 0.2 would alarm on
ordinary conversations, and the confidence histogram is what tells a new domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from joyful.corrections import ServedPrediction
from joyful.data.schema import MODALITY_NAMES
from joyful.errors import JoyfulError

#: PSI past which a statistic counts as shifted ("significant shift" by the usual rule of thumb).
DEFAULT_THRESHOLD = 0.2
#: The predicted label mix alerts only past this many times the threshold (see the module docstring).
LABEL_MIX_FACTOR = 2.5
#: Predictions in the rolling window.
DEFAULT_WINDOW = 500
#: No alert from a window smaller than this.
MIN_UTTERANCES = 100
#: Answered predictions needed before the correction rate gets a PSI.
MIN_ANSWERED = 20
#: The share an empty bin counts as.
EPSILON = 1e-4
#: Histogram bins of confidences and scores: deciles of the reference.
QUANTILE_BINS = 10


def psi(actual: Sequence[float], expected: Sequence[float], epsilon: float = EPSILON) -> float:
    """The population stability index of two distributions over the same bins (counts or shares)."""
    a = np.asarray(actual, dtype=float)
    e = np.asarray(expected, dtype=float)
    a = np.maximum(a / a.sum() if a.sum() else a, epsilon)
    e = np.maximum(e / e.sum() if e.sum() else e, epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def rate_psi(actual: float, expected: float) -> float:
    """PSI of a rate, as the two-bin distribution (yes, no)."""
    return psi([actual, 1.0 - actual], [expected, 1.0 - expected])


@dataclass(frozen=True)
class Reference:
    """The statistics of the model's validation outputs that the stream is held against."""

    task: str
    labels: tuple[str, ...]
    label_share: np.ndarray | None
    """Classification: share per class; multilabel: positive rate per emotion."""
    edges: np.ndarray
    """Inner bin edges of ``values`` (confidence, or the score for regression)."""
    histogram: np.ndarray
    mean: float
    uncertain_rate: float | None
    correction_rate: float | None
    missing_rate: dict[str, float]
    """Per modality key (t, a, v)."""

    @classmethod
    def from_validation(
        cls, saved: dict | None, task: str, labels: Sequence[str], modalities: Sequence[str], threshold: float | None
    ) -> Reference:
        """The reference from ``info.extra["validation_outputs"]``; a model without them is refused."""
        if not saved or "predicted" not in saved or "missing_rate" not in saved:
            raise JoyfulError(
                "this model was saved without its validation outputs, so the drift monitor has no reference; retrain it"
            )
        predicted = np.asarray(saved["predicted"], dtype=float)
        share = None
        if task == "classification":
            share = np.bincount(predicted.astype(int), minlength=len(labels)) / max(len(predicted), 1)
        elif task == "multilabel":
            share = predicted.reshape(len(predicted), len(labels)).mean(0)
        values = predicted if task == "regression" else np.asarray(saved["confidence"], dtype=float)
        edges = np.unique(np.quantile(values, np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1]))
        uncertain = correction = None
        if task != "regression":
            wrong = ~np.asarray(saved["correct"], dtype=bool)
            low = values < threshold if threshold is not None else np.ones_like(values, dtype=bool)
            uncertain = float(low.mean()) if threshold is not None else None
            correction = float(wrong[low].mean()) if low.any() else float(wrong.mean())
        missing = {_modality_key(m): float(r) for m, r in saved["missing_rate"].items()}
        return cls(
            task=task, labels=tuple(labels), label_share=share, edges=edges, histogram=_histogram(values, edges),
            mean=float(values.mean()), uncertain_rate=uncertain, correction_rate=correction,
            missing_rate={m: missing.get(m, 0.0) for m in modalities},
        )


def drift_report(
    stream: Sequence[ServedPrediction], reference: Reference, *, threshold: float = DEFAULT_THRESHOLD,
    min_utterances: int = MIN_UTTERANCES,
) -> dict:
    """``{"alert", "statistics": {name: {"value", "reference", "psi"}}, ...}`` for the predictions in ``stream``."""
    n = len(stream)
    stats: dict[str, dict] = {}
    r = reference
    if n:
        stats.update(_label_statistics(stream, r))
        values = np.array([p.label if r.task == "regression" else p.confidence for p in stream], dtype=float)
        stats["score" if r.task == "regression" else "confidence"] = {
            "value": float(values.mean()), "reference": r.mean, "psi": psi(_histogram(values, r.edges), r.histogram),
        }
        flags = [p.uncertain for p in stream if p.uncertain is not None]
        if r.uncertain_rate is not None and flags:
            rate = float(np.mean(flags))
            stats["uncertain_rate"] = {"value": rate, "reference": r.uncertain_rate, "psi": rate_psi(rate, r.uncertain_rate)}
        if r.correction_rate is not None:
            answered = [p.corrected != p.label for p in stream if p.corrected is not None]
            rate = float(np.mean(answered)) if answered else None
            stats["correction_rate"] = {
                "value": rate, "reference": r.correction_rate, "answered": len(answered),
                "psi": rate_psi(rate, r.correction_rate) if len(answered) >= MIN_ANSWERED else None,
            }
        for m, expected in r.missing_rate.items():
            rate = float(np.mean([bool(p.missing.get(m, False)) for p in stream]))
            stats[f"missing:{MODALITY_NAMES[m]}"] = {"value": rate, "reference": expected, "psi": rate_psi(rate, expected)}
    label_threshold = LABEL_MIX_FACTOR * threshold
    shifted = sorted(
        name for name, s in stats.items()
        if s["psi"] is not None and s["psi"] > (label_threshold if _is_label_mix(name) else threshold)
    )
    return {
        "alert": bool(shifted) and n >= min_utterances,
        "shifted": shifted,
        "n": n,
        "threshold": threshold,
        "label_threshold": label_threshold,
        "min_utterances": min_utterances,
        "statistics": {name: _rounded(s) for name, s in stats.items()},
    }


def _is_label_mix(name: str) -> bool:
    return name in ("labels", "score") or name.startswith("label:")


def _label_statistics(stream: Sequence[ServedPrediction], r: Reference) -> dict[str, dict]:
    if r.task == "classification":
        index = {name: k for k, name in enumerate(r.labels)}
        counts = np.bincount([index[p.label] for p in stream], minlength=len(r.labels))
        return {"labels": {
            "value": dict(zip(r.labels, (counts / counts.sum()).tolist(), strict=True)),
            "reference": dict(zip(r.labels, r.label_share.tolist(), strict=True)),
            "psi": psi(counts, r.label_share),
        }}
    if r.task == "multilabel":
        out = {}
        for k, name in enumerate(r.labels):
            rate = float(np.mean([name in p.label for p in stream]))
            out[f"label:{name}"] = {"value": rate, "reference": float(r.label_share[k]), "psi": rate_psi(rate, r.label_share[k])}
        return out
    return {}


def _histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin; bin k holds edges[k-1] ≤ v < edges[k]."""
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


def _modality_key(m: str) -> str:
    """``t``/``a``/``v`` from a key or a name (``text``), whichever the saved outputs use."""
    names = {name: key for key, name in MODALITY_NAMES.items()}
    return names.get(m, m)


def _rounded(s: dict) -> dict:
    def r(v):
        if isinstance(v, dict):
            return {k: round(x, 6) for k, x in v.items()}
        return round(v, 6) if isinstance(v, float) else v

    return {k: r(v) for k, v in s.items()}


__all__ = ["DEFAULT_THRESHOLD", "DEFAULT_WINDOW", "MIN_UTTERANCES", "Reference", "drift_report", "psi", "rate_psi"]
