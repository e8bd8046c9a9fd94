"""The grid's significance tables against its reference cell, on the task's primary metric.

``significance.csv``/``.md``: the primary metric over seeds, t-test with
Benjamini–Hochberg correction and the Shapiro–Wilk and Levene checks (needs at least
two seeds). ``bootstrap.csv``/``.md``: each cell's first (lowest) seed against the
reference's first seed, paired over the test utterances; useful when only one seed was
affordable.

With cross-validation (runs that carry a ``fold``) every cell is trained and scored on
the same folds with the same seeds, so ``significance.csv``/``.md`` hold paired tests
instead: over the (fold, seed) pairs, the paired t-test and the Wilcoxon signed-rank
test of the primary metric's differences, each Benjamini–Hochberg corrected. The
bootstrap table is not written then (each fold has its own test utterances).

The primary metric is weighted F1 (over the classes, or over the emotions for
multilabel) or MAE for regression. Differences are always variant − reference in the
metric's own unit, and every test is two-sided, so nothing depends on the direction but
the reading: where lower is better (MAE) a negative difference is a gain, and the tables
get a ``better`` column saying which side the difference favours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from joyful.atomic import atomic_write_text
from joyful.benchmark.formats import markdown_table, p_value, write_csv
from joyful.benchmark.gridfile import Cell
from joyful.benchmark.scores import TaskScores, scores_of
from joyful.benchmark.stats import compare_to_reference, paired_bootstrap, paired_compare_to_reference
from joyful.benchmark.tables import is_cv

ALPHA = 0.05


def write_significance(records: Sequence[dict[str, Any]], cells: Sequence[Cell], reference: str, out: Path) -> None:
    """Write the seed-level tests (if every cell has ≥ 2 seeds' worth of data) and the bootstrap table."""
    spec = scores_of(records)
    if is_cv(records):
        _write_paired_tests(records, cells, reference, out, spec)
        return
    by_cell = {c.name: sorted((r for r in records if r["cell"] == c.name), key=lambda r: r["seed"]) for c in cells}
    if min(len(runs) for runs in by_cell.values()) >= 2:
        _write_t_tests(by_cell, reference, out, spec)
    _write_bootstrap(by_cell, reference, out, spec)


def _write_t_tests(by_cell: dict[str, list[dict[str, Any]]], reference: str, out: Path, spec: TaskScores) -> None:
    metric = spec.primary
    scores = {name: [r["metrics"][metric.key] for r in runs] for name, runs in by_cell.items()}
    comparisons = compare_to_reference(scores, reference, ALPHA)
    write_csv(out / "significance.csv",
              [{"reference": reference, **dataclasses.asdict(c), **_better(spec, c.mean_diff)} for c in comparisons])
    columns = ["variant", "n", spec.short, "Δ vs reference", *_better(spec, None), "t", "p", "p (BH)",
               f"significant at FDR {ALPHA}", "Shapiro p (variant)", "Shapiro p (reference)", "Levene p"]
    rows = [
        [c.variant, str(c.n_variant), metric.show(c.mean_variant), metric.show_difference(c.mean_diff),
         *_better(spec, c.mean_diff).values(),
         "–" if c.t_statistic is None else f"{c.t_statistic:.3f}", p_value(c.p_value), p_value(c.p_adjusted),
         {True: "yes", False: "no", None: "–"}[c.reject],
         p_value(c.shapiro_p_variant), p_value(c.shapiro_p_reference), p_value(c.levene_p)]
        for c in comparisons
    ]
    head = (
        f"# Significance against `{reference}`\n\n{spec.phrase} on the grid's test data over seeds (reference: "
        f"{metric.show(comparisons[0].mean_reference) if comparisons else '–'}, n = {len(scores[reference])}). "
        "Two-sample Student t-test, Benjamini–Hochberg correction over all variants; "
        "Shapiro–Wilk (normality, needs ≥ 3 seeds) and Levene (equal variances) reported beside it.\n\n"
    )
    atomic_write_text(out / "significance.md", head + markdown_table(columns, rows))


def _write_paired_tests(
    records: Sequence[dict[str, Any]], cells: Sequence[Cell], reference: str, out: Path, spec: TaskScores
) -> None:
    metric = spec.primary
    scores = {c.name: {} for c in cells}
    for r in sorted(records, key=lambda r: (r["fold"], r["seed"])):
        scores[r["cell"]][r["fold"], r["seed"]] = r["metrics"][metric.key]
    comparisons = paired_compare_to_reference(scores, reference, ALPHA)
    rows = [
        {"variant": c.variant, "reference": reference, "n_pairs": c.n_pairs, "mean_variant": c.mean_variant,
         "mean_reference": c.mean_reference, "mean_diff": c.mean_diff, **_better(spec, c.mean_diff),
         "t": c.t_statistic, "p_t": c.p_t, "p_t_BH": c.p_t_adjusted, "reject_t": c.reject_t,
         "W": c.w_statistic, "p_w": c.p_w, "p_w_BH": c.p_w_adjusted, "reject_w": c.reject_w}
        for c in comparisons
    ]
    write_csv(out / "significance.csv", rows)
    flag = {True: "yes", False: "no", None: "–"}
    columns = ["variant", "pairs", spec.short, "Δ vs reference", *_better(spec, None), "t", "p_t", "p_t (BH)", "W", "p_w",
               "p_w (BH)", f"significant at FDR {ALPHA} (t / W)"]
    table = [
        [c.variant, str(c.n_pairs), metric.show(c.mean_variant), metric.show_difference(c.mean_diff),
         *_better(spec, c.mean_diff).values(),
         "–" if c.t_statistic is None else f"{c.t_statistic:.3f}", p_value(c.p_t), p_value(c.p_t_adjusted),
         "–" if c.w_statistic is None else f"{c.w_statistic:g}", p_value(c.p_w), p_value(c.p_w_adjusted),
         f"{flag[c.reject_t]} / {flag[c.reject_w]}"]
        for c in comparisons
    ]
    n_ref = len(scores[reference])
    head = (
        f"# Significance against `{reference}` (cross-validation)\n\n{spec.phrase} on each fold's held-out dialogues, "
        f"paired by (fold, seed) (reference: {metric.show(comparisons[0].mean_reference) if comparisons else '–'}, "
        f"{n_ref} runs). Paired t-test and Wilcoxon signed-rank test of the differences (variant − reference), "
        "each with Benjamini–Hochberg correction over all variants.\n\n"
    )
    atomic_write_text(out / "significance.md", head + markdown_table(columns, table))


def _write_bootstrap(by_cell: dict[str, list[dict[str, Any]]], reference: str, out: Path, spec: TaskScores) -> None:
    metric = spec.primary
    base = by_cell[reference][0]
    rows = [_bootstrap_row(runs[0], base, spec) for name, runs in by_cell.items() if name != reference]
    write_csv(out / "bootstrap.csv", rows)
    columns = ["variant", "seed", spec.short, "Δ vs reference", *_better(spec, None), "95% CI", "p", "note"]
    table = [
        [r["variant"], str(r["seed"]), metric.show(r["score_variant"]), metric.show_difference(r["difference"]),
         *_better(spec, r["difference"]).values(),
         "–" if r["ci_low"] is None
         else f"[{metric.show_difference(r['ci_low'])}, {metric.show_difference(r['ci_high'])}]",
         p_value(r["p_value"]), r["note"]]
        for r in rows
    ]
    head = (
        f"# Paired bootstrap against `{reference}` (seed {base['seed']})\n\n{spec.phrase} of each cell's first seed "
        "against the reference's first seed, resampling test utterances (1000 resamples); two-sided p.\n\n"
    )
    atomic_write_text(out / "bootstrap.md", head + markdown_table(columns, table))


def _bootstrap_row(run: dict[str, Any], base: dict[str, Any], spec: TaskScores) -> dict[str, Any]:
    """Only runs scored on the same utterances with the same labels can be paired."""
    metric = spec.primary.key
    row: dict[str, Any] = {"variant": run["cell"], "seed": run["seed"], "reference": base["cell"],
                           "reference_seed": base["seed"], "score_variant": run["metrics"][metric]}
    same = run["y_true"] == base["y_true"] and run["metrics"].get("labels") == base["metrics"].get("labels")
    if not same:
        missing = dict.fromkeys(("difference", "ci_low", "ci_high", "p_value"))
        return row | missing | {"note": "different test utterances"} | _better(spec, None)
    task = spec.task.name
    result = paired_bootstrap(base["y_true"], run["y_pred"], base["y_pred"], metric, task=task,
                              n_classes=len(base["metrics"]["labels"]) if task == "classification" else None)
    return row | {"difference": result.difference, "ci_low": result.ci_low, "ci_high": result.ci_high,
                  "p_value": result.p_value, "note": ""} | _better(spec, result.difference)


def _better(spec: TaskScores, difference: float | None) -> dict[str, str]:
    """Where lower is better (MAE) a positive Δ is a loss, so the row says which side wins; elsewhere Δ reads as it is."""
    return {} if spec.higher_is_better else {"better": spec.better(difference)}


__all__ = ["write_significance"]
