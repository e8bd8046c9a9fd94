"""Per-emotion decision thresholds of a multi-label model, chosen on validation data.

CMU-MOSEI's emotions are rare and unequally so (fear and surprise are present in a few
per cent of segments), and a sigmoid trained with BCE rarely crosses 0.5 for them; a
threshold per emotion chosen for the best validation F1 is the usual remedy
(``config.thresholds = "validation"``).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

#: Candidate thresholds; a coarse grid keeps the choice from fitting single validation utterances.
GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def choose_thresholds(y_true: np.ndarray, y_prob: np.ndarray) -> list[float]:
    """For each emotion, the grid threshold with the best F1 on ``(y_true, y_prob)`` (``(N, K)`` each).

    Ties go to the threshold nearest 0.5; an emotion never present keeps 0.5, as F1 is 0 whatever the threshold.
    """
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    out = []
    for k in range(y_true.shape[1]):
        if not y_true[:, k].any():
            out.append(0.5)
            continue
        scores = np.array([f1_score(y_true[:, k], y_prob[:, k] >= t, zero_division=0) for t in GRID])
        best = np.flatnonzero(scores == scores.max())
        out.append(float(GRID[best[np.argmin(np.abs(GRID[best] - 0.5))]]))
    return out


__all__ = ["GRID", "choose_thresholds"]
