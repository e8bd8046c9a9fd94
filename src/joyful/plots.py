"""Figures where a picture beats a table: training curves and the confusion matrix.

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
