"""Human corrections of predicted labels, and the dialogues they refer to, in one SQLite file.

The prediction service writes here (every dialogue it predicts, and every correction a
user makes) and ``joyful finetune`` reads here (:meth:`CorrectionStore.corrected_dialogues`),
so the two only share a file, never a process. What is kept is what fine-tuning needs:
speakers, feature vectors and labels. Utterance texts are kept only when asked for
(``keep_text``), and :meth:`CorrectionStore.delete_dialogue` erases a dialogue so that
none of its bytes remain in the database file (``secure_delete``, ``VACUUM`` and a
truncating WAL checkpoint), because a user who asks to be forgotten must be.

Feature matrices are stored as ``numpy.save`` bytes of float32 arrays with
``allow_pickle=False``: opening a store never runs code, and NaN rows (a modality missing
for an utterance) come back exactly as they went in.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from joyful.data.schema import Dialogue
from joyful.errors import DataError, JoyfulError

#: Bumped when the tables change; a store written by a newer joyful is refused, not misread.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dialogues (
    id TEXT PRIMARY KEY,
    speakers TEXT NOT NULL,
    texts TEXT,
    labels TEXT,
    origin TEXT,
    saved TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS features (
    dialogue TEXT NOT NULL,
    modality TEXT NOT NULL,
    array BLOB NOT NULL,
    PRIMARY KEY (dialogue, modality)
);
CREATE TABLE IF NOT EXISTS corrections (
    id INTEGER PRIMARY KEY,
    dialogue TEXT NOT NULL,
    idx INTEGER NOT NULL,
    label TEXT NOT NULL,
    annotator TEXT,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS corrections_by_dialogue ON corrections (dialogue, id);
"""
#: Each table and the column naming the dialogue a row belongs to, in deletion order.
_DIALOGUE_COLUMN = {"corrections": "dialogue", "features": "dialogue", "dialogues": "id"}


@dataclass(frozen=True)
class Correction:
    """One human judgement: utterance ``index`` (its position in the dialogue) has ``label``."""

    dialogue: str
    index: int
    label: str
    annotator: str | None
    created: str
    """When it was made, ISO-8601 in UTC."""


class CorrectionStore:
    """Dialogues and corrections in a SQLite file, shared safely by threads and processes.

    One connection is used under a lock, so the store can be handed to a threaded web
    server; WAL mode and a busy timeout let a ``joyful correct`` process write while the
    service runs. The file is created readable by its owner only, since it holds what
    users said (as features, and as text with ``keep_text``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise JoyfulError(f"cannot open the correction store {self.path}: {e}") from None
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JoyfulError(f"{self.path}: written by a newer joyful (store version {version}); upgrade joyful")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA temp_store=MEMORY")  # VACUUM's copy never touches a temporary file
            with self._transaction():
                for statement in _statements(_SCHEMA):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise JoyfulError(f"{self.path}: cannot be used as a correction store ({e})") from None
        except JoyfulError:
            self._db.close()
            raise

    # ------------------------------------------------------------------ corrections
    def add_correction(
        self,
        dialogue: str,
        index: int,
        label: str,
        annotator: str | None = None,
        *,
        labels: Collection[str] | None = None,
    ) -> Correction:
        """Record that utterance ``index`` of ``dialogue`` is ``label``.

        The index must exist in the dialogue when the dialogue is stored (a correction of
        a dialogue not yet stored is kept, so annotators can work ahead of the service);
        with ``labels`` (the model's label set) the label must be one of them.
        """
        source = str(self.path)
        if not isinstance(dialogue, str) or not dialogue:
            raise DataError(source, "dialogue id must be a non-empty string", field="dialogue")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise DataError(source, f"index must be a non-negative integer, not {index!r}", dialogue=dialogue, field="index")
        if not isinstance(label, str) or not label:
            raise DataError(source, "label must be a non-empty string", dialogue=dialogue, index=index, field="label")
        if labels is not None and label not in labels:
            raise DataError(
                source, f"unknown label {label!r}; the model's labels are {', '.join(labels)}",
                dialogue=dialogue, index=index, field="label",
            )
        created = datetime.now(UTC).isoformat(timespec="milliseconds")
        with self._lock, self._transaction():
            stored = self._dialogue(dialogue)
            if stored is not None and index not in stored.positions():
                raise DataError(
                    source, f"no utterance {index}; the stored dialogue has {len(stored)}",
                    dialogue=dialogue, field="index",
                )
            self._db.execute(
                "INSERT INTO corrections (dialogue, idx, label, annotator, created) VALUES (?, ?, ?, ?, ?)",
                (dialogue, index, label, annotator, created),
            )
        return Correction(dialogue, index, label, annotator, created)

    def corrections(self, dialogue: str | None = None) -> list[Correction]:
        """Every correction (of one dialogue, if given), oldest first."""
        query = "SELECT dialogue, idx, label, annotator, created FROM corrections"
        args: tuple = ()
        if dialogue is not None:
            query, args = query + " WHERE dialogue = ?", (dialogue,)
        with self._lock:
            return [Correction(*row) for row in self._db.execute(query + " ORDER BY id", args)]

    # ------------------------------------------------------------------ dialogues
    def save_dialogue(self, d: Dialogue, *, keep_text: bool = False) -> None:
        """Store (or replace) a dialogue: speakers, features, labels, and texts only with ``keep_text``.

        Refused when the new version would leave an existing correction pointing past its
        utterances, since fine-tuning would otherwise silently lose that correction.
        """
        positions = set(d.positions())
        row = (
            d.id,
            json.dumps(list(d.speakers)),
            json.dumps(list(d.texts)) if keep_text and d.texts is not None else None,
            json.dumps(list(d.labels)) if d.labels is not None else None,
            json.dumps(list(d.origin)) if d.origin is not None else None,
            datetime.now(UTC).isoformat(timespec="milliseconds"),
        )
        arrays = [(d.id, m, _array_bytes(x)) for m, x in sorted(d.features.items())]
        with self._lock, self._transaction():
            lost = sorted({c.index for c in self._corrections_of(d.id)} - positions)
            if lost:
                raise DataError(
                    str(self.path),
                    f"utterance {lost[0]} has a correction but the new version has {len(d)} utterances; "
                    "delete the stored dialogue first",
                    dialogue=d.id, field="utterances",
                )
            self._db.execute("DELETE FROM features WHERE dialogue = ?", (d.id,))
            self._db.execute("INSERT OR REPLACE INTO dialogues VALUES (?, ?, ?, ?, ?, ?)", row)
            self._db.executemany("INSERT INTO features VALUES (?, ?, ?)", arrays)

    def dialogue(self, dialogue_id: str) -> Dialogue | None:
        """The stored dialogue, or ``None`` if there is none by that id."""
        with self._lock:
            return self._dialogue(dialogue_id)

    def dialogue_ids(self) -> list[str]:
        """Ids of every stored dialogue, sorted."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM dialogues ORDER BY id")]

    def corrected_dialogues(self) -> list[Dialogue]:
        """Stored dialogues with at least one correction, labelled by their latest correction per utterance.

        Utterances nobody corrected get ``None`` (unlabelled), so fine-tuning learns only
        from human judgements, never from the model's own predictions.
        """
        with self._lock:
            ids = [r[0] for r in self._db.execute(
                "SELECT DISTINCT c.dialogue FROM corrections c JOIN dialogues d ON d.id = c.dialogue ORDER BY c.dialogue"
            )]
            out = []
            for did in ids:
                d = self._dialogue(did)
                where = {pos: i for i, pos in enumerate(d.positions())}
                labels: list[str | None] = [None] * len(d)
                for c in self._corrections_of(did):  # oldest first: the latest wins
                    labels[where[c.index]] = c.label
                d.labels = labels
                out.append(d)
            return out

    def delete_dialogue(self, dialogue_id: str) -> dict[str, int]:
        """Remove the dialogue, its features and its corrections; rows removed per table.

        Afterwards no byte of it is left in the file: ``secure_delete`` zeroes the freed
        content, ``VACUUM`` rebuilds the file without the freed pages, and a truncating
        checkpoint empties the write-ahead log that may still hold earlier versions.
        """
        with self._lock:
            with self._transaction():
                removed = {
                    table: self._db.execute(f"DELETE FROM {table} WHERE {column} = ?", (dialogue_id,)).rowcount
                    for table, column in _DIALOGUE_COLUMN.items()
                }
            if any(removed.values()):
                self._db.execute("VACUUM")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> CorrectionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, taken at once (IMMEDIATE) so two processes never deadlock upgrading."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _corrections_of(self, dialogue_id: str) -> list[Correction]:
        rows = self._db.execute(
            "SELECT dialogue, idx, label, annotator, created FROM corrections WHERE dialogue = ? ORDER BY id",
            (dialogue_id,),
        )
        return [Correction(*r) for r in rows]

    def _dialogue(self, dialogue_id: str) -> Dialogue | None:
        row = self._db.execute(
            "SELECT speakers, texts, labels, origin FROM dialogues WHERE id = ?", (dialogue_id,)
        ).fetchone()
        if row is None:
            return None
        speakers, texts, labels, origin = (None if v is None else json.loads(v) for v in row)
        features = {
            m: np.load(io.BytesIO(blob), allow_pickle=False)
            for m, blob in self._db.execute("SELECT modality, array FROM features WHERE dialogue = ?", (dialogue_id,))
        }
        return Dialogue(id=dialogue_id, speakers=speakers, features=features, texts=texts, labels=labels, origin=origin)


def _array_bytes(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def _statements(script: str) -> list[str]:
    """The ``;``-separated statements of a schema script (``executescript`` would commit our transaction)."""
    return [s.strip() for s in script.split(";") if s.strip()]


__all__ = ["Correction", "CorrectionStore"]
