"""Seed ensembles scored from a grid's finished runs: each cell's seeds averaged, fold by fold, without training.

An ensemble of K (``ensemble = K``, seed s) trains its members exactly as single runs
with seeds s … s+K−1 are trained, and predicts the mean of their outputs at temperature 1
(:class:`joyful.training.ensemble.EnsembleModel`; the temperature fitted afterwards moves
no class decision). Every run stores those outputs on its test data (``y_uncalibrated``
in ``result.json``), so the single runs of a cell's seeds already hold the ensemble of
them: averaging their outputs gives its predictions, and scoring them gives what the
ensemble preset would have scored at 1/K of its training cost.

``ensembles.csv``/``.md`` show, per cell, the ensemble of all the grid's seeds on each
fold (one test set without cross-validation), its mean ± std over folds, the mean single
run beside it, and, with a reference cell, the difference paired by fold (paired t-test
and Wilcoxon, Benjamini–Hochberg; with 4 or 5 folds Wilcoxon cannot go below 0.125 /
0.0625). Multilabel cells whose thresholds are chosen on validation data are left out:
the ensemble's own thresholds were never chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from joyful.analysis.metrics import classification_metrics, multilabel_metrics, regression_metrics
from joyful.atomic import atomic_write_text
from joyful.benchmark.folds import fold_label
from joyful.benchmark.formats import markdown_table, p_value, write_csv
from joyful.benchmark.gridfile import Cell
from joyful.benchmark.scores import TaskScores, scores_of
from joyful.benchmark.significance import ALPHA
from joyful.benchmark.stats import paired_compare_to_reference
from joyful.benchmark.tables import mean_std
from joyful.errors import JoyfulError


def ensemble_metrics(runs: Sequence[dict[str, Any]], task: str) -> dict[str, Any]:
    """The task's metrics of the mean of ``runs``' outputs on their shared test data.

    Runs of one cell and fold score the same utterances in the same order; a run whose
    labels differ from the first's is refused, as its outputs would be averaged against
    other utterances.
    """
    first = runs[0]
    for r in runs[1:]:
        if r["y_true"] != first["y_true"]:
            raise JoyfulError(f"cell {r['cell']!r}, fold {r.get('fold')}: seed {r['seed']} scored other test utterances "
                              f"than seed {first['seed']} (its result.json is from other data: delete it to rerun)")
    y_true = np.asarray(first["y_true"])
    mean = np.mean([np.asarray(r["y_uncalibrated"], dtype=np.float64) for r in runs], axis=0)
    labels = first["metrics"].get("labels")
    if task == "classification":
        return classification_metrics(y_true, mean.argmax(-1), labels)
    if task == "multilabel":
        return multilabel_metrics(y_true, mean, labels, [0.5] * len(labels))
    return regression_metrics(y_true, mean)


def _eligible(runs: Sequence[dict[str, Any]], task: str) -> bool:
    """Every run stored its outputs (older runs did not), and no validation-chosen thresholds are needed."""
    if not runs or any("y_uncalibrated" not in r for r in runs):
        return False
    return not (task == "multilabel" and any(r["config"].get("thresholds") == "validation" for r in runs))


def write_ensembles(
    records: Sequence[dict[str, Any]], cells: Sequence[Cell], out: Path, *, reference: str | None = None,
    held_out: dict[int, str | None] | None = None,
) -> None:
    """Write ``ensembles.csv``/``.md`` for the cells whose runs allow it (nothing when none does)."""
    spec = scores_of(records)
    key = spec.primary.key
    rows: list[dict[str, Any]] = []
    per_fold: dict[str, dict[Any, float]] = {}
    folds = sorted({r.get("fold") for r in records}, key=lambda f: -1 if f is None else f)
    for cell in cells:
        runs = [r for r in records if r["cell"] == cell.name]
        if not _eligible(runs, spec.task.name):
            continue
        scores: dict[Any, float] = {}
        for fold in folds:
            members = sorted((r for r in runs if r.get("fold") == fold), key=lambda r: r["seed"])
            scores[fold] = ensemble_metrics(members, spec.task.name)[key]
        per_fold[cell.name] = scores
        mean, std = mean_std(list(scores.values()))
        rows.append({
            "cell": cell.name, "seeds": " ".join(str(s) for s in sorted({r["seed"] for r in runs})),
            "n_folds": len(scores), f"{key}_mean": mean, f"{key}_std": std,
            f"{key}_single_mean": mean_std([r["metrics"][key] for r in runs])[0],
            **{f"{key}_fold_{f}": v for f, v in scores.items()},
        })
    if not rows:
        return
    tests = {}
    if reference is not None and reference in per_fold and len(per_fold) > 1:
        tests = {c.variant: c for c in paired_compare_to_reference(per_fold, reference, ALPHA)}
    for row in rows:
        c = tests.get(row["cell"])
        row |= {"mean_diff": c.mean_diff if c else None, "p_t": c.p_t if c else None,
                "p_t_BH": c.p_t_adjusted if c else None, "p_w": c.p_w if c else None,
                "p_w_BH": c.p_w_adjusted if c else None}
    write_csv(out / "ensembles.csv", rows)
    _write_markdown(out / "ensembles.md", rows, folds, spec, reference if tests else None, held_out or {})


def _write_markdown(
    path: Path, rows: list[dict[str, Any]], folds: list, spec: TaskScores, reference: str | None,
    held_out: dict[int, str | None],
) -> None:
    metric, key = spec.primary, spec.primary.key
    fold_columns = [] if folds == [None] else [fold_label(f, held_out.get(f)) for f in folds]
    columns = ["cell", "seeds averaged", f"{spec.short} of the ensemble", *fold_columns, "mean single run"]
    if reference is not None:
        columns += [f"Δ vs `{reference}`", "p_t (BH)", "p_w (BH)"]
    table = []
    for row in rows:
        line = [row["cell"], row["seeds"], metric.show(row[f"{key}_mean"], row[f"{key}_std"])]
        line += [metric.show(row[f"{key}_fold_{f}"]) for f in folds] if fold_columns else []
        line.append(metric.show(row[f"{key}_single_mean"]))
        if reference is not None:
            line += [metric.show_difference(row["mean_diff"]), p_value(row["p_t_BH"]), p_value(row["p_w_BH"])]
        table.append(line)
    where = "on each fold's held-out dialogues, mean ± sample std over folds" if fold_columns else "on the test data"
    head = (
        f"# Seed ensembles\n\n{spec.phrase} of each cell's seeds averaged (their outputs at temperature 1, as "
        f"`ensemble = K` averages its members) {where}; scored from the finished runs, nothing trained. "
        + ("Tests paired by fold against the reference's ensemble, Benjamini–Hochberg corrected.\n\n"
           if reference is not None else "\n\n")
    )
    atomic_write_text(path, head + markdown_table(columns, table))


__all__ = ["ensemble_metrics", "write_ensembles"]
