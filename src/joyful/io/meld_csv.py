"""MELD's own annotation CSVs (``train_sent_emo.csv`` and friends).

Each row is one utterance; dialogues are the rows sharing a ``Dialogue_ID``, in
``Utterance_ID`` order (MELD skips some ids, so gaps are fine). Only text, speaker and
emotion are read: MELD's media features are not in the CSV, text gets encoded later.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator

from joyful.data.schema import Dialogue, DialogueSet
from joyful.errors import DataError
from joyful.io.text_repair import repair_mojibake

#: Columns the reader needs; MELD's other columns (Sentiment, Season, times) are ignored.
REQUIRED: tuple[str, ...] = ("Dialogue_ID", "Utterance_ID", "Speaker", "Utterance", "Emotion")


def read_meld_csv(path: str | os.PathLike, source: str | None = None) -> DialogueSet:
    """Read the dialogues of a MELD CSV (not yet validated; :func:`read_dialogues` does that)."""
    source = str(path) if source is None else source
    reader = csv.DictReader(io.StringIO(_decode(path, source), newline=""))
    try:
        header = [h.strip() for h in reader.fieldnames or []]
    except csv.Error as e:  # e.g. a field beyond the csv module's size limit
        raise DataError(source, f"line {reader.line_num}: not readable as CSV ({e})") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataError(source, f"CSV lacks the column(s) {', '.join(missing)} of the MELD format", field=missing[0])
    reader.fieldnames = header
    rows: dict[int, dict[int, dict[str, str]]] = {}
    for row in _rows(reader, source):
        line = reader.line_num
        if None in row:
            raise DataError(source, f"line {line}: more values than the header has columns")
        if None in row.values():
            # DictReader pads a short row with None. MELD rows always have every column, so a
            # short one is a truncated line, whose last value read may be cut too (an
            # Utterance_ID "12" cut to "1"): refused rather than read as something else.
            have = sum(v is not None for v in row.values())
            raise DataError(source, f"line {line}: {have} values, but the header has {len(header)} columns")
        did, uid = _int(row, "Dialogue_ID", line, source), _int(row, "Utterance_ID", line, source)
        utts = rows.setdefault(did, {})
        if uid in utts:
            raise DataError(
                source, f"line {line}: utterance {uid} appears twice", dialogue=str(did), field="Utterance_ID"
            )
        utts[uid] = row
    dialogues = []
    for did in sorted(rows):
        utts = [rows[did][uid] for uid in sorted(rows[did])]
        labels = [(u["Emotion"] or "").strip() or None for u in utts]
        dialogues.append(
            Dialogue(
                id=str(did),
                speakers=[(u["Speaker"] or "").strip() for u in utts],
                texts=[repair_mojibake(u["Utterance"] or "") for u in utts],
                labels=labels if any(lab is not None for lab in labels) else None,
            )
        )
    return DialogueSet(dialogues, source)


def _rows(reader: csv.DictReader, source: str) -> Iterator[dict[str, str]]:
    """The reader's rows, with the csv module's own errors as :class:`DataError`."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(source, f"line {reader.line_num}: not readable as CSV ({e})") from None
        yield row


def _decode(path: str | os.PathLike, source: str) -> str:
    """The file's text: UTF-8 (with or without BOM), else Windows-1252 as Excel saves it."""
    with open(path, "rb") as fh:
        data = fh.read()
    for codec in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    raise DataError(source, "CSV is neither UTF-8 nor Windows-1252 text")


def _int(row: dict[str, str], column: str, line: int, source: str) -> int:
    value = (row[column] or "").strip()
    try:
        return int(value)
    except ValueError:
        raise DataError(source, f"line {line}: {column} must be an integer, not {value!r}", field=column) from None
