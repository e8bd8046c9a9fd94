"""The extraction manifest: one row per utterance, naming its dialogue, speaker, text and recording.

CSV (or TSV), or JSON Lines with the same fields. Required columns are ``dialogue``,
``index``, ``speaker`` and ``media``; ``text``, ``start``, ``end`` and ``label`` are
optional, and any of their values may be empty (an empty ``media`` means the utterance
has no recording, so no audio or visual features). Columns the format does not know are
kept on each row as ``extra`` rather than rejected, because manifests are usually
exported from corpus tooling that carries its own bookkeeping.

Everything that can be wrong with the manifest itself (rather than with a recording) is
found here, before any extraction starts, and raised as :class:`DataError` naming the
manifest, the row, the dialogue and the field.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joyful.errors import DataError

REQUIRED = ("dialogue", "index", "speaker", "media")
OPTIONAL = ("text", "start", "end", "label")


@dataclass(frozen=True)
class ManifestRow:
    """One utterance as the manifest gives it; ``media`` is resolved against the manifest's folder."""

    row: int
    """Line of the row in the manifest file (the header of a CSV is line 1)."""
    dialogue: str
    index: int
    speaker: str
    text: str
    media: Path | None
    media_name: str
    """``media`` as written in the manifest, for messages the user can match to the file."""
    start: float | None
    end: float | None
    label: str | None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    rows: list[ManifestRow]
    source: str

    def dialogues(self) -> dict[str, list[int]]:
        """Positions in :attr:`rows` per dialogue; dialogues in order of first appearance, utterances by ``index``."""
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(self.rows):
            groups.setdefault(r.dialogue, []).append(i)
        return {d: sorted(ids, key=lambda i: self.rows[i].index) for d, ids in groups.items()}


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Parse and validate a manifest; JSON Lines if the name ends in .jsonl/.ndjson/.json, else CSV."""
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(source, f"cannot read the manifest ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(source, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        records = _jsonl_records(text, source)
    else:
        records = _csv_records(text, source, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    base = path.resolve().parent
    rows = [_row(line, record, base, source) for line, record in records]
    if not rows:
        raise DataError(source, "the manifest lists no utterances")
    _check_unique(rows, source)
    _check_media_exist(rows, source)
    return Manifest(rows, source)


def _csv_records(text: str, source: str, delimiter: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(source, "the manifest is empty") from None
    except csv.Error as e:
        raise DataError(source, f"row 1: not valid CSV ({e})") from None
    header = [h.strip() for h in header]
    _check_columns(header, source)
    records = []
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) > len(header):
                raise DataError(source, f"row {line}: {len(values)} fields, but the header names {len(header)}")
            records.append((line, dict(zip(header, values + [""] * (len(header) - len(values)), strict=True))))
    except csv.Error as e:
        raise DataError(source, f"row {reader.line_num}: not valid CSV ({e})") from None
    return records


def _jsonl_records(text: str, source: str) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(source, f"row {line}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise DataError(source, f"row {line}: expected one JSON object per line")
        _check_columns(list(record), source, line)
        records.append((line, record))
    return records


def _check_columns(names: list[str], source: str, line: int | None = None) -> None:
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        where = "the header" if line is None else f"row {line}"
        raise DataError(
            source,
            f"{where} lacks the required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(required: {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)})",
            field=missing[0],
        )


def _row(line: int, record: dict[str, Any], base: Path, source: str) -> ManifestRow:
    dialogue = _string(record.get("dialogue"))
    if not dialogue:
        raise DataError(source, f"row {line}: dialogue id is empty", field="dialogue")

    def fail(problem: str, name: str, index: int | None = None) -> DataError:
        return DataError(source, f"row {line}: {problem}", dialogue=dialogue, field=name, index=index)

    index = _index(record.get("index"), fail)
    speaker = _string(record.get("speaker"))
    if not speaker:
        raise fail("speaker is empty", "speaker", index)
    start = _seconds(record.get("start"), "start", index, fail)
    end = _seconds(record.get("end"), "end", index, fail)
    if start is not None and end is not None and end <= start:
        raise fail(f"end {end:g} s is not after start {start:g} s", "end", index)
    media_name = _string(record.get("media"))
    media = None
    if media_name:
        media = Path(media_name).expanduser()
        media = media if media.is_absolute() else base / media
    elif start is not None or end is not None:
        raise fail("start/end given but media is empty", "media", index)
    label = _string(record.get("label")) or None
    extra = {k: v for k, v in record.items() if k not in REQUIRED and k not in OPTIONAL}
    text = _string(record.get("text"))
    return ManifestRow(line, dialogue, index, speaker, text, media, media_name, start, end, label, extra)


def _string(value: Any) -> str:
    """Cell as a stripped string; JSON numbers become their text, ``null`` becomes empty."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _index(value: Any, fail) -> int:
    if isinstance(value, bool):
        raise fail(f"index {value!r} is not a whole number", "index")
    if isinstance(value, int):
        number = value
    else:
        text = _string(value)
        try:
            number = int(text)
        except ValueError:
            raise fail(f"index {text!r} is not a whole number" if text else "index is empty", "index") from None
    if number < 0:
        raise fail(f"index {number} is negative", "index")
    return number


def _seconds(value: Any, name: str, index: int, fail) -> float | None:
    if isinstance(value, bool):
        raise fail(f"{name} {value!r} is not a number of seconds", name, index)
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = _string(value)
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            raise fail(f"{name} {text!r} is not a number of seconds", name, index) from None
    if not math.isfinite(number) or number < 0:
        raise fail(f"{name} {number!r} must be a finite, non-negative number of seconds", name, index)
    return number


def _check_unique(rows: list[ManifestRow], source: str) -> None:
    seen: dict[tuple[str, int], int] = {}
    for r in rows:
        first = seen.setdefault((r.dialogue, r.index), r.row)
        if first != r.row:
            raise DataError(
                source,
                f"row {r.row}: index {r.index} already used in row {first}",
                dialogue=r.dialogue,
                field="index",
                index=r.index,
            )


def _check_media_exist(rows: list[ManifestRow], source: str) -> None:
    checked: dict[Path, bool] = {}
    for r in rows:
        if r.media is None:
            continue
        if r.media not in checked:
            checked[r.media] = r.media.is_file()
        if not checked[r.media]:
            raise DataError(
                source,
                f"row {r.row}: media file {r.media_name!r} not found (looked for {r.media})",
                dialogue=r.dialogue,
                field="media",
                index=r.index,
            )
