"""Which scores a grid reports for each task, which one ranks and tests its cells, and how each is shown.

The primary metric and its direction come from :class:`joyful.data.tasks.Task`, the same
contract that selects epochs, so a grid, a study and early stopping never disagree on
what "better" is. The other columns are the ones papers report beside it: accuracy and
macro F1 (IEMOCAP, MELD); micro and macro F1 and subset accuracy over CMU-MOSEI's
emotions; correlation, Acc-2, F1 and Acc-7 for MOSI/MOSEI sentiment. Fractions are shown
in percent, as the paper does; MAE and correlation are not fractions of anything and are
shown as they are.

A grid ranks its cells by one metric, so all its runs must share a task: records from
different tasks are refused (:func:`scores_of`) rather than put in one table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from joyful.benchmark.formats import percent, plain
from joyful.data.tasks import Task, get_task
from joyful.errors import JoyfulError


@dataclass(frozen=True)
class Score:
    """One reported score: its key in the metrics, its column title, and whether it is a fraction."""

    key: str
    title: str
    fraction: bool = True

    def show(self, mean: float | None, std: float | None = None) -> str:
        return percent(mean, std) if self.fraction else plain(mean, std)

    def show_difference(self, value: float | None) -> str:
        """A signed difference in the score's own unit (points of percent, or the raw value)."""
        if value is None:
            return "–"
        return f"{100 * value:+.2f}" if self.fraction else f"{value:+.3f}"


@dataclass(frozen=True)
class TaskScores:
    """The scores of one task, in table order, with the primary metric's wording for table headers."""

    task: Task
    scores: tuple[Score, ...]
    short: str
    """Column title of the primary metric in the significance tables."""
    phrase: str
    """The primary metric at the start of a sentence."""
    units: str
    """How the tables show their numbers."""
    headline: tuple[str, str]
    """The two scores of the progress line, primary first."""

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.scores)

    @property
    def primary(self) -> Score:
        return self.score(self.task.primary_metric)

    @property
    def higher_is_better(self) -> bool:
        return self.task.higher_is_better

    def score(self, key: str) -> Score:
        return next(s for s in self.scores if s.key == key)

    def per_label_f1(self, metrics: dict[str, Any]) -> dict[str, float]:
        """Each class's F1 (classification) or each emotion's (multilabel); nothing for a single score."""
        if self.task.name == "classification":
            return metrics["per_class_f1"]
        if self.task.name == "multilabel":
            return {name: e["f1"] for name, e in metrics["per_emotion"].items()}
        return {}

    def better(self, difference: float | None) -> str:
        """Which side of ``variant − reference`` has the better score: ``variant``, ``reference`` or ``tie``."""
        if difference is None:
            return "–"
        if difference == 0:
            return "tie"
        return "variant" if (difference > 0) == self.higher_is_better else "reference"

    def progress(self, metrics: dict[str, Any]) -> str:
        """``weighted F1 0.6123, accuracy 0.6250``: the run's two headline scores, as they are (not in percent)."""
        parts = []
        for key in self.headline:
            value = metrics.get(key)
            parts.append(f"{self.score(key).title} {'–' if value is None else f'{value:.4f}'}")
        return ", ".join(parts)


TASK_SCORES: dict[str, TaskScores] = {
    "classification": TaskScores(
        get_task("classification"),
        (Score("accuracy", "accuracy"), Score("weighted_f1", "weighted F1"), Score("macro_f1", "macro F1")),
        short="WF1", phrase="Weighted F1", units="in percent", headline=("weighted_f1", "accuracy"),
    ),
    "multilabel": TaskScores(
        get_task("multilabel"),
        (Score("weighted_f1", "weighted F1"), Score("micro_f1", "micro F1"), Score("macro_f1", "macro F1"),
         Score("subset_accuracy", "subset accuracy")),
        short="WF1", phrase="Weighted F1 over the emotions", units="in percent", headline=("weighted_f1", "micro_f1"),
    ),
    "regression": TaskScores(
        get_task("regression"),
        (Score("mae", "MAE", fraction=False), Score("corr", "corr", fraction=False), Score("acc2", "Acc-2"),
         Score("f1", "F1"), Score("acc7", "Acc-7")),
        short="MAE", phrase="MAE (lower is better)", units="in percent (MAE and corr as they are; lower MAE is better)",
        headline=("mae", "corr"),
    ),
}


def task_of(metrics: dict[str, Any]) -> str:
    """The task a run was scored for; runs from before tasks existed were classification."""
    return metrics.get("task", "classification")


def scores_of(records: Iterable[dict[str, Any]]) -> TaskScores:
    """The scores of the runs' one task; runs of different tasks cannot share a table or a test."""
    found: dict[str, str] = {}
    for r in records:
        found.setdefault(task_of(r["metrics"]), r["cell"])
    if len(found) > 1:
        listing = ", ".join(f"{task} (cell {cell!r})" for task, cell in found.items())
        raise JoyfulError(f"the runs of this grid were scored for different tasks: {listing}; a grid ranks its cells "
                          "by one metric, so give every cell the same task or split the grid")
    return TASK_SCORES[next(iter(found), "classification")]


__all__ = ["Score", "TaskScores", "TASK_SCORES", "scores_of", "task_of"]
