"""The grid's result tables: mean ± std per cell (``results.csv``/``.md``) and every run (``runs.csv``).

The columns are the task's scores (:mod:`joyful.benchmark.scores`): its primary metric
and the others papers report beside it, then each class's or emotion's F1. A score a
run could not compute (the correlation of constant predictions) is left out of its
cell's mean and std rather than counted as 0.

The standard deviation is the sample one (ddof = 1) over seeds, and is left empty for a
single seed rather than shown as 0, which would suggest a stable result.

With cross-validation the mean and std are over all (fold, seed) runs of a cell (so the
std holds the spread between folds as well as between seeds), and
``results_by_fold.csv``/``.md`` give each fold's mean ± std over seeds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from joyful.atomic import atomic_write_text
from joyful.benchmark.folds import fold_label
from joyful.benchmark.formats import markdown_table, percent, write_csv
from joyful.benchmark.gridfile import Cell
from joyful.benchmark.scores import TaskScores, scores_of


def write_tables(
    records: Sequence[dict[str, Any]], cells: Sequence[Cell], out: Path, *, held_out: dict[int, str | None] | None = None
) -> None:
    """``records`` are the finished runs' ``result.json`` contents, any order.

    Records with a ``fold`` make cross-validation tables; ``held_out`` names each fold's
    held-out session for the per-fold table.
    """
    spec = scores_of(records)
    labels = _labels(records, spec)
    cv = is_cv(records)
    summaries = [_summary(cell, [r for r in records if r["cell"] == cell.name], labels, spec, cv) for cell in cells]
    write_csv(out / "results.csv", summaries)
    _write_markdown(out / "results.md", summaries, labels, spec, cv)
    write_csv(out / "runs.csv", [_run_row(r, labels, spec, cv) for r in sorted(records, key=_order(cells))])
    if cv:
        _write_fold_tables(records, cells, out, held_out or {}, spec)


def is_cv(records: Sequence[dict[str, Any]]) -> bool:
    """Cross-validation runs carry their fold; runs of grids without ``cv`` (or older ones) do not."""
    return any(r.get("fold") is not None for r in records)


def _labels(records: Sequence[dict[str, Any]], spec: TaskScores) -> list[str]:
    """Every class (or emotion) scored in any run, in first-seen order (cells may use different label sets)."""
    return list(dict.fromkeys(label for r in records for label in spec.per_label_f1(r["metrics"])))


def _order(cells: Sequence[Cell]) -> Callable[[dict[str, Any]], tuple[int, int, int]]:
    """Sort key for runs: grid order of the cell, then fold, then seed."""
    position = {c.name: i for i, c in enumerate(cells)}
    return lambda r: (position[r["cell"]], r.get("fold") or 0, r["seed"])


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof 1) of the values present; the std is ``None`` for fewer than two."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), std


def _summary(
    cell: Cell, runs: list[dict[str, Any]], labels: list[str], spec: TaskScores, cv: bool = False
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "cell": cell.name,
        "preset": cell.preset,
        "modalities": cell.modalities or cell.fields.get("modalities", ""),
        "ablation": cell.ablation or "",
        "eval_edge_noise": cell.eval_edge_noise,
    }
    if cv:
        seeds, folds = sorted({r["seed"] for r in runs}), sorted({r["fold"] for r in runs})
        row |= {"n_runs": len(runs), "n_folds": len(folds), "n_seeds": len(seeds),
                "folds": " ".join(map(str, folds)), "seeds": " ".join(map(str, seeds))}
    else:
        row |= {"n_seeds": len(runs), "seeds": " ".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))}
    columns = {s: [r["metrics"].get(s) for r in runs] for s in spec.keys}
    per_label = [spec.per_label_f1(r["metrics"]) for r in runs]
    columns |= {f"f1_{label}": [f1[label] for f1 in per_label if label in f1] for label in labels}
    for name, values in columns.items():
        row[f"{name}_mean"], row[f"{name}_std"] = mean_std(values)
    return row


def _write_markdown(
    path: Path, summaries: list[dict[str, Any]], labels: list[str], spec: TaskScores, cv: bool = False
) -> None:
    columns = ["cell", "runs" if cv else "seeds", *(s.title for s in spec.scores), *(f"F1 {label}" for label in labels)]
    rows = [
        [s["cell"], str(s["n_runs" if cv else "n_seeds"])]
        + [score.show(s[f"{score.key}_mean"], s[f"{score.key}_std"]) for score in spec.scores]
        + [percent(s[f"f1_{label}_mean"], s[f"f1_{label}_std"]) for label in labels]
        for s in summaries
    ]
    if cv:
        shape = summaries[0] if summaries else {"n_folds": 0, "n_seeds": 0}
        note = (f"Cross-validation: each run is scored on its fold's held-out dialogues, {spec.units}; mean ± sample std "
                f"over all {_count(shape['n_folds'], 'fold')} × {_count(shape['n_seeds'], 'seed')} (the std includes "
                "the spread between folds). Per fold: results_by_fold.md.\n\n")
    else:
        note = (f"Scores on the grid's test data (its validation data when it names no test) {spec.units}, mean ± sample "
                "std over seeds.\n\n")
    atomic_write_text(path, "# Results\n\n" + note + markdown_table(columns, rows))


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' * (n != 1)}"


def _write_fold_tables(
    records: Sequence[dict[str, Any]], cells: Sequence[Cell], out: Path, held_out: dict[int, str | None],
    spec: TaskScores,
) -> None:
    """``results_by_fold.csv`` (cell × fold: mean ± std over seeds) and a cell × fold Markdown table of the primary metric."""
    folds = sorted({r["fold"] for r in records})
    rows = []
    for cell in cells:
        for fold in folds:
            runs = sorted((r for r in records if r["cell"] == cell.name and r["fold"] == fold), key=lambda r: r["seed"])
            row: dict[str, Any] = {"cell": cell.name, "fold": fold, "held_out": held_out.get(fold) or "",
                                   "n_seeds": len(runs), "seeds": " ".join(str(r["seed"]) for r in runs),
                                   "n_utterances": runs[0]["metrics"]["n_utterances"] if runs else None}
            for name in spec.keys:
                row[f"{name}_mean"], row[f"{name}_std"] = mean_std([r["metrics"].get(name) for r in runs])
            rows.append(row)
    write_csv(out / "results_by_fold.csv", rows)
    by_key = {(r["cell"], r["fold"]): r for r in rows}
    columns = ["cell", *(fold_label(f, held_out.get(f)) for f in folds)]
    primary = spec.primary
    table = [
        [cell.name, *(primary.show(*(by_key[cell.name, f][f"{primary.key}_{part}"] for part in ("mean", "std")))
                      for f in folds)]
        for cell in cells
    ]
    unit = " in percent" if primary.fraction else ""
    note = f"{spec.phrase} on each fold's held-out dialogues{unit}, mean ± sample std over seeds.\n\n"
    atomic_write_text(out / "results_by_fold.md", "# Results by fold\n\n" + note + markdown_table(columns, table))


def _run_row(record: dict[str, Any], labels: list[str], spec: TaskScores, cv: bool = False) -> dict[str, Any]:
    metrics = record["metrics"]
    row: dict[str, Any] = {"cell": record["cell"], **({"fold": record.get("fold")} if cv else {}), "seed": record["seed"]}
    row |= {s: metrics.get(s) for s in spec.keys}
    per_label = spec.per_label_f1(metrics)
    row |= {f"f1_{label}": per_label.get(label) for label in labels}
    row |= {
        "n_utterances": metrics["n_utterances"],
        "best_epoch": record["best_epoch"],
        "epochs_run": record["epochs_run"],
        "wall_seconds": record["wall_seconds"],
        "eval_edge_noise": record["eval_edge_noise"],
    }
    row |= {f"data_hash_{role}": h for role, h in record["data_hash"].items()}
    row |= {"joyful_version": record["joyful_version"], "config": json.dumps(record["config"], sort_keys=True)}
    return row


__all__ = ["write_tables", "is_cv", "mean_std"]
