"""Selective prediction: keep the decisions the model is sure of, send the rest to a person.

A decision is *retained* when its confidence (:meth:`joyful.data.tasks.Task.confidence`)
is at least the threshold P, and *uncertain* otherwise. Lowering P retains more
(coverage rises) and usually lets in more errors (risk rises); the risk–coverage curve
shows that trade, and :func:`threshold_for_accuracy` picks the P that a site asks for as
"at least A accuracy on what the model decides alone", on validation data, where the
model's confidences and their correctness are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from joyful.errors import JoyfulError


@dataclass(frozen=True)
class RiskCoverage:
    """One point per distinct confidence ``threshold``: what ``confidence >= threshold`` retains.

    Sorted by decreasing threshold, so coverage grows along the arrays; ``accuracy`` is
    that of the retained decisions and ``risk = 1 - accuracy``.
    """

    threshold: np.ndarray
    coverage: np.ndarray
    accuracy: np.ndarray

    @property
    def risk(self) -> np.ndarray:
        return 1.0 - self.accuracy


def risk_coverage(confidence: Sequence[float], correct: Sequence[bool]) -> RiskCoverage:
    """The risk–coverage curve of ``(confidence, correct)`` pairs.

    Ties move together: utterances of equal confidence are all retained or all not, since
    no threshold can split them; hence one point per distinct confidence.
    """
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    if conf.shape != ok.shape or conf.ndim != 1:
        raise JoyfulError("confidence and correct must be lists of the same length")
    if conf.size == 0:
        raise JoyfulError("no validation utterance to choose a threshold on")
    order = np.argsort(-conf, kind="stable")
    conf, ok = conf[order], ok[order]
    hits = np.cumsum(ok)
    # the last position of each run of equal confidences closes that threshold's retained set
    last = np.flatnonzero(np.r_[conf[1:] != conf[:-1], True])
    kept = last + 1
    return RiskCoverage(threshold=conf[last], coverage=kept / conf.size, accuracy=hits[last] / kept)


def threshold_for_accuracy(confidence: Sequence[float], correct: Sequence[bool], target: float) -> float:
    """The smallest P such that the decisions with confidence ≥ P are at least ``target`` accurate.

    The smallest such P retains the most: the largest coverage that meets the target.
    P is always one of the observed confidences (any P between two of them retains the
    same set, and the observed one is the natural report). The accuracy need not fall
    monotonically as P drops, so the retained set at the returned P meets the target
    even when some larger P would not. A target no threshold reaches is refused, naming
    the best accuracy on offer (that of the most confident decisions).
    """
    if not 0.0 < target <= 1.0:
        raise JoyfulError(f"the target accuracy must be in (0, 1], not {target}")
    curve = risk_coverage(confidence, correct)
    meets = np.flatnonzero(curve.accuracy >= target - 1e-12)
    if meets.size == 0:
        best = int(np.argmax(curve.accuracy))
        raise JoyfulError(
            f"no confidence threshold reaches accuracy {target:g} on the validation data; the best is "
            f"{curve.accuracy[best]:.4f} (confidence ≥ {curve.threshold[best]:.4f}, coverage {curve.coverage[best]:.4f})"
        )
    return float(curve.threshold[meets[-1]])


def abstention_threshold(
    task: str, validation_outputs: dict | None, abstain_below: float | None = None, target_accuracy: float | None = None
) -> float | None:
    """The confidence threshold a user asks for: a given P, or one chosen for a target accuracy (else ``None``).

    ``validation_outputs`` is what training saved (``info.extra["validation_outputs"]``).
    Refused for a regression model (a score has no confidence) and, for a target, for a
    model saved without its validation outputs.
    """
    if abstain_below is None and target_accuracy is None:
        return None
    option = "--abstain-below" if target_accuracy is None else "--target-accuracy"
    if abstain_below is not None and target_accuracy is not None:
        raise JoyfulError("give --abstain-below or --target-accuracy, not both")
    if task == "regression":
        raise JoyfulError(
            f"{option} needs a confidence, and a regression model's score has none; selective prediction is for "
            "classification and multilabel models"
        )
    if abstain_below is not None:
        if not 0.0 <= abstain_below <= 1.0:
            raise JoyfulError(f"--abstain-below is a confidence in [0, 1], not {abstain_below}")
        return float(abstain_below)
    saved = validation_outputs or {}
    if "confidence" not in saved or "correct" not in saved:
        raise JoyfulError(
            "this model was saved without its validation outputs, so no threshold can be chosen for a target "
            "accuracy; retrain it (or give --abstain-below)"
        )
    return threshold_for_accuracy(saved["confidence"], saved["correct"], target_accuracy)


__all__ = ["RiskCoverage", "abstention_threshold", "risk_coverage", "threshold_for_accuracy"]
