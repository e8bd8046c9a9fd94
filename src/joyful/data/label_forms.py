"""The three forms a label takes, and the task they imply, without PyTorch.

Readers, label sets, the correction store and grid files need to know what a label may
look like; they must not pay for importing PyTorch, so the forms live here and the
tensor side of each task in :mod:`joyful.data.tasks`.

- ``str``: one class (``classification``);
- ``tuple[str, ...]``: the emotions present, possibly none (``multilabel``, CMU-MOSEI);
- ``float``: a sentiment score in :data:`SENTIMENT_RANGE` (``regression``, MOSI/MOSEI).
"""

from __future__ import annotations

from collections.abc import Sequence

from joyful.config import TASKS
from joyful.errors import DataError, JoyfulError

#: CMU-MOSEI's six emotions, in the order of its "All Labels" sequence after the sentiment.
MOSEI_EMOTIONS = ("happy", "sad", "anger", "surprise", "disgust", "fear")
#: The sentiment scale of CMU-MOSI and CMU-MOSEI.
SENTIMENT_RANGE = (-3.0, 3.0)
#: An emotion is present when its MOSEI score is above this.
EMOTION_PRESENT_ABOVE = 0.0

Label = str | tuple[str, ...] | float


def label_kind(label: Label) -> str:
    """The task a single label belongs to."""
    if isinstance(label, tuple):
        return "multilabel"
    if isinstance(label, str):
        return "classification"
    return "regression"


def infer_task(requested: str, labels: Sequence[tuple[str, Label]], source: str) -> str:
    """The task for training data: ``requested`` unless ``auto``, checked against the labels.

    ``labels`` are ``(dialogue id, label)`` pairs of the labelled utterances. Mixed kinds
    (some strings, some lists) are refused, naming the first utterance that differs.
    """
    kinds: dict[str, str] = {}
    for did, lab in labels:
        kinds.setdefault(label_kind(lab), did)
    if requested != "auto":
        if requested not in TASKS:
            raise JoyfulError(f"unknown task {requested!r}; choose one of {', '.join(TASKS)}")
        wrong = [k for k in kinds if k != requested]
        if wrong:
            raise DataError(
                source, f"the task is {requested}, but labels here are {_kind_words[wrong[0]]}", dialogue=kinds[wrong[0]],
                field="label",
            )
        return requested
    if len(kinds) > 1:
        (a, da), (b, db) = list(kinds.items())[:2]
        raise DataError(source, f"labels mix {_kind_words[a]} (dialogue {da!r}) and {_kind_words[b]}", dialogue=db, field="label")
    return next(iter(kinds), "classification")


_kind_words = {
    "classification": "single class names",
    "multilabel": "lists of labels (multi-label)",
    "regression": "numbers (regression)",
}

__all__ = ["EMOTION_PRESENT_ABOVE", "Label", "MOSEI_EMOTIONS", "SENTIMENT_RANGE", "infer_task", "label_kind"]
