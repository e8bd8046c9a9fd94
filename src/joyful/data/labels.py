"""Label sets, and the utterance filtering some of them imply.

IEMOCAP-4 is not just a shorter list of names: utterances labelled ``exc`` or ``fru``
are *removed from the dialogue* (as COGMEN does), which changes the graph. The label set
is therefore saved with every model and re-applied, identically, at evaluation and
prediction time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
                elif lab in self.dropped:
                    keep[i] = False
                elif lab not in known:
                    raise DataError(
                        data.source,
                        f"unknown label {lab!r}; the {self.name} label set has {', '.join(self.labels)}",
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


IEMOCAP6 = LabelSet("iemocap6", ("hap", "sad", "neu", "ang", "exc", "fru"))
IEMOCAP4 = LabelSet("iemocap4", ("hap", "sad", "neu", "ang"), dropped=("exc", "fru"))
MELD7 = LabelSet("meld7", ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"))

#: Order of integer MELD labels in DialogueGCN, MMGCN and COGMEN pickles (not MELD7's order).
MELD_INTEGER_ORDER = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")

#: Named label sets; integer IEMOCAP labels in pickles follow IEMOCAP6's order.
LABEL_SETS: dict[str, LabelSet] = {s.name: s for s in (IEMOCAP6, IEMOCAP4, MELD7)}


def custom_label_set(data: DialogueSet) -> LabelSet:
    """The label set found in the data (sorted), for datasets with their own classes."""
    found = data.labels_found()
    if not found:
        raise DataError(data.source, "no labels found to train on", field="label")
    return LabelSet("custom", tuple(found))


def resolve_label_set(name: str | None, data: DialogueSet) -> LabelSet:
    """A named label set, or (``None``/``"auto"``) the best match for the data's labels."""
    if name and name != "auto":
        if name not in LABEL_SETS:
            raise DataError(data.source, f"unknown label set {name!r}; choose one of {', '.join(LABEL_SETS)} or auto")
        return LABEL_SETS[name]
    found = set(data.labels_found())
    for s in (IEMOCAP6, MELD7):
        if found and found <= set(s.labels):
            return s
    return custom_label_set(data)


__all__ = ["LabelSet", "LABEL_SETS", "MELD_INTEGER_ORDER", "IEMOCAP6", "IEMOCAP4", "MELD7", "custom_label_set", "resolve_label_set"]
