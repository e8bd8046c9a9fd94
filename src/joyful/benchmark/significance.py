"""The grid's significance tables against its reference cell.

``significance.csv``/``.md``: weighted F1 over seeds, t-test with Benjamini–Hochberg
correction and the Shapiro–Wilk and Levene checks (needs at least two seeds).
``bootstrap.csv``/``.md``: each cell's first (lowest) seed against the reference's first
seed, paired over the test utterances; useful when only one seed was affordable.

With cross-validation (runs that carry a ``fold``) every cell is trained and scored on
the same folds with the same seeds, so ``significance.csv``/``.md`` hold paired tests
instead: over the (fold, seed) pairs, the paired t-test and the Wilcoxon signed-rank
test of the weighted-F1 differences, each Benjamini–Hochberg corrected. The bootstrap
table is not written then (each fold has its own test utterances).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from joyful.atomic import atomic_write_text
from joyful.benchmark.formats import markdown_table, p_value, percent, write_csv
from joyful.benchmark.gridfile import Cell
from joyful.benchmark.stats import compare_to_reference, paired_bootstrap, paired_compare_to_reference
from joyful.benchmark.tables import is_cv

METRIC = "weighted_f1"
ALPHA = 0.05


def write_significance(records: Sequence[dict[str, Any]], cells: Sequence[Cell], reference: str, out: Path) -> None:
    """Write the seed-level tests (if every cell has ≥ 2 seeds' worth of data) and the bootstrap table."""
    if is_cv(records):
        _write_paired_tests(records, cells, reference, out)
        return
    by_cell = {c.name: sorted((r for r in records if r["cell"] == c.name), key=lambda r: r["seed"]) for c in cells}
    if min(len(runs) for runs in by_cell.values()) >= 2:
        _write_t_tests(by_cell, reference, out)
    _write_bootstrap(by_cell, reference, out)


def _write_t_tests(by_cell: dict[str, list[dict[str, Any]]], reference: str, out: Path) -> None:
    scores = {name: [r["metrics"][METRIC] for r in runs] for name, runs in by_cell.items()}
    comparisons = compare_to_reference(scores, reference, ALPHA)
    write_csv(out / "significance.csv", [{"reference": reference, **dataclasses.asdict(c)} for c in comparisons])
    columns = ["variant", "n", "WF1", "Δ vs reference", "t", "p", "p (BH)", f"significant at FDR {ALPHA}",
               "Shapiro p (variant)", "Shapiro p (reference)", "Levene p"]
    rows = [
        [c.variant, str(c.n_variant), percent(c.mean_variant), f"{100 * c.mean_diff:+.2f}",
         "–" if c.t_statistic is None else f"{c.t_statistic:.3f}", p_value(c.p_value), p_value(c.p_adjusted),
         {True: "yes", False: "no", None: "–"}[c.reject],
         p_value(c.shapiro_p_variant), p_value(c.shapiro_p_reference), p_value(c.levene_p)]
        for c in comparisons
    ]
    head = (
        f"# Significance against `{reference}`\n\nWeighted F1 on the grid's test data over seeds (reference: "
        f"{percent(comparisons[0].mean_reference) if comparisons else '–'}, n = {len(scores[reference])}). "
        "Two-sample Student t-test, Benjamini–Hochberg correction over all variants; "
        "Shapiro–Wilk (normality, needs ≥ 3 seeds) and Levene (equal variances) reported beside it.\n\n"
    )
    atomic_write_text(out / "significance.md", head + markdown_table(columns, rows))


def _write_paired_tests(records: Sequence[dict[str, Any]], cells: Sequence[Cell], reference: str, out: Path) -> None:
    scores = {c.name: {} for c in cells}
    for r in sorted(records, key=lambda r: (r["fold"], r["seed"])):
        scores[r["cell"]][r["fold"], r["seed"]] = r["metrics"][METRIC]
    comparisons = paired_compare_to_reference(scores, reference, ALPHA)
    rows = [
        {"variant": c.variant, "reference": reference, "n_pairs": c.n_pairs, "mean_variant": c.mean_variant,
         "mean_reference": c.mean_reference, "mean_diff": c.mean_diff,
         "t": c.t_statistic, "p_t": c.p_t, "p_t_BH": c.p_t_adjusted, "reject_t": c.reject_t,
         "W": c.w_statistic, "p_w": c.p_w, "p_w_BH": c.p_w_adjusted, "reject_w": c.reject_w}
        for c in comparisons
    ]
    write_csv(out / "significance.csv", rows)
    flag = {True: "yes", False: "no", None: "–"}
    columns = ["variant", "pairs", "WF1", "Δ vs reference", "t", "p_t", "p_t (BH)", "W", "p_w", "p_w (BH)",
               f"significant at FDR {ALPHA} (t / W)"]
    table = [
        [c.variant, str(c.n_pairs), percent(c.mean_variant),
         "–" if c.mean_diff is None else f"{100 * c.mean_diff:+.2f}",
         "–" if c.t_statistic is None else f"{c.t_statistic:.3f}", p_value(c.p_t), p_value(c.p_t_adjusted),
         "–" if c.w_statistic is None else f"{c.w_statistic:g}", p_value(c.p_w), p_value(c.p_w_adjusted),
         f"{flag[c.reject_t]} / {flag[c.reject_w]}"]
        for c in comparisons
    ]
    n_ref = len(scores[reference])
    head = (
        f"# Significance against `{reference}` (cross-validation)\n\nWeighted F1 on each fold's held-out dialogues, "
        f"paired by (fold, seed) (reference: {percent(comparisons[0].mean_reference) if comparisons else '–'}, "
        f"{n_ref} runs). Paired t-test and Wilcoxon signed-rank test of the differences (variant − reference), "
        "each with Benjamini–Hochberg correction over all variants.\n\n"
    )
    atomic_write_text(out / "significance.md", head + markdown_table(columns, table))


def _write_bootstrap(by_cell: dict[str, list[dict[str, Any]]], reference: str, out: Path) -> None:
    base = by_cell[reference][0]
    rows = [_bootstrap_row(runs[0], base) for name, runs in by_cell.items() if name != reference]
    write_csv(out / "bootstrap.csv", rows)
    columns = ["variant", "seed", "WF1", "Δ vs reference", "95% CI", "p", "note"]
    table = [
        [r["variant"], str(r["seed"]), percent(r["score_variant"]),
         "–" if r["difference"] is None else f"{100 * r['difference']:+.2f}",
         "–" if r["ci_low"] is None else f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]",
         p_value(r["p_value"]), r["note"]]
        for r in rows
    ]
    head = (
        f"# Paired bootstrap against `{reference}` (seed {base['seed']})\n\nWeighted F1 of each cell's first seed "
        "against the reference's first seed, resampling test utterances (1000 resamples); two-sided p.\n\n"
    )
    atomic_write_text(out / "bootstrap.md", head + markdown_table(columns, table))


def _bootstrap_row(run: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Only runs scored on the same utterances with the same labels can be paired."""
    row: dict[str, Any] = {"variant": run["cell"], "seed": run["seed"], "reference": base["cell"],
                           "reference_seed": base["seed"], "score_variant": run["metrics"][METRIC]}
    same = run["y_true"] == base["y_true"] and run["metrics"]["labels"] == base["metrics"]["labels"]
    if not same:
        missing = dict.fromkeys(("difference", "ci_low", "ci_high", "p_value"))
        return row | missing | {"note": "different test utterances"}
    result = paired_bootstrap(base["y_true"], run["y_pred"], base["y_pred"], METRIC,
                              n_classes=len(base["metrics"]["labels"]))
    return row | {"difference": result.difference, "ci_low": result.ci_low, "ci_high": result.ci_high,
                  "p_value": result.p_value, "note": ""}


__all__ = ["write_significance"]
