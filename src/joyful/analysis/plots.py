"""Figures where a picture beats a table: training curves, confusion matrix, per-class F1, t-SNE maps.

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

from joyful.atomic import atomic_write_bytes  # noqa: E402


def _save(fig, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_training_curves(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """Loss parts (L_all, L_ce, L_mf, L_ct) per epoch on the left, validation scores on the right."""
    epochs = [r["epoch"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, name in (("loss_all", "L_all"), ("loss_ce", "L_ce"), ("loss_mf", "L_mf"), ("loss_ct", "L_ct")):
        left.plot(epochs, [r[key] for r in rows], label=name)
    left.set(xlabel="epoch", ylabel="training loss (mean over batches)", yscale="log", title="losses")
    left.legend()
    if "valid_weighted_f1" in rows[0]:
        for key, name in (("valid_weighted_f1", "weighted F1"), ("valid_accuracy", "accuracy"), ("valid_macro_f1", "macro F1")):
            right.plot(epochs, [r[key] for r in rows], label=name)
        best = int(np.argmax([r["valid_weighted_f1"] for r in rows]))
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
    fig, axes = plt.subplots(1, len(maps), figsize=(4.6 * len(maps), 4.6), squeeze=False)
    for ax, (title, xy) in zip(axes[0], maps.items(), strict=True):
        for colour, name in zip(colours, label_order, strict=True):
            mine = labels_arr == name
            ax.scatter(xy[mine, 0], xy[mine, 1], s=8, alpha=0.7, color=colour, label=name, linewidths=0)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 8), markerscale=2.5, frameon=False)
    fig.suptitle(f"t-SNE of {len(labels)} utterances, coloured by gold label")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _save(fig, path)
