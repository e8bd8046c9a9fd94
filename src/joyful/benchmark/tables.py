"""The grid's result tables: mean ± std per cell (``results.csv``/``.md``) and every run (``runs.csv``).

The standard deviation is the sample one (ddof = 1) over seeds, and is left empty for a
single seed rather than shown as 0, which would suggest a stable result.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from joyful.atomic import atomic_write_text
from joyful.benchmark.formats import markdown_table, percent, write_csv
from joyful.benchmark.gridfile import Cell
from joyful.benchmark.run import SCORES

SCORE_TITLES = {"accuracy": "accuracy", "weighted_f1": "weighted F1", "macro_f1": "macro F1"}


def write_tables(records: Sequence[dict[str, Any]], cells: Sequence[Cell], out: Path) -> None:
    """``records`` are the finished runs' ``result.json`` contents, any order."""
    labels = _labels(records)
    summaries = [_summary(cell, [r for r in records if r["cell"] == cell.name], labels) for cell in cells]
    write_csv(out / "results.csv", summaries)
    _write_markdown(out / "results.md", summaries, labels)
    write_csv(out / "runs.csv", [_run_row(r, labels) for r in sorted(records, key=_order(cells))])


def _labels(records: Sequence[dict[str, Any]]) -> list[str]:
    """Every class scored in any run, in first-seen order (cells may use different label sets)."""
    return list(dict.fromkeys(label for r in records for label in r["metrics"]["per_class_f1"]))


def _order(cells: Sequence[Cell]) -> Callable[[dict[str, Any]], tuple[int, int]]:
    """Sort key for runs: grid order of the cell, then seed."""
    position = {c.name: i for i, c in enumerate(cells)}
    return lambda r: (position[r["cell"]], r["seed"])


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), std


def _summary(cell: Cell, runs: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "cell": cell.name,
        "preset": cell.preset,
        "modalities": cell.modalities or cell.fields.get("modalities", ""),
        "ablation": cell.ablation or "",
        "eval_edge_noise": cell.eval_edge_noise,
        "n_seeds": len(runs),
        "seeds": " ".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"])),
    }
    columns = {s: [r["metrics"][s] for r in runs] for s in SCORES}
    columns |= {
        f"f1_{label}": [r["metrics"]["per_class_f1"][label] for r in runs if label in r["metrics"]["per_class_f1"]]
        for label in labels
    }
    for name, values in columns.items():
        row[f"{name}_mean"], row[f"{name}_std"] = _mean_std(values)
    return row


def _write_markdown(path: Path, summaries: list[dict[str, Any]], labels: list[str]) -> None:
    columns = ["cell", "seeds", *SCORE_TITLES.values(), *(f"F1 {label}" for label in labels)]
    rows = [
        [s["cell"], str(s["n_seeds"])]
        + [percent(s[f"{name}_mean"], s[f"{name}_std"]) for name in [*SCORES, *(f"f1_{label}" for label in labels)]]
        for s in summaries
    ]
    note = "Scores on the grid's test data (its validation data when it names no test) in percent, mean ± sample std over seeds.\n\n"
    atomic_write_text(path, "# Results\n\n" + note + markdown_table(columns, rows))


def _run_row(record: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    metrics = record["metrics"]
    row: dict[str, Any] = {"cell": record["cell"], "seed": record["seed"]}
    row |= {s: metrics[s] for s in SCORES}
    row |= {f"f1_{label}": metrics["per_class_f1"].get(label) for label in labels}
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


__all__ = ["write_tables"]
