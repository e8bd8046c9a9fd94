"""Readers for the dialogue files users already have, and the JSONL writer.

:func:`read_dialogues` picks the format from the file's content and returns a
validated :class:`~joyful.data.schema.DialogueSet`.
"""

from joyful.io.jsonl import write_jsonl
from joyful.io.readers import read_dialogues

__all__ = ["read_dialogues", "write_jsonl"]
