"""Writing the grid's tables as CSV (for programs) and Markdown (for people), atomically.

CSV keeps fractions in [0, 1] at full precision, as ``evaluate --json`` does; Markdown
shows percentages with two decimals, the way the paper reports its figures, and scores
that are not fractions (MAE, correlation) with three, as MOSI/MOSEI papers do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from joyful.atomic import atomic_write_csv as write_csv


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def percent(mean: float | None, std: float | None = None) -> str:
    """``71.03 ± 0.52`` (fractions shown as percent); a missing std (one seed) shows the mean alone."""
    if mean is None or math.isnan(mean):
        return "–"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def plain(mean: float | None, std: float | None = None) -> str:
    """``0.712 ± 0.031``: a score that is not a fraction (MAE, correlation), as it is."""
    if mean is None or math.isnan(mean):
        return "–"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def p_value(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


__all__ = ["write_csv", "markdown_table", "percent", "plain", "p_value"]
