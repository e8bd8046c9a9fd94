"""One (cell, seed) run of a grid, or (cell, fold, seed) with cross-validation: train, score, record in ``result.json``.

``result.json`` is written atomically and last, so its presence is the definition of a
finished run: a resumed grid skips exactly the runs that have one. It holds what the
tables and the significance tests need (metrics, the test labels and predictions for
the paired bootstrap: class ids, 0/1 rows per emotion, or scores, as the task has them;
the outputs at temperature 1 for the seed-ensemble tables) and what makes the number
traceable (full config, seed, data hashes, package version, wall time, best epoch). With
cross-validation, the data are the fold's files and ``fold`` names the fold (``null``
without cross-validation).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from joyful import __version__
from joyful.atomic import atomic_write_text
from joyful.benchmark.gridfile import Cell
from joyful.benchmark.scores import TASK_SCORES
from joyful.config import changed_fields
from joyful.data.text_encoder import CACHE_TABLE
from joyful.errors import JoyfulError

RESULT = "result.json"


def run_dir(out: Path, cell: Cell, seed: int, fold: int | None = None) -> Path:
    """``runs/<cell>/seed-<s>``, or ``runs/<cell>/fold-<k>/seed-<s>`` with cross-validation."""
    base = out / "runs" / cell.name
    return (base if fold is None else base / f"fold-{fold}") / f"seed-{seed}"


def run_one(
    cell: Cell,
    seed: int,
    data: dict[str, str],
    inputs: dict[str, dict[str, str]],
    directory: Path,
    *,
    keep_models: bool = False,
    progress: bool = True,
    fold: int | None = None,
    teachers: list[Path] | None = None,
) -> dict[str, Any]:
    """Fit on train (early stopping on valid), evaluate on test, write and return the record.

    ``teachers``: the kept model directories of ``cell.teacher``'s runs on this fold, which
    this run is distilled from.
    """
    from joyful.api import Joyful  # PyTorch: imported only when something is trained

    config = cell.config(seed)
    started = time.perf_counter()
    clf = Joyful(config).fit(
        data["train"], data["valid"], out_dir=directory / "model" if keep_models else None, progress=progress,
        teacher=teachers or None,
    )
    test = clf.prepare(data["test"], role="test", label_set=clf.info.label_set, progress=progress)
    scores = clf.evaluate(test, edge_noise=cell.eval_edge_noise, with_predictions=True)
    wall = time.perf_counter() - started
    out = directory.parents[2 if fold is None else 3]  # directory is <out>/runs/<cell>/[fold-k/]seed-s
    y_true, y_pred = scores.pop("y_true"), scores.pop("y_pred")
    scores.pop("y_prob", None)  # multilabel: the bootstrap pairs the decisions, not the probabilities
    # what a seed ensemble of this cell averages (joyful.benchmark.ensembles); 6 digits keep the file small
    y_uncalibrated = np.round(np.asarray(scores.pop("y_uncalibrated"), dtype=np.float64), 6).tolist()
    best = clf.result.best_valid or {}
    record = {
        "cell": cell.name,
        "fold": fold,
        "seed": seed,
        "preset": cell.preset,
        "modalities": config.modalities,
        "ablation": cell.ablation,
        "eval_edge_noise": cell.eval_edge_noise,
        "teacher": cell.teacher,
        "teacher_runs": [str(t.parent.relative_to(out)) for t in teachers or []],
        "metrics": scores,
        "best_epoch": clf.result.best_epoch,
        "epochs_run": len(clf.result.history),
        "best_valid": {k: best[k] for k in TASK_SCORES[clf.task].keys if k in best},
        "wall_seconds": round(wall, 3),
        "data_hash": {**clf.info.extra["data_hash"], "test": test.data_hash()},
        "inputs": inputs,
        "joyful_version": __version__,
        "text_embeddings": CACHE_TABLE,
        "config": config.to_dict(),
        "history": [r.row() for r in clf.result.history],
        "y_true": y_true,
        "y_pred": y_pred,
        "y_uncalibrated": y_uncalibrated,
    }
    atomic_write_text(directory / RESULT, json.dumps(record, indent=1) + "\n")
    return record


def load_result(directory: Path) -> dict[str, Any]:
    path = directory / RESULT
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise JoyfulError(f"{path}: cannot read finished run: {e}") from None


def check_resumable(
    record: dict[str, Any], cell: Cell, seed: int, inputs: dict[str, dict[str, str]], path: Path,
    fold: int | None = None,
) -> None:
    """Refuse to reuse a finished run made with another config, edge noise or input data.

    Otherwise editing a grid file and rerunning would silently mix old and new runs in
    one mean. The data hashes cover the files, not the text embeddings derived from them,
    so a run that reads text also records how its embeddings were computed (the cache
    table, see :mod:`joyful.data.text_encoder`): runs on batch-encoded vectors from
    before that scheme are refused, not mixed with runs on the reproducible ones.
    """
    changed = changed_fields(cell.config(seed).to_dict(), record.get("config", {}))
    if record.get("eval_edge_noise") != cell.eval_edge_noise:
        changed.append("eval_edge_noise")
    if record.get("teacher") != cell.teacher:
        changed.append("teacher")
    if record.get("fold") != fold:
        changed.append("fold")
    if "t" in cell.config(seed).modalities and record.get("text_embeddings") != CACHE_TABLE:
        changed.append("text embeddings")
    stored_inputs = record.get("inputs", {})
    changed += [
        f"{role} data" for role in inputs if stored_inputs.get(role, {}).get("sha256") != inputs[role]["sha256"]
    ]
    if changed:
        raise JoyfulError(
            f"{path / RESULT}: this finished run differs from the grid file in {', '.join(changed)}; "
            "delete it (or its results directory) to rerun, or choose another --out"
        )


__all__ = ["RESULT", "run_dir", "run_one", "load_result", "check_resumable"]
