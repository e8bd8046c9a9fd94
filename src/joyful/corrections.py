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

A correction has the form of its model's labels (:mod:`joyful.data.tasks`): a class name,
the tuple of labels present (multilabel; ``()`` for none) or a score (regression). Class
names are stored as they always were, so stores written before the other tasks read
unchanged; the other forms are JSON objects in the same column (``{"labels": [...]}``,
``{"score": x}``), which no class name may spell (such a name is refused), so every row
reads back as exactly what was stored.

The service also keeps each prediction it served for a stored dialogue (table
``predictions``: label, confidence, whether it was uncertain, which modalities were
missing), so that uncertain ones form a review queue that survives a restart
(:meth:`CorrectionStore.review_queue`; a correction answers an item) and so that the
live stream can be monitored for drift (:mod:`joyful.monitoring`). Stores written before
that table existed gain it when opened.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import threading
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from joyful.data.label_forms import SENTIMENT_RANGE, Label, label_kind
from joyful.data.schema import Dialogue
from joyful.errors import DataError, JoyfulError

#: Bumped when the tables change; a store written by a newer joyful is refused, not misread.
#: Version 2 added ``predictions``; a version-1 store is upgraded by adding it.
SCHEMA_VERSION = 2

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
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY,
    dialogue TEXT NOT NULL,
    idx INTEGER NOT NULL,
    speaker TEXT NOT NULL,
    text TEXT,
    label TEXT NOT NULL,
    confidence REAL,
    uncertain INTEGER,
    probabilities TEXT,
    missing TEXT NOT NULL,
    answered INTEGER NOT NULL DEFAULT 0,
    served TEXT NOT NULL,
    UNIQUE (dialogue, idx)
);
"""
#: Each table and the column naming the dialogue a row belongs to, in deletion order.
_DIALOGUE_COLUMN = {"corrections": "dialogue", "features": "dialogue", "dialogues": "id"}


@dataclass(frozen=True)
class Correction:
    """One human judgement: utterance ``index`` (its position in the dialogue) has ``label``."""

    dialogue: str
    index: int
    label: Label
    """A class name, a tuple of labels present, or a score (see the module docstring)."""
    annotator: str | None
    created: str
    """When it was made, ISO-8601 in UTC."""


@dataclass(frozen=True)
class ServedPrediction:
    """A prediction as the service served it, with what the monitor and the review queue need."""

    dialogue: str
    index: int
    speaker: str
    label: Label
    confidence: float | None
    uncertain: bool | None
    """``None`` when no confidence threshold applied."""
    probabilities: dict[str, float] | None
    missing: dict[str, bool]
    """Per modality key of the model: was it missing for this utterance."""
    text: str | None = None
    """Only when the service keeps texts."""
    corrected: Label | None = None
    """The latest correction of this utterance, if any (filled when read back)."""


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
        label: Label | list[str],
        annotator: str | None = None,
        *,
        labels: Collection[str] | None = None,
        task: str | None = None,
    ) -> Correction:
        """Record that utterance ``index`` of ``dialogue`` is ``label``.

        The index must exist in the dialogue when the dialogue is stored (a correction of
        a dialogue not yet stored is kept, so annotators can work ahead of the service).
        ``label`` is checked by :func:`checked_label` against ``task`` and ``labels`` (the
        model's, when known).
        """
        source = str(self.path)
        if not isinstance(dialogue, str) or not dialogue:
            raise DataError(source, "dialogue id must be a non-empty string", field="dialogue")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise DataError(source, f"index must be a non-negative integer, not {index!r}", dialogue=dialogue, field="index")
        label = checked_label(label, task, labels, source, dialogue, index)
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
                (dialogue, index, _encode_label(label), annotator, created),
            )
            self._db.execute("UPDATE predictions SET answered = 1 WHERE dialogue = ? AND idx = ?", (dialogue, index))
        return Correction(dialogue, index, label, annotator, created)

    def corrections(self, dialogue: str | None = None) -> list[Correction]:
        """Every correction (of one dialogue, if given), oldest first."""
        query = "SELECT dialogue, idx, label, annotator, created FROM corrections"
        args: tuple = ()
        if dialogue is not None:
            query, args = query + " WHERE dialogue = ?", (dialogue,)
        with self._lock:
            return [_correction(row) for row in self._db.execute(query + " ORDER BY id", args)]

    # ------------------------------------------------------------------ served predictions
    def save_predictions(self, predictions: list[ServedPrediction], *, replace_dialogue: bool = False) -> None:
        """Keep served predictions (one dialogue's); a later prediction of an utterance replaces the earlier.

        ``replace_dialogue`` first drops every earlier prediction of that dialogue (a whole
        dialogue predicted again). An utterance that already has a correction is not put
        back in the review queue.
        """
        if not predictions:
            return
        served = datetime.now(UTC).isoformat(timespec="milliseconds")
        rows = [
            (
                p.dialogue, p.index, p.speaker, p.text, _encode_label(p.label), p.confidence,
                None if p.uncertain is None else int(p.uncertain),
                None if p.probabilities is None else json.dumps(p.probabilities), json.dumps(p.missing),
                p.dialogue, p.index, served,
            )
            for p in predictions
        ]
        with self._lock, self._transaction():
            if replace_dialogue:
                self._db.execute("DELETE FROM predictions WHERE dialogue = ?", (predictions[0].dialogue,))
            self._db.executemany(
                "INSERT OR REPLACE INTO predictions (dialogue, idx, speaker, text, label, confidence, uncertain, "
                "probabilities, missing, answered, served) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "EXISTS (SELECT 1 FROM corrections WHERE dialogue = ? AND idx = ?), ?)",
                rows,
            )

    def review_queue(self) -> list[ServedPrediction]:
        """Uncertain predictions nobody has answered with a correction yet, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_PREDICTION_COLUMNS}, NULL FROM predictions WHERE uncertain = 1 AND answered = 0 ORDER BY id"
            ).fetchall()
        return [_served(r) for r in rows]

    def recent_predictions(self, n: int | None = None) -> list[ServedPrediction]:
        """The last ``n`` predictions served (all without ``n``), oldest first, each with its latest correction."""
        latest = "(SELECT c.label FROM corrections c WHERE c.dialogue = p.dialogue AND c.idx = p.idx ORDER BY c.id DESC LIMIT 1)"
        query = f"SELECT {_PREDICTION_COLUMNS}, {latest} FROM predictions p ORDER BY id DESC"
        with self._lock:
            rows = self._db.execute(query + (" LIMIT ?" if n is not None else ""), (n,) if n is not None else ()).fetchall()
        return [_served(r) for r in reversed(rows)]

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
            json.dumps([_label_json(lab) for lab in d.labels]) if d.labels is not None else None,
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
                labels: list[Label | None] = [None] * len(d)
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
                # served predictions go with their dialogue (not counted: they are copies of what it was told)
                predictions = self._db.execute("DELETE FROM predictions WHERE dialogue = ?", (dialogue_id,)).rowcount
            if any(removed.values()) or predictions:
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
        return [_correction(r) for r in rows]

    def _dialogue(self, dialogue_id: str) -> Dialogue | None:
        row = self._db.execute(
            "SELECT speakers, texts, labels, origin FROM dialogues WHERE id = ?", (dialogue_id,)
        ).fetchone()
        if row is None:
            return None
        speakers, texts, labels, origin = (None if v is None else json.loads(v) for v in row)
        if labels is not None:
            labels = [_label_from_json(lab) for lab in labels]
        features = {
            m: np.load(io.BytesIO(blob), allow_pickle=False)
            for m, blob in self._db.execute("SELECT modality, array FROM features WHERE dialogue = ?", (dialogue_id,))
        }
        return Dialogue(id=dialogue_id, speakers=speakers, features=features, texts=texts, labels=labels, origin=origin)


def checked_label(
    label: object, task: str | None, labels: Collection[str] | None, source: str, dialogue: str, index: int
) -> Label:
    """``label`` in its task's form, or a :class:`DataError` naming the ``label`` field.

    Without ``task`` the form decides (a string, a list, a number; :func:`label_kind`);
    with it, the form must be the task's. A list becomes a tuple, in the order of
    ``labels`` when given; an integer is a class name for a classification model (as the
    JSONL reader takes it) and a score otherwise. Scores are on the sentiment scale.
    """

    def bad(problem: str) -> DataError:
        return DataError(source, problem, dialogue=dialogue, index=index, field="label")

    if type(label) is int and task == "classification":
        label = str(label)
    if isinstance(label, list):
        label = tuple(label)
    if isinstance(label, bool) or not isinstance(label, (str, tuple, int, float)):
        raise bad(f"label must be a class name, a list of labels or a score, not {label!r}")
    kind = label_kind(label)
    if task is not None and kind != task:
        raise bad(f"the model is a {task} model, so the label must be {_FORMS[task]}, not {label!r}")
    if kind == "classification":
        if not label:
            raise bad("label must be a non-empty string")
        if _decode_label(label) != label:
            raise bad(f"a class name may not be written {label!r}, the store's encoding of another kind of label")
        if labels is not None and label not in labels:
            raise bad(f"unknown label {label!r}; the model's labels are {', '.join(labels)}")
        return label
    if kind == "multilabel":
        wrong = next((x for x in label if not isinstance(x, str) or not x), None)
        if wrong is not None:
            raise bad(f"a list of labels must hold non-empty strings, not {wrong!r}")
        if len(set(label)) != len(label):
            raise bad(f"label {next(x for x in label if label.count(x) > 1)!r} appears twice in the list")
        if labels is None:
            return label
        unknown = [x for x in label if x not in labels]
        if unknown:
            raise bad(f"unknown label {unknown[0]!r}; the model's labels are {', '.join(labels)}")
        return tuple(x for x in labels if x in label)
    low, high = SENTIMENT_RANGE
    if not math.isfinite(label) or not low <= label <= high:
        raise bad(f"a score must be a number in [{low:g}, {high:g}], not {label!r}")
    return float(label)


_FORMS = {
    "classification": "one class name",
    "multilabel": "a list of the labels present ([] for none)",
    "regression": "a number (the score)",
}


def _encode_label(label: Label) -> str:
    """A checked label as the ``corrections.label`` column holds it (see the module docstring)."""
    if isinstance(label, str):
        return label
    if isinstance(label, tuple):
        return json.dumps({"labels": list(label)}, ensure_ascii=False)
    return json.dumps({"score": label})


def _decode_label(text: str) -> Label:
    """The label a ``corrections.label`` value stands for; anything that is not an encoded list or score is a class name."""
    if not text.startswith("{"):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, dict) and len(value) == 1:
        if isinstance(value.get("labels"), list) and all(isinstance(x, str) for x in value["labels"]):
            return tuple(value["labels"])
        score = value.get("score")
        if type(score) in (int, float):
            return float(score)
    return text


_PREDICTION_COLUMNS = "dialogue, idx, speaker, label, confidence, uncertain, probabilities, missing, text"


def _served(row: tuple) -> ServedPrediction:
    dialogue, index, speaker, label, confidence, uncertain, probabilities, missing, text, corrected = row
    return ServedPrediction(
        dialogue, index, speaker, _decode_label(label), confidence, None if uncertain is None else bool(uncertain),
        None if probabilities is None else json.loads(probabilities), json.loads(missing), text,
        None if corrected is None else _decode_label(corrected),
    )


def _correction(row: tuple) -> Correction:
    dialogue, index, label, annotator, created = row
    return Correction(dialogue, index, _decode_label(label), annotator, created)


def _label_json(label: Label | None) -> str | list[str] | float | None:
    """A dialogue's label for its JSON column: JSON tells a class name from a list or a score by itself."""
    if label is None or isinstance(label, str):
        return label
    return list(label) if isinstance(label, (tuple, list)) else float(label)


def _label_from_json(value: object) -> Label | None:
    if isinstance(value, list):
        return tuple(value)
    return float(value) if type(value) in (int, float) else value


def _array_bytes(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def _statements(script: str) -> list[str]:
    """The ``;``-separated statements of a schema script (``executescript`` would commit our transaction)."""
    return [s.strip() for s in script.split(";") if s.strip()]


__all__ = ["Correction", "CorrectionStore", "ServedPrediction", "checked_label"]
