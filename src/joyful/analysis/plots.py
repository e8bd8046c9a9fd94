"""Figures where a picture beats a table: training curves, confusion matrix, per-class and
per-emotion F1, predicted-against-true sentiment and its residuals, t-SNE maps, reliability
diagrams and risk–coverage curves.

Rendered with matplotlib's Agg backend (no display needed) into memory and written
atomically, like every other output.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from joyful.analysis.metrics import reliability_bins  # noqa: E402
from joyful.analysis.selective import risk_coverage  # noqa: E402
from joyful.atomic import atomic_write_bytes  # noqa: E402


def _save(fig, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


#: Validation scores drawn per epoch when the history holds them (which ones depends on the task).
VALID_CURVES = (
    ("valid_weighted_f1", "weighted F1"), ("valid_accuracy", "accuracy"), ("valid_macro_f1", "macro F1"),
    ("valid_micro_f1", "micro F1"), ("valid_mae", "MAE"), ("valid_corr", "corr"), ("valid_acc2", "Acc-2"),
)


def plot_training_curves(rows: Sequence[dict], path: str | os.PathLike, best_epoch: int | None = None) -> None:
    """Loss parts (L_all, L_ce, L_mf, L_ct, and L_kd when distilling) per epoch on the left, validation scores on the right.

    The dotted line marks ``best_epoch``, the epoch training kept; when the caller does not
    know it, the one early stopping keeps by default: lowest MAE for regression (the only
    task whose history has it), else highest weighted F1. The validation loss, when the
    history has it, is drawn dashed beside the training losses (``select_by = "loss"``
    keeps its lowest epoch). A score missing from an epoch (Pearson's r of a constant
    prediction) leaves a gap in its curve.
    """
    epochs = [r["epoch"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, name in (("loss_all", "L_all"), ("loss_ce", "L_ce"), ("loss_mf", "L_mf"), ("loss_ct", "L_ct")):
        left.plot(epochs, [r[key] for r in rows], label=name)
    if any(r.get("loss_kd") for r in rows):  # only a student of a teacher has a distillation term
        left.plot(epochs, [r["loss_kd"] for r in rows], label="L_kd (distillation)")
    if any("valid_loss" in r for r in rows):
        left.plot(epochs, [r.get("valid_loss", np.nan) for r in rows], linestyle="--", label="validation L_ce")
    left.set(xlabel="epoch", ylabel="loss (training: mean over batches)", yscale="log", title="losses")
    left.legend()
    present = [(key, name) for key, name in VALID_CURVES if any(key in r for r in rows)]
    if present:
        curves = {key: np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float) for key, _ in present}
        for key, name in present:
            right.plot(epochs, curves[key], label=name)
        if best_epoch is not None and best_epoch in epochs:
            best = epochs.index(best_epoch)
        elif "valid_mae" in curves:
            best = int(np.nanargmin(curves["valid_mae"]))
        else:
            best = int(np.nanargmax(curves.get("valid_weighted_f1", curves[present[0][0]])))
        right.axvline(epochs[best], color="grey", linestyle=":", label=f"best epoch {epochs[best]}")
        right.legend()
    right.set(xlabel="epoch", ylabel="validation score", title="validation")
    _save(fig, path)


def plot_confusion_matrix(metrics: dict, path: str | os.PathLike) -> None:
    """Row-normalised confusion matrix with counts, per-class F1 in the row labels."""
    counts = np.asarray(metrics["confusion_matrix"], dtype=float)
    labels = metrics["labels"]
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2.5, 0.9 * len(labels) + 1.8))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), [f"{n} (F1 {metrics['per_class_f1'][n]:.2f})" for n in labels])
    ax.set(xlabel="predicted", ylabel="true",
           title=f"accuracy {metrics['accuracy']:.3f}, weighted F1 {metrics['weighted_f1']:.3f} ({metrics['n_utterances']} utterances)")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    _save(fig, path)


def plot_per_class_f1(metrics: dict, path: str | os.PathLike) -> None:
    """Per-class F1 bars with each class's support, against the weighted and macro averages.

    Support matters for reading the bars: weighted F1 is dominated by the frequent classes,
    so a rare class can fail completely while the headline number barely moves.
    """
    labels = metrics["labels"]
    f1 = [metrics["per_class_f1"][n] for n in labels]
    support = np.asarray(metrics["confusion_matrix"]).sum(axis=1)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2.5), 4))
    bars = ax.bar(range(len(labels)), f1, color=plt.get_cmap("tab10")(np.arange(len(labels)) % 10))
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in f1], padding=2)
    weighted = f"weighted F1 {metrics['weighted_f1']:.3f}"
    ax.axhline(metrics["weighted_f1"], color="black", linestyle="--", linewidth=1, label=weighted)
    ax.axhline(metrics["macro_f1"], color="grey", linestyle=":", linewidth=1.5, label=f"macro F1 {metrics['macro_f1']:.3f}")
    ax.set_xticks(range(len(labels)), [f"{n}\n(n={int(s)})" for n, s in zip(labels, support, strict=True)])
    ax.set(ylim=(0, 1.12), ylabel="F1", title="F1 per class (n = true utterances of the class)")
    ax.legend(loc="upper right", fontsize="small")
    _save(fig, path)


def plot_per_emotion_f1(metrics: dict, path: str | os.PathLike) -> None:
    """Multilabel: each emotion's F1 as a bar and its weighted accuracy as a marker, against the pooled F1s.

    Both per-emotion scores are shown because CMU-MOSEI papers report both, and they
    disagree on rare emotions: always answering "absent" scores high accuracy and F1 0.
    """
    labels = metrics["labels"]
    scores = [metrics["per_emotion"][n] for n in labels]
    f1 = [s["f1"] for s in scores]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2.5), 4))
    bars = ax.bar(range(len(labels)), f1, color=plt.get_cmap("tab10")(np.arange(len(labels)) % 10), label="F1")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in f1], padding=2)
    ax.plot(range(len(labels)), [s["weighted_accuracy"] for s in scores], "kD", markersize=5, label="weighted accuracy")
    ax.axhline(metrics["weighted_f1"], color="black", linestyle="--", linewidth=1, label=f"weighted F1 {metrics['weighted_f1']:.3f}")
    ax.axhline(metrics["macro_f1"], color="grey", linestyle=":", linewidth=1.5, label=f"macro F1 {metrics['macro_f1']:.3f}")
    ticks = [n if "positives" not in s else f"{n}\n(n={s['positives']})" for n, s in zip(labels, scores, strict=True)]
    ax.set_xticks(range(len(labels)), ticks)
    ax.set(ylim=(0, 1.12), ylabel="score",
           title=f"F1 per emotion (n = utterances showing it; {metrics['n_utterances']} utterances)")
    ax.legend(loc="upper right", fontsize="small")
    _save(fig, path)


def plot_reliability(
    task: str, y_true: Sequence, y_prob: Sequence, ece: float, ece_uncalibrated: float, temperature: float,
    path: str | os.PathLike,
) -> None:
    """Reliability diagram of the served probabilities: observed rate per confidence bin against the diagonal.

    Bars above the diagonal are under-confident bins, below it over-confident ones; the
    lower panel counts each bin's points, since a far-off bar of three points says little.
    Points as :func:`joyful.analysis.metrics.reliability_bins` (per utterance, or per
    emotion cell for multilabel).
    """
    bins = reliability_bins(task, np.asarray(y_true), np.asarray(y_prob))
    width = 1.0 / len(bins.count)
    left = np.arange(len(bins.count)) * width
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6), sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.bar(left, np.nan_to_num(bins.accuracy), width=width, align="edge", edgecolor="black", color="#4c72b0",
            label="observed")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.plot(bins.confidence, bins.accuracy, "o", color="#dd8452", markersize=4, label="mean confidence of the bin")
    what = "accuracy" if task == "classification" else "fraction present"
    top.set(ylim=(0, 1), ylabel=what,
            title=f"ECE {ece_uncalibrated:.3f} at T = 1 → {ece:.3f} served (T = {temperature:.2f})")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(left, bins.count, width=width, align="edge", edgecolor="black", color="grey")
    bottom.set(xlim=(0, 1), xlabel="confidence (max probability)" if task == "classification" else
               "probability of each emotion", ylabel="points")
    _save(fig, path)


def plot_risk_coverage(confidence: Sequence[float], correct: Sequence[bool], path: str | os.PathLike) -> None:
    """Error rate of the utterances kept when only those at or above a confidence are kept, against their share.

    What selective prediction trades (:func:`joyful.analysis.selective.risk_coverage`):
    read off the coverage at which the retained error falls to an acceptable rate.
    """
    curve = risk_coverage(confidence, correct)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.step(curve.coverage, curve.risk, where="post", color="#4c72b0", label="retained utterances")
    ax.axhline(curve.risk[-1], color="grey", linestyle=":", label=f"error at full coverage {curve.risk[-1]:.3f}")
    ax.legend(loc="upper left", fontsize="small")
    ax.set(xlim=(1, 0), ylim=(0, max(0.05, 1.1 * float(curve.risk.max()))), xlabel="coverage (share kept)",
           ylabel="error rate of the kept", title=f"risk against coverage ({len(confidence)} utterances)")
    _save(fig, path)


def _score_limits(*values: np.ndarray) -> tuple[float, float]:
    """The sentiment scale [-3, 3], widened if some value lies outside it."""
    low = min(-3.0, *(float(np.min(v)) for v in values if len(v)))
    high = max(3.0, *(float(np.max(v)) for v in values if len(v)))
    return low - 0.2, high + 0.2


def plot_regression_scatter(y_true: Sequence[float], y_pred: Sequence[float], metrics: dict, path: str | os.PathLike) -> None:
    """Predicted against gold score, one point per utterance, with the line of perfect prediction.

    Gold MOSI/MOSEI scores are averages of a few ratings, so they sit on a grid; the points
    are translucent so that the density along each gold column shows.
    """
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    limits = _score_limits(y_true, y_pred)
    fig, ax = plt.subplots(figsize=(5.2, 5))
    ax.scatter(y_true, y_pred, s=10, alpha=0.4, linewidths=0, label="utterance")
    ax.plot(limits, limits, color="black", linestyle="--", linewidth=1, label="y = x (perfect)")
    corr = "–" if metrics.get("corr") is None else f"{metrics['corr']:.3f}"
    ax.set(xlim=limits, ylim=limits, aspect="equal", xlabel="gold score", ylabel="predicted score",
           title=f"MAE {metrics['mae']:.3f}, r {corr} ({len(y_true)} utterances)")
    ax.legend(loc="upper left", fontsize="small")
    _save(fig, path)


def plot_residuals(y_true: Sequence[float], y_pred: Sequence[float], path: str | os.PathLike) -> None:
    """Residual (predicted − gold) against gold score with its median per unit of the scale, and their histogram.

    The median line shows what a single MAE hides: a model that shrinks towards the mean
    over-predicts negative utterances and under-predicts positive ones, so the line falls
    from left to right; a good model keeps it near zero across the scale.
    """
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    residual = y_pred - y_true
    fig, (ax, hist) = plt.subplots(1, 2, figsize=(10, 4), sharey=True, gridspec_kw={"width_ratios": (3, 1)})
    ax.scatter(y_true, residual, s=10, alpha=0.4, linewidths=0)
    centres = np.unique(np.round(y_true))
    medians = [float(np.median(residual[np.round(y_true) == c])) for c in centres]
    ax.plot(centres, medians, "o-", color="tab:red", label="median residual per rounded gold score")
    ax.axhline(0, color="black", linestyle="--", linewidth=1)
    ax.set(xlim=_score_limits(y_true), xlabel="gold score", ylabel="residual (predicted − gold)",
           title=f"residuals ({len(y_true)} utterances)")
    ax.legend(loc="upper right", fontsize="small")
    hist.hist(residual, bins=30, orientation="horizontal", color="tab:blue", alpha=0.7)
    hist.axhline(0, color="black", linestyle="--", linewidth=1)
    hist.set(xlabel="utterances", title="distribution")
    _save(fig, path)


def _tsne_figure(maps: dict[str, np.ndarray]):
    fig, axes = plt.subplots(1, len(maps), figsize=(4.6 * len(maps), 4.6), squeeze=False)
    for ax, title in zip(axes[0], maps, strict=True):
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes[0]


def plot_tsne(
    maps: dict[str, np.ndarray], labels: Sequence[str], label_order: Sequence[str], path: str | os.PathLike
) -> None:
    """One scatter panel per representation stage, coloured by gold label, with one shared legend.

    ``maps`` goes from panel title to ``(n, 2)`` coordinates of the same ``n`` utterances,
    whose gold labels are ``labels``; ``label_order`` fixes the colours so they match the
    per-class F1 bars.
    """
    colours = plt.get_cmap("tab10")(np.arange(len(label_order)) % 10)
    labels_arr = np.asarray(labels)
    fig, axes = _tsne_figure(maps)
    for ax, xy in zip(axes, maps.values(), strict=True):
        for colour, name in zip(colours, label_order, strict=True):
            mine = labels_arr == name
            ax.scatter(xy[mine, 0], xy[mine, 1], s=8, alpha=0.7, color=colour, label=name, linewidths=0)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 8), markerscale=2.5, frameon=False)
    fig.suptitle(f"t-SNE of {len(labels)} utterances, coloured by gold label")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _save(fig, path)


def plot_tsne_scores(maps: dict[str, np.ndarray], scores: Sequence[float], path: str | os.PathLike) -> None:
    """Like :func:`plot_tsne` for a regression task: points coloured by gold score on a diverging scale.

    A map that has learnt sentiment shows a gradient from negative to positive rather
    than separated clusters.
    """
    scores = np.asarray(scores, dtype=float)
    fig, axes = _tsne_figure(maps)
    for ax, xy in zip(axes, maps.values(), strict=True):
        points = ax.scatter(xy[:, 0], xy[:, 1], s=8, alpha=0.8, c=scores, cmap="coolwarm", vmin=-3, vmax=3, linewidths=0)
    fig.suptitle(f"t-SNE of {len(scores)} utterances, coloured by gold score")
    fig.tight_layout(rect=(0, 0, 0.94, 1))
    fig.colorbar(points, ax=list(axes), fraction=0.02, label="gold score")
    _save(fig, path)
