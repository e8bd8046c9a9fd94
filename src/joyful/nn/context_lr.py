"""The baseline a dialogue model must beat: logistic regression on an utterance and its window means.

Each utterance i is described by ``[x_i; mean of x_j said by i's speaker; mean of x_j said
by the others]``, over the utterances j ≠ i of its dialogue within the past/future window
(``window_past``/``window_future``, -1 = the whole dialogue), where x is the
concatenation of every modality the model uses, each scaled to a mean vector norm of 1
on the training data (so audio functionals in the thousands do not swamp unit-norm
sentence embeddings; per-dimension standardisation was measured worse on IEMOCAP-6 text,
validation WF1 0.485 against 0.604, as it inflates the many near-constant dimensions).
A multinomial logistic regression (scikit-learn, L2, inverse strength ``logreg_c``) labels
it; for a multi-label task one binary logistic regression per emotion, for sentiment a
ridge regression (L2 strength 1/``logreg_c``). On IEMOCAP-6 text this reaches the level of the graph models, so a results table
without it cannot tell whether the graph uses the dialogue better than averages do.

It is a ``torch.nn.Module`` with the Joyful model's interface (``forward`` → logits and
losses), the fitted scales and coefficients copied into a linear layer, so checkpoints,
evaluation, prediction, explanations, ensembles and adaptation treat it like any model.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from torch import Tensor, nn
from torch_geometric.utils import scatter

from joyful.batching import Batch, EncodedDialogue, iterate_batches
from joyful.config import JoyfulConfig
from joyful.data.tasks import Task, get_task
from joyful.model import JoyfulOutput
from joyful.nn.graph import window_graph
from joyful.nn.missing import MissingModality
from joyful.training.inference import evaluate_encoded
from joyful.training.loop import EpochRecord, TrainResult

#: Bias of a class absent from the training labels: never predicted, whatever the features.
ABSENT_CLASS_BIAS = -1e4


class ContextLogisticRegression(nn.Module):
    """Window-mean features and a linear softmax classifier; see the module docstring.

    Shapes: ``batch.x[m] (N, d_m)`` → ``logits (N, n_classes)``; features ``(N, 3·Σ d_m)``.
    """

    def __init__(
        self, config: JoyfulConfig, widths: dict[str, int], n_classes: int, n_speakers: int,
        task: str = "classification",
    ) -> None:
        super().__init__()
        self.config = config
        self.task: Task = get_task(task)
        self.modalities = config.modality_order
        self.n_speakers = n_speakers
        self.missing = MissingModality(widths, self.modalities, 0.0)
        self.register_buffer("scale", torch.ones(len(self.modalities)))
        """Per modality: 1 / mean vector norm on the training data."""
        self.linear = nn.Linear(3 * sum(widths[m] for m in self.modalities), n_classes)
        self.inference_edge_noise = 0.0
        """Kept for the common model interface; the baseline has no graph to perturb."""
        self.inference_edge_generator: torch.Generator | None = None
        self.temperature: float = 1.0
        """Calibration, as :attr:`joyful.model.JoyfulModel.temperature`."""

    def features(self, batch: Batch) -> Tensor:
        """``[x_i; same-speaker window mean; other-speaker window mean]``, zeros where a mean has no utterance."""
        x = self.missing(batch.x)
        x = torch.cat([x[m] * self.scale[k] for k, m in enumerate(self.modalities)], dim=-1)
        c = self.config
        src, dst = window_graph(batch.lengths, batch.speaker, c.window_past, c.window_future, self.n_speakers)[0]
        others = src != dst
        src, dst = src[others], dst[others]
        same = batch.speaker[src] == batch.speaker[dst]
        n = x.shape[0]
        own = scatter(x[src[same]], dst[same], dim=0, dim_size=n, reduce="mean")
        rest = scatter(x[src[~same]], dst[~same], dim=0, dim_size=n, reduce="mean")
        return torch.cat([x, own, rest], dim=-1)

    def forward(self, batch: Batch, class_weight: Tensor | None = None) -> JoyfulOutput:
        feats = self.features(batch)
        logits = self.linear(feats)
        zero = logits.new_zeros(())
        ce = self.task.loss(logits, batch.y, class_weight)
        return JoyfulOutput(logits, {"mf": zero, "ct": zero, "kd": zero, "ce": ce, "all": ce}, feats, feats)


@torch.no_grad()
def _design(model: ContextLogisticRegression, dialogues: Sequence[EncodedDialogue]) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    feats, labels = [], []
    for batch in iterate_batches(dialogues, 64, model.n_speakers, shuffle=False):
        feats.append(model.features(batch).numpy())
        labels.append(batch.y.numpy())
    return np.concatenate(feats).astype(np.float64), np.concatenate(labels)


def fit_context_lr(
    model: ContextLogisticRegression,
    train_set: Sequence[EncodedDialogue],
    valid_set: Sequence[EncodedDialogue] | None,
    labels: Sequence[str],
    *,
    on_improvement: Callable[[int, dict | None], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fit the modality scales and the regression (L-BFGS to convergence): one "epoch", no early stopping.

    The same signature and result as :func:`joyful.training.loop.train`, so the estimator's
    checkpointing, history and ensembles work unchanged (``progress`` is accepted for that).
    """
    start = time.perf_counter()
    present = {m: torch.cat([d.features[m] for d in train_set]) for m in model.modalities}
    norms = [present[m][~torch.isnan(present[m]).all(1)].norm(dim=1).mean() for m in model.modalities]
    with torch.no_grad():
        model.scale.copy_(torch.stack([1.0 / n if torch.isfinite(n) and n > 0 else torch.ones(()) for n in norms]))
    x, y = _design(model, train_set)
    keep = model.task.labelled(torch.from_numpy(y)).numpy()
    x, y = x[keep], y[keep]
    fit = {"classification": _fit_multinomial, "multilabel": _fit_per_emotion, "regression": _fit_ridge}[model.task.name]
    weight, bias, loss = fit(x, y, len(labels), model.config)
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(weight))
        model.linear.bias.copy_(torch.from_numpy(bias))
    c = model.config
    valid = evaluate_encoded(model, valid_set, labels, c.batch_size) if valid_set else None
    record = EpochRecord(1, {"all": loss, "ce": loss, "mf": 0.0, "ct": 0.0, "kd": 0.0}, valid, time.perf_counter() - start)
    if on_epoch:
        on_epoch(record)
    if on_improvement:
        on_improvement(1, valid)
    return TrainResult(best_epoch=1, best_valid=valid, history=[record])


def _logistic(config: JoyfulConfig) -> LogisticRegression:
    return LogisticRegression(
        C=config.logreg_c, max_iter=config.logreg_max_iter, class_weight="balanced" if config.class_weights else None,
    )


def _fit_multinomial(x: np.ndarray, y: np.ndarray, n: int, config: JoyfulConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """Softmax regression; a class absent from training gets :data:`ABSENT_CLASS_BIAS`. Returns weights, bias, loss."""
    regression = _logistic(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as the training loss instead
        regression.fit(x, y)
    weight = np.zeros((n, x.shape[1]))
    bias = np.full(n, ABSENT_CLASS_BIAS)
    if len(regression.classes_) == 2:  # scikit-learn keeps one row for two classes: logit of the second
        weight[regression.classes_[1]], bias[regression.classes_[1]] = regression.coef_[0], regression.intercept_[0]
        bias[regression.classes_[0]] = 0.0
    else:
        weight[regression.classes_], bias[regression.classes_] = regression.coef_, regression.intercept_
    probs = regression.predict_proba(x)
    loss = float(-np.log(np.clip(probs[np.arange(len(y)), np.searchsorted(regression.classes_, y)], 1e-12, None)).mean())
    return weight, bias, loss


def _fit_per_emotion(x: np.ndarray, y: np.ndarray, n: int, config: JoyfulConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """One binary logistic regression per emotion; one never (always) present is always off (on)."""
    weight, bias, losses = np.zeros((n, x.shape[1])), np.zeros(n), []
    for k in range(n):
        truth = y[:, k].astype(np.int64)
        if truth.min() == truth.max():
            bias[k] = ABSENT_CLASS_BIAS if truth.max() == 0 else -ABSENT_CLASS_BIAS
            losses.append(0.0)
            continue
        w, b, loss = _fit_multinomial(x, truth, 2, config)
        weight[k], bias[k] = w[1], b[1]  # the logit of "present" against 0 for "absent"
        losses.append(loss)
    return weight, bias, float(np.mean(losses))


def _fit_ridge(x: np.ndarray, y: np.ndarray, n: int, config: JoyfulConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """Least squares with an L2 penalty 1/C on the weights; the loss reported is the training MAE."""
    regression = Ridge(alpha=1.0 / config.logreg_c).fit(x, y)
    loss = float(np.abs(regression.predict(x) - y).mean())
    return regression.coef_[None, :], np.atleast_1d(regression.intercept_), loss


__all__ = ["ContextLogisticRegression", "fit_context_lr"]
