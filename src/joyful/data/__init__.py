"""The in-memory dialogue schema, label sets, readers and text encoding."""

from joyful.data.labels import LABEL_SETS, LabelSet
from joyful.data.schema import MODALITIES, Dialogue, DialogueSet

__all__ = ["Dialogue", "DialogueSet", "LabelSet", "LABEL_SETS", "MODALITIES"]
