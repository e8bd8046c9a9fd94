"""Undoing the mojibake common in MELD text (``heâ€™s`` for ``he’s``).

MELD's CSVs and Python 2 pickles read as latin-1 often hold UTF-8 bytes decoded as
Windows-1252 or latin-1. The repair re-encodes and decodes as UTF-8, and is applied
only when that round trip succeeds exactly, so correct text is never changed.
"""

from __future__ import annotations

#: Characters that start the mis-decoded form of a multi-byte UTF-8 sequence.
_MARKERS = frozenset("ÂÃâ")


def repair_mojibake(text: str) -> str:
    """``text`` with UTF-8-read-as-cp1252/latin-1 undone, or unchanged if it isn't that."""
    if not _MARKERS.intersection(text):
        return text
    for codec in ("cp1252", "latin-1"):
        try:
            return text.encode(codec).decode("utf-8")
        except UnicodeError:
            continue
    return text
