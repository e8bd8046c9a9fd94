"""One in-memory dialogue schema that every reader produces and every model consumes.

Features are kept per modality as ``(n_utterances, width)`` float32 arrays rather than
per-utterance objects, so that batching is a concatenation and never a Python loop
over utterances.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from joyful.errors import DataError

#: Modality keys, in the order the model concatenates them (the paper's [v; a; t]).
MODALITIES: tuple[str, ...] = ("v", "a", "t")
MODALITY_NAMES = {"t": "text", "a": "audio", "v": "visual"}


@dataclass
class Dialogue:
    """A dialogue: who spoke, what features each utterance has, and (optionally) labels.

    ``labels`` is ``None`` for unlabelled dialogues (prediction); individual entries may
    be ``None`` when only some utterances are labelled.
    """

    id: str
    speakers: list[str]
    features: dict[str, np.ndarray] = field(default_factory=dict)
    texts: list[str] | None = None
    labels: list | None = None
    """Per utterance: a class name, a tuple of labels present (multilabel) or a score (regression); see
    :mod:`joyful.data.tasks`."""
    origin: list[int] | None = None
    """Position of each utterance in the dialogue as read, kept when a label set drops some."""
    attributes: list[dict[str, str]] | None = None
    """Per utterance: who or what it belongs to (``{"gender": "F"}``), for per-group scores.
    Dialogue-level attributes are merged into each utterance's when read (the utterance's
    own value wins), so every consumer sees one flat mapping per utterance."""

    def __len__(self) -> int:
        return len(self.speakers)

    def validate(self, source: str) -> None:
        """Raise :class:`DataError` naming file, dialogue and field for any inconsistency."""
        n = len(self.speakers)
        if n == 0:
            raise DataError(source, "dialogue has no utterances", dialogue=self.id, field="utterances")
        for i, s in enumerate(self.speakers):
            if s is None or (isinstance(s, str) and not s.strip()):
                raise DataError(source, "speaker is missing", dialogue=self.id, field="speaker", index=i)
        if self.texts is not None:
            if len(self.texts) != n:
                raise DataError(source, f"{len(self.texts)} texts for {n} utterances", dialogue=self.id, field="text")
            for i, text in enumerate(self.texts):
                if not isinstance(text, str):
                    raise DataError(source, "text is not a string", dialogue=self.id, field="text", index=i)
        if self.labels is not None and len(self.labels) != n:
            raise DataError(source, f"{len(self.labels)} labels for {n} utterances", dialogue=self.id, field="label")
        if self.attributes is not None and len(self.attributes) != n:
            raise DataError(source, f"{len(self.attributes)} attribute sets for {n} utterances", dialogue=self.id, field="attributes")
        for m, x in self.features.items():
            name = feature_field(m)
            if x.ndim != 2 or x.shape[0] != n:
                raise DataError(
                    source,
                    f"expected {n} vectors of one width, got an array of shape {tuple(x.shape)}",
                    dialogue=self.id,
                    field=name,
                )
            if x.shape[1] == 0:
                raise DataError(source, "feature vectors are empty", dialogue=self.id, field=name)
            bad = ~np.isfinite(x) & ~missing_rows(x)[:, None]
            if bad.any():
                i = int(np.argwhere(bad.any(axis=1))[0, 0])
                raise DataError(source, "feature vector holds NaN or infinite values", dialogue=self.id, field=name, index=i)

    def subset(self, keep: np.ndarray) -> Dialogue:
        """The dialogue restricted to the utterances where ``keep`` is true."""
        idx = np.flatnonzero(keep)
        positions = self.positions()
        return Dialogue(
            id=self.id,
            speakers=[self.speakers[i] for i in idx],
            features={m: x[idx] for m, x in self.features.items()},
            texts=None if self.texts is None else [self.texts[i] for i in idx],
            labels=None if self.labels is None else [self.labels[i] for i in idx],
            origin=[positions[i] for i in idx],
            attributes=None if self.attributes is None else [self.attributes[i] for i in idx],
        )

    def positions(self) -> list[int]:
        """Each utterance's position in the dialogue as the user wrote it."""
        return list(range(len(self))) if self.origin is None else self.origin


def _label_text(label) -> str:
    """A label as hashed: a class name, ``+``-joined emotions (``[]`` for none), or a score's repr."""
    if label is None:
        return ""
    if isinstance(label, tuple):
        return "[" + "+".join(label) + "]"
    return label if isinstance(label, str) else repr(float(label))


def missing_rows(x: np.ndarray) -> np.ndarray:
    """Which utterances lack this modality: a row that is NaN throughout marks it missing.

    NaN rows (not zeros) keep "no face was seen" distinct from "a face with all-zero
    features", and they survive every array operation the readers do; the model swaps
    them for a learned missing-modality embedding. A row with only some NaN values is
    corrupt, not missing, and :meth:`Dialogue.validate` rejects it.
    """
    return np.isnan(x).all(axis=1) if x.shape[1] else np.zeros(x.shape[0], dtype=bool)


def missing_matrix(n: int, width: int) -> np.ndarray:
    """Features for ``n`` utterances that all lack the modality."""
    return np.full((n, width), np.nan, dtype=np.float32)


def feature_field(modality: str) -> str:
    """The field name users see for a modality's vectors (matches the JSONL format)."""
    return {"t": "text_features", "a": "audio", "v": "visual"}.get(modality, modality)


@dataclass
class DialogueSet:
    """Dialogues read from one source, with the source kept for error messages."""

    dialogues: list[Dialogue]
    source: str

    def __len__(self) -> int:
        return len(self.dialogues)

    def __iter__(self):
        return iter(self.dialogues)

    @property
    def n_utterances(self) -> int:
        return sum(len(d) for d in self.dialogues)

    def widths(self) -> dict[str, int]:
        """Feature width per modality, checked to be the same in every dialogue."""
        widths: dict[str, int] = {}
        first: dict[str, str] = {}
        for d in self.dialogues:
            for m, x in d.features.items():
                w = int(x.shape[1])
                if m not in widths:
                    widths[m], first[m] = w, d.id
                elif widths[m] != w:
                    raise DataError(
                        self.source,
                        f"width {w} differs from width {widths[m]} in dialogue {first[m]!r}",
                        dialogue=d.id,
                        field=feature_field(m),
                    )
        return widths

    def validate(self) -> None:
        """Validate every dialogue and the consistency of widths and ids across them."""
        if not self.dialogues:
            raise DataError(self.source, "no dialogues found")
        seen: set[str] = set()
        for d in self.dialogues:
            if d.id in seen:
                raise DataError(self.source, "dialogue id appears twice", dialogue=d.id, field="dialogue")
            seen.add(d.id)
            d.validate(self.source)
        self.widths()

    def labels_found(self) -> list[str]:
        """Every class name that occurs (alone, or in a multi-label set), sorted, for building a custom label set."""
        found: set[str] = set()
        for d in self.dialogues:
            for lab in d.labels or ():
                if isinstance(lab, str):
                    found.add(lab)
                elif isinstance(lab, tuple):
                    found.update(lab)
        return sorted(found)

    def labelled(self) -> list[tuple[str, object]]:
        """``(dialogue id, label)`` of every labelled utterance, for deciding the task."""
        return [(d.id, lab) for d in self.dialogues for lab in d.labels or () if lab is not None]

    def data_hash(self) -> str:
        """A content hash (ids, speakers, labels, texts, features) recorded with every run."""
        h = hashlib.sha256()
        for d in self.dialogues:
            h.update(d.id.encode())
            h.update("\x1f".join(d.speakers).encode())
            if d.labels is not None:
                h.update("\x1f".join(_label_text(x) for x in d.labels).encode())
            if d.texts is not None:
                h.update("\x1f".join(d.texts).encode())
            for m in sorted(d.features):
                h.update(m.encode())
                h.update(np.ascontiguousarray(d.features[m], dtype=np.float32).tobytes())
        return h.hexdigest()[:16]
