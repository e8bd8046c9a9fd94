"""Label sets, and the utterance filtering some of them imply.

IEMOCAP-4 is not just a shorter list of names: utterances labelled ``exc`` or ``fru``
are *removed from the dialogue* (as COGMEN does), which changes the graph. The label set
is therefore saved with every model and re-applied, identically, at evaluation and
prediction time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from joyful.data.label_forms import MOSEI_EMOTIONS, SENTIMENT_RANGE
from joyful.data.schema import Dialogue, DialogueSet
from joyful.errors import DataError


@dataclass(frozen=True)
class LabelSet:
    """Ordered class names, plus labels whose utterances are dropped before modelling."""

    name: str
    labels: tuple[str, ...]
    dropped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.labels)) != len(self.labels) or not self.labels:
            raise ValueError(f"label set {self.name!r} needs distinct, non-empty labels")

    def index(self, label: str) -> int:
        return self.labels.index(label)

    def to_dict(self) -> dict:
        return {"name": self.name, "labels": list(self.labels), "dropped": list(self.dropped)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelSet:
        return cls(name=d["name"], labels=tuple(d["labels"]), dropped=tuple(d.get("dropped", ())))

    def apply(self, data: DialogueSet, *, require_labels: bool = False) -> DialogueSet:
        """Drop utterances with a dropped label and reject any label not in the set.

        Raises :class:`DataError` naming the dialogue and utterance of the first unknown
        label, or of a dialogue left empty by the filtering.
        """
        known = set(self.labels)
        out: list[Dialogue] = []
        for d in data.dialogues:
            if d.labels is None:
                if require_labels:
                    raise DataError(data.source, "dialogue has no labels", dialogue=d.id, field="label")
                out.append(d)
                continue
            keep = np.ones(len(d), dtype=bool)
            for i, lab in enumerate(d.labels):
                if lab is None:
                    if require_labels:
                        raise DataError(data.source, "label is missing", dialogue=d.id, field="label", index=i)
                elif self.name == SENTIMENT.name:
                    self._check_score(lab, data.source, d.id, i)
                elif isinstance(lab, str) and lab in self.dropped:
                    keep[i] = False
                else:
                    unknown = [x for x in (lab if isinstance(lab, tuple) else (lab,)) if x not in known]
                    if unknown:
                        raise DataError(
                            data.source,
                            f"unknown label {unknown[0]!r}; the {self.name} label set has {', '.join(self.labels)}",
                            dialogue=d.id,
                            field="label",
                            index=i,
                        )
            if keep.all():
                out.append(d)
            elif keep.any():
                out.append(d.subset(keep))
            # a dialogue made only of dropped utterances has nothing to classify: skip it
        if not out:
            raise DataError(data.source, f"no utterances left after applying label set {self.name}")
        return DialogueSet(out, data.source)


    @staticmethod
    def _check_score(value, source: str, did: str, i: int) -> None:
        low, high = SENTIMENT_RANGE
        if isinstance(value, (str, tuple)) or not low <= value <= high:
            raise DataError(
                source, f"sentiment {value!r} is not a number in [{low:g}, {high:g}]", dialogue=did, field="label", index=i
            )


IEMOCAP6 = LabelSet("iemocap6", ("hap", "sad", "neu", "ang", "exc", "fru"))
IEMOCAP4 = LabelSet("iemocap4", ("hap", "sad", "neu", "ang"), dropped=("exc", "fru"))
MELD7 = LabelSet("meld7", ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"))
#: CMU-MOSEI's emotions (multilabel task): each utterance has any subset of them.
MOSEI6 = LabelSet("mosei6", MOSEI_EMOTIONS)
#: The one output of the regression task: a sentiment score in SENTIMENT_RANGE.
SENTIMENT = LabelSet("sentiment", ("sentiment",))

#: Order of integer MELD labels in DialogueGCN, MMGCN and COGMEN pickles (not MELD7's order).
MELD_INTEGER_ORDER = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")

#: Named label sets; integer IEMOCAP labels in pickles follow IEMOCAP6's order.
LABEL_SETS: dict[str, LabelSet] = {s.name: s for s in (IEMOCAP6, IEMOCAP4, MELD7, MOSEI6, SENTIMENT)}


def custom_label_set(data: DialogueSet) -> LabelSet:
    """The label set found in the data (sorted), for datasets with their own classes."""
    found = data.labels_found()
    if not found:
        raise DataError(data.source, "no labels found to train on", field="label")
    return LabelSet("custom", tuple(found))


def resolve_label_set(name: str | None, data: DialogueSet, task: str = "classification") -> LabelSet:
    """A named label set, or (``None``/``"auto"``) the best match for the data's labels and task."""
    if name and name != "auto":
        if name not in LABEL_SETS:
            raise DataError(data.source, f"unknown label set {name!r}; choose one of {', '.join(LABEL_SETS)} or auto")
        chosen = LABEL_SETS[name]
        if (chosen is SENTIMENT) != (task == "regression"):
            raise DataError(data.source, f"label set {name!r} does not fit the {task} task")
        return chosen
    if task == "regression":
        return SENTIMENT
    found = set(data.labels_found())
    candidates = (MOSEI6,) if task == "multilabel" else (IEMOCAP6, MELD7)
    for s in candidates:
        if found and found <= set(s.labels):
            return s
    return custom_label_set(data)


__all__ = [
    "LabelSet", "LABEL_SETS", "MELD_INTEGER_ORDER", "IEMOCAP6", "IEMOCAP4", "MELD7", "MOSEI6", "SENTIMENT",
    "custom_label_set", "resolve_label_set",
]
