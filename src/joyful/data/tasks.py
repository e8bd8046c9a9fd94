"""What the network predicts for each utterance: one class, a set of emotions, or a score.

The paper's network is the same for every benchmark; only its head and supervised loss
differ (SPEC, "Task" and "(D)"). A :class:`Task` holds exactly that difference, so fusion,
graph, augmentations and contrastive losses never ask which task they serve:

- ``classification`` (IEMOCAP, MELD): softmax over the label set, cross-entropy.
- ``multilabel`` (CMU-MOSEI emotions): a sigmoid per emotion, binary cross-entropy; an
  utterance's label is the tuple of emotions present (an empty tuple: none of them).
- ``regression`` (MOSI/MOSEI sentiment in [-3, 3]): one output, L1 loss (the paper's MAE
  variant), predictions clipped to the range.

Labels in a :class:`~joyful.data.schema.Dialogue` are ``str``, ``tuple[str, ...]`` or
``float`` accordingly, ``None`` when unlabelled (:mod:`joyful.data.label_forms`). As tensors (``EncodedDialogue.label``,
``Batch.y``): class ids with :data:`IGNORE_INDEX` (classification), an ``(N, K)`` 0/1 float
matrix with NaN rows (multilabel), a float vector with NaN (regression).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from joyful.config import TASKS
from joyful.data.label_forms import SENTIMENT_RANGE, Label
from joyful.errors import DataError, JoyfulError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Task:
    """The head's output, loss, decision and primary metric for one kind of label."""

    name: str

    # ------------------------------------------------------------------ labels → tensors
    def encode(self, labels: Sequence[Label | None] | None, n: int, names: Sequence[str], where: tuple[str, str]) -> Tensor:
        """Target tensor of one dialogue; ``where = (source, dialogue id)`` names it in errors."""
        source, did = where
        if self.name == "classification":
            index = {name: i for i, name in enumerate(names)}
            y = np.full(n, IGNORE_INDEX, dtype=np.int64)
            for i, lab in enumerate(labels or ()):
                if lab is not None:
                    if not isinstance(lab, str) or lab not in index:
                        raise DataError(source, f"unknown label {lab!r}", dialogue=did, field="label", index=i)
                    y[i] = index[lab]
            return torch.from_numpy(y)
        if self.name == "multilabel":
            index = {name: i for i, name in enumerate(names)}
            y = np.full((n, len(names)), np.nan, dtype=np.float32)
            for i, lab in enumerate(labels or ()):
                if lab is None:
                    continue
                if not isinstance(lab, tuple):
                    raise DataError(source, f"a multi-label task needs a list of labels, not {lab!r}",
                                    dialogue=did, field="label", index=i)
                y[i] = 0.0
                for name in lab:
                    if name not in index:
                        raise DataError(source, f"unknown label {name!r}", dialogue=did, field="label", index=i)
                    y[i, index[name]] = 1.0
            return torch.from_numpy(y)
        y = np.full(n, np.nan, dtype=np.float32)
        for i, lab in enumerate(labels or ()):
            if lab is None:
                continue
            if isinstance(lab, bool) or not isinstance(lab, (int, float)) or not math.isfinite(lab):
                raise DataError(source, f"a regression task needs a number, not {lab!r}", dialogue=did, field="label", index=i)
            y[i] = float(lab)
        return torch.from_numpy(y)

    def labelled(self, y: Tensor) -> Tensor:
        """Which rows of a target tensor carry a label."""
        if self.name == "classification":
            return y != IGNORE_INDEX
        if self.name == "multilabel":
            return ~torch.isnan(y).any(dim=-1)
        return ~torch.isnan(y)

    # ------------------------------------------------------------------ head and loss
    def loss(self, logits: Tensor, y: Tensor, weight: Tensor | None = None, smoothing: float = 0.0) -> Tensor:
        """The supervised term L_ce of L_all over the labelled rows (0 when none is).

        ``weight``: per class (cross-entropy) or per emotion (BCE positive weight); unused for regression.
        ``smoothing``: label smoothing ε, the target mixed with the uniform distribution over the
        classes (or with 1/2 for each emotion); a score has no distribution to mix with, so
        regression leaves it out.
        """
        known = self.labelled(y)
        if not known.any():
            return logits.sum() * 0.0
        if self.name == "classification":
            return F.cross_entropy(logits[known], y[known], weight=weight, label_smoothing=smoothing)
        if self.name == "multilabel":
            target = y[known] * (1.0 - smoothing) + smoothing / 2
            return F.binary_cross_entropy_with_logits(logits[known].float(), target, pos_weight=weight)
        return F.l1_loss(logits[known][:, 0].float(), y[known])

    def outputs(self, logits: Tensor) -> Tensor:
        """What is served: class probabilities, emotion probabilities, or the clipped score ``(N,)``."""
        logits = logits.float()
        if self.name == "classification":
            return logits.softmax(-1)
        if self.name == "multilabel":
            return logits.sigmoid()
        return logits[:, 0].clamp(*SENTIMENT_RANGE)

    def ensemble_logits(self, logits: Sequence[Tensor]) -> Tensor:
        """Logits whose :meth:`outputs` are the mean of the members' outputs."""
        mean = torch.stack([self.outputs(x) for x in logits]).mean(0)
        if self.name == "classification":
            return mean.clamp_min(1e-12).log()
        if self.name == "multilabel":
            return torch.logit(mean.clamp(1e-6, 1 - 1e-6))
        return mean[:, None]

    def decide(self, outputs: np.ndarray, thresholds: Sequence[float] | None = None) -> np.ndarray:
        """Decisions from outputs: class ids, a 0/1 matrix (``thresholds`` per emotion, default 0.5), or scores."""
        if self.name == "classification":
            return outputs.argmax(-1)
        if self.name == "multilabel":
            t = np.full(outputs.shape[-1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=float)
            return (outputs >= t).astype(np.int64)
        return outputs

    def confidence(self, outputs: np.ndarray, thresholds: Sequence[float] | None = None) -> np.ndarray | None:
        """How sure the model is of each decision, in [0, 1]; ``None`` for scores (regression has no such probability).

        Classification: the probability of the class chosen. Multilabel: the mean, over
        emotions, of p for an emotion decided present and 1 − p for one decided absent.
        """
        if self.name == "classification":
            return outputs.max(-1)
        if self.name == "multilabel":
            present = self.decide(outputs, thresholds).astype(bool)
            return np.where(present, outputs, 1.0 - outputs).mean(-1)
        return None

    # ------------------------------------------------------------------ scores
    @property
    def primary_metric(self) -> str:
        """The metric that selects epochs, settings and models: weighted F1, or MAE for regression."""
        return "mae" if self.name == "regression" else "weighted_f1"

    @property
    def higher_is_better(self) -> bool:
        return self.name != "regression"

    def selection_score(self, metrics: dict) -> float:
        """The primary metric turned so that higher is always better (early stopping compares it)."""
        value = float(metrics[self.primary_metric])
        return value if self.higher_is_better else -value


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise JoyfulError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return Task(name)


__all__ = ["IGNORE_INDEX", "TASKS", "Task", "get_task"]
