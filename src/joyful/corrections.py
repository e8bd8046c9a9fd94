"""Human corrections of predicted labels, the dialogues they refer to, and the service's shared state.

The prediction service writes here (every dialogue it may keep, every prediction it
served, every correction a user makes, its API tokens, its audit log and the state of
live streaming sessions) and ``joyful finetune`` reads here
(:meth:`CorrectionStore.corrected_dialogues`), so the two only share a database, never a
process. The database is a SQLite file (one host; the default) or PostgreSQL (a
``postgresql://`` URL: several hosts); :mod:`joyful.storage` holds the backends, and the
SQL here is written once for both.

What is kept is what fine-tuning needs, and no more than the dialogue's consent allows
(:data:`CONSENT_SCOPES`): speakers, feature vectors and labels; utterance texts only when
asked for (``keep_text``). Dialogue ids and speakers are stored as keyed pseudonyms
(:mod:`joyful.storage.pseudonyms`) unless the store was created with
``pseudonymise=False``; everything read back carries the pseudonyms, and every method
taking a dialogue id accepts the id as given or its pseudonym.
:meth:`CorrectionStore.delete_dialogue` and :meth:`CorrectionStore.purge` (retention)
erase so that none of the dialogue's bytes remain (SQLite: ``secure_delete``, ``VACUUM``
and a truncating WAL checkpoint; PostgreSQL: ``VACUUM`` of the tables touched), because a
user who asks to be forgotten must be.

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
live stream can be monitored for drift (:mod:`joyful.monitoring`). Stores written by
earlier versions are upgraded when opened (:mod:`joyful.storage.schema`).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from joyful.data.label_forms import SENTIMENT_RANGE, Label, label_kind
from joyful.data.schema import Dialogue
from joyful.errors import DataError, JoyfulError
from joyful.storage import open_backend
from joyful.storage.pseudonyms import is_pseudonym
from joyful.storage.schema import DIALOGUE_COLUMNS, SCHEMA_VERSION, prepare

#: What a person allowed to be done with their dialogue, from least to most.
#: ``none``: only labels are returned (a live session's dialogue is kept until the session
#: ends, then erased); ``store``: kept, reviewed, corrected, exported; ``train``: also
#: used by ``joyful finetune --corrections``.
CONSENT_SCOPES = ("none", "store", "train")


class StoreConflict(JoyfulError):
    """Another worker got there first: a live session exists already, or a session moved on."""


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


@dataclass(frozen=True)
class TokenRecord:
    """An API token as stored: never the token, only the digest the service made of it."""

    token_id: str
    name: str
    role: str
    digest: str
    created: str
    revoked: str | None
    """When it was revoked (ISO-8601 UTC), or ``None`` while it is valid."""


@dataclass(frozen=True)
class AuditEntry:
    """Who did what to which dialogue, and how it ended; never what the data said."""

    time: str
    token: str | None
    action: str
    dialogue: str | None
    outcome: str


@dataclass
class SessionState:
    """A live streaming session, kept in the store so a restart or another worker can continue it."""

    key: str
    """sha256 hex of the secret session id: the secret itself is never stored."""
    dialogue: str
    consent: str
    declared_speakers: list[str] | None
    text_vectors: str | None
    predictions: list[dict] = field(default_factory=list)
    context_texts: list[str] = field(default_factory=list)
    """The last texts the model's text context needs; erased with the session."""
    length: int = 0
    created: str = ""
    last_used: str = ""


class CorrectionStore:
    """The store at a SQLite path or a ``postgresql://`` URL, shared safely by threads, processes and hosts.

    One connection per store object is used under a lock, so a store can be handed to a
    threaded web server; every change is one transaction, and a read-check-write on a
    dialogue is serialised across processes, so concurrent workers lose no update.
    ``pseudonymise`` decides, for a new store, whether ids and speakers are stored as
    pseudonyms (the default) or as given; for an existing store ``None`` keeps its
    setting and a different value is an error (mixed ids could never be found again).
    """

    def __init__(self, location: str | os.PathLike, *, pseudonymise: bool | None = None) -> None:
        self._db = open_backend(location)
        self.backend = self._db.name
        """``"sqlite"`` or ``"postgresql"``."""
        self.location = self._db.location
        """Where the store is, password masked: for messages."""
        try:
            opened = prepare(self._db, pseudonymise)
            if opened.scrubbed:  # the names an upgrade replaced must not linger in freed space
                self._db.erase(list(DIALOGUE_COLUMNS))
        except JoyfulError:
            self._db.close()
            raise
        self._keys = opened.pseudonyms

    @property
    def pseudonymise(self) -> bool:
        """Whether this store keeps pseudonyms rather than the ids and speakers it is given."""
        return self._keys.active

    def dialogue_key(self, dialogue_id: str) -> str:
        """The id under which ``dialogue_id`` is stored: its pseudonym (itself if already one, or if not pseudonymising)."""
        return self._keys.dialogue(dialogue_id)

    def speaker_key(self, name: str) -> str:
        """The speaker as stored: its pseudonym (unchanged if already one, or if not pseudonymising)."""
        return self._keys.speaker(name)

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
        a dialogue not yet stored is kept, so annotators can work ahead of the service),
        and a dialogue stored with consent ``none`` may not be corrected: nothing beyond
        its labels was to be kept. ``label`` is checked by :func:`checked_label` against
        ``task`` and ``labels`` (the model's, when known).
        """
        source = self.location
        if not isinstance(dialogue, str) or not dialogue:
            raise DataError(source, "dialogue id must be a non-empty string", field="dialogue")
        key = self.dialogue_key(dialogue)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise DataError(source, f"index must be a non-negative integer, not {index!r}", dialogue=key, field="index")
        label = checked_label(label, task, labels, source, key, index)
        created = _now()
        with self._db.transaction() as db:
            db.serialise(key)
            if self._consent(key) == "none":
                raise DataError(source, "stored without consent to keep corrections (consent 'none')", dialogue=key, field="consent")
            stored = self._dialogue(key)
            if stored is not None and index not in stored.positions():
                raise DataError(
                    source, f"no utterance {index}; the stored dialogue has {len(stored)}",
                    dialogue=key, field="index",
                )
            db.execute(
                "INSERT INTO corrections (dialogue, idx, label, annotator, created) VALUES (?, ?, ?, ?, ?)",
                (key, index, _encode_label(label), annotator, created),
            )
            db.execute("UPDATE predictions SET answered = 1 WHERE dialogue = ? AND idx = ?", (key, index))
        return Correction(key, index, label, annotator, created)

    def corrections(self, dialogue: str | None = None) -> list[Correction]:
        """Every correction (of one dialogue, if given), oldest first."""
        query = "SELECT dialogue, idx, label, annotator, created FROM corrections"
        args: tuple = ()
        if dialogue is not None:
            query, args = query + " WHERE dialogue = ?", (self.dialogue_key(dialogue),)
        with self._db.transaction(write=False) as db:
            return [_correction(row) for row in db.execute(query + " ORDER BY id", args).fetchall()]

    # ------------------------------------------------------------------ served predictions
    def save_predictions(self, predictions: list[ServedPrediction], *, replace_dialogue: bool = False) -> None:
        """Keep served predictions (one dialogue's); a later prediction of an utterance replaces the earlier.

        ``replace_dialogue`` first drops every earlier prediction of that dialogue (a whole
        dialogue predicted again). An utterance that already has a correction is not put
        back in the review queue. Texts are dropped for a dialogue stored with consent ``none``.
        """
        if not predictions:
            return
        key = self.dialogue_key(predictions[0].dialogue)
        with self._db.transaction() as db:
            db.serialise(key)
            if replace_dialogue:
                db.execute("DELETE FROM predictions WHERE dialogue = ?", (key,))
            self._write_predictions(predictions, keep_text=self._consent(key) != "none")

    def review_queue(self) -> list[ServedPrediction]:
        """Uncertain predictions nobody has answered with a correction yet, oldest first; never a ``none`` dialogue's."""
        with self._db.transaction(write=False) as db:
            rows = db.execute(
                f"SELECT {_PREDICTION_COLUMNS}, NULL FROM predictions p WHERE uncertain = 1 AND answered = 0 "
                "AND NOT EXISTS (SELECT 1 FROM dialogues d WHERE d.id = p.dialogue AND d.consent = 'none') ORDER BY id"
            ).fetchall()
        return [_served(r) for r in rows]

    def recent_predictions(self, n: int | None = None) -> list[ServedPrediction]:
        """The last ``n`` predictions served (all without ``n``), oldest first, each with its latest correction."""
        latest = "(SELECT c.label FROM corrections c WHERE c.dialogue = p.dialogue AND c.idx = p.idx ORDER BY c.id DESC LIMIT 1)"
        query = f"SELECT {_PREDICTION_COLUMNS}, {latest} FROM predictions p ORDER BY id DESC"
        with self._db.transaction(write=False) as db:
            rows = db.execute(query + (" LIMIT ?" if n is not None else ""), (n,) if n is not None else ()).fetchall()
        return [_served(r) for r in reversed(rows)]

    # ------------------------------------------------------------------ dialogues
    def save_dialogue(self, d: Dialogue, *, keep_text: bool = False, consent: str = "store") -> None:
        """Store (or replace) a dialogue: speakers, features, labels, and texts only with ``keep_text``.

        ``consent`` is recorded with the first save and may not change later (a different
        scope is refused: withdrawing consent is a delete). Texts are never kept for
        ``none``. Refused when the new version would leave an existing correction pointing
        past its utterances, since fine-tuning would otherwise silently lose that correction.
        """
        key = self.dialogue_key(d.id)
        with self._db.transaction() as db:
            db.serialise(key)
            self._write_dialogue(key, d, keep_text=keep_text, consent=consent)

    def dialogue(self, dialogue_id: str) -> Dialogue | None:
        """The stored dialogue (ids and speakers as pseudonyms), or ``None`` if there is none by that id."""
        with self._db.transaction(write=False):
            return self._dialogue(self.dialogue_key(dialogue_id))

    def dialogue_consent(self, dialogue_id: str) -> str | None:
        """The consent scope the dialogue was stored with, or ``None`` if it is not stored."""
        with self._db.transaction(write=False):
            return self._consent(self.dialogue_key(dialogue_id))

    def dialogue_ids(self) -> list[str]:
        """Ids of every stored dialogue but those kept only for a live ``none`` session, sorted."""
        with self._db.transaction(write=False) as db:
            return [r[0] for r in db.execute("SELECT id FROM dialogues WHERE consent <> 'none' ORDER BY id").fetchall()]

    def corrected_dialogues(self, *, consent: Sequence[str] = ("train",)) -> list[Dialogue]:
        """Stored dialogues of the ``consent`` scopes with at least one correction, labelled by their latest correction per utterance.

        Only ``train`` by default: fine-tuning may use a dialogue only when its speaker
        allowed it. Utterances nobody corrected get ``None`` (unlabelled), so fine-tuning
        learns only from human judgements, never from the model's own predictions.
        """
        scopes = [_checked_consent(self.location, c, None) for c in consent]
        if not scopes:
            return []
        marks = ", ".join("?" * len(scopes))
        with self._db.transaction(write=False) as db:
            ids = [r[0] for r in db.execute(
                "SELECT DISTINCT c.dialogue FROM corrections c JOIN dialogues d ON d.id = c.dialogue "
                f"WHERE d.consent IN ({marks}) ORDER BY c.dialogue",
                scopes,
            ).fetchall()]
            out = []
            for did in ids:
                d = self._dialogue(did)
                if d is None:  # deleted by another worker since the query above (PostgreSQL reads no snapshot)
                    continue
                where = {pos: i for i, pos in enumerate(d.positions())}
                labels: list[Label | None] = [None] * len(d)
                for c in self._corrections_of(did):  # oldest first: the latest wins
                    labels[where[c.index]] = c.label
                d.labels = labels
                out.append(d)
            return out

    def delete_dialogue(self, dialogue_id: str) -> dict[str, int]:
        """Remove the dialogue, its features and its corrections; rows removed per table.

        Its served predictions and any live session state go too (not counted: they are
        copies of what it was told). Afterwards no byte of it is left in the database
        (see :meth:`~joyful.storage.base.Backend.erase`).
        """
        key = self.dialogue_key(dialogue_id)
        with self._db.transaction() as db:
            db.serialise(key)
            removed = {
                table: db.execute(f"DELETE FROM {table} WHERE {column} = ?", (key,)).rowcount
                for table, column in _COUNTED.items()
            }
            copies = sum(
                db.execute(f"DELETE FROM {table} WHERE dialogue = ?", (key,)).rowcount for table in ("predictions", "sessions")
            )
        if any(removed.values()) or copies:
            self._db.erase([*_COUNTED, "predictions", "sessions"])
        return removed

    def purge(self, older_than_days: float, *, now: datetime | None = None) -> dict[str, int]:
        """Retention: remove what was first stored more than ``older_than_days`` ago; rows removed per table.

        Dialogues first saved before the cut-off go with their features, predictions and
        corrections (a dialogue whose session is still live is left to that session), as
        do corrections made before it of dialogues never stored, and sessions idle since
        before it. Erased as securely as :meth:`delete_dialogue`. ``now`` defaults to the clock.
        """
        if not older_than_days >= 0:
            raise JoyfulError(f"retention must be a non-negative number of days, not {older_than_days!r}")
        cutoff = _stamp((now or datetime.now(UTC)) - timedelta(days=older_than_days))
        with self._db.transaction() as db:
            # every dialogue involved is locked first (in one order), as every other writer does
            involved = {r[0] for r in db.execute("SELECT dialogue FROM sessions WHERE last_used < ?", (cutoff,)).fetchall()}
            involved |= {r[0] for r in db.execute("SELECT id FROM dialogues WHERE created < ?", (cutoff,)).fetchall()}
            for key in sorted(involved):
                db.serialise(key)
            sessions = db.execute("DELETE FROM sessions WHERE last_used < ?", (cutoff,)).rowcount
            old = [r[0] for r in db.execute(
                "SELECT id FROM dialogues d WHERE created < ? AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.dialogue = d.id)",
                (cutoff,),
            ).fetchall()]
            removed = dict.fromkeys(["dialogues", "features", "predictions", "corrections"], 0)
            for key in old:
                for table, column in DIALOGUE_COLUMNS.items():
                    removed[table] += db.execute(f"DELETE FROM {table} WHERE {column} = ?", (key,)).rowcount
            removed["corrections"] += db.execute(
                "DELETE FROM corrections WHERE created < ? "
                "AND NOT EXISTS (SELECT 1 FROM dialogues d WHERE d.id = corrections.dialogue)",
                (cutoff,),
            ).rowcount
        removed["sessions"] = sessions
        if any(removed.values()):
            self._db.erase([*DIALOGUE_COLUMNS, "sessions"])
        return removed

    # ------------------------------------------------------------------ tokens
    def add_token(self, token_id: str, name: str, role: str, digest: str) -> None:
        """Keep a new token's digest (the service hashes; the token itself is never stored).

        A name in use by a token not revoked is refused, so ``revoke NAME`` is never ambiguous.
        """
        with self._db.transaction() as db:
            try:
                db.execute(
                    "INSERT INTO tokens (token_id, name, role, digest, created) VALUES (?, ?, ?, ?, ?)",
                    (token_id, name, role, digest, _now()),
                )
            except db.IntegrityError:
                raise JoyfulError(
                    f"{self.location}: a token named {name!r} (or with that id) exists already; revoke it first"
                ) from None

    def token_by_id(self, token_id: str) -> TokenRecord | None:
        with self._db.transaction(write=False) as db:
            row = db.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
        return None if row is None else TokenRecord(*row)

    def tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones included, oldest first."""
        with self._db.transaction(write=False) as db:
            return [TokenRecord(*r) for r in db.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY id").fetchall()]

    def revoke_token(self, name: str) -> bool:
        """Revoke the valid token called ``name``; whether there was one."""
        with self._db.transaction() as db:
            return db.execute("UPDATE tokens SET revoked = ? WHERE name = ? AND revoked IS NULL", (_now(), name)).rowcount > 0

    def active_tokens(self) -> int:
        """How many tokens are valid (the service refuses to listen openly while there are none)."""
        with self._db.transaction(write=False) as db:
            return int(db.execute("SELECT COUNT(*) FROM tokens WHERE revoked IS NULL").fetchone()[0])

    # ------------------------------------------------------------------ audit
    def audit(self, token: str | None, action: str, dialogue: str | None, outcome: str) -> None:
        """Log that ``token`` did ``action`` to ``dialogue`` (kept as its pseudonym) with ``outcome``, now."""
        key = None if dialogue is None else self.dialogue_key(dialogue)
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO audit (time, token, action, dialogue, outcome) VALUES (?, ?, ?, ?, ?)",
                (_now(), token, action, key, outcome),
            )

    def audit_log(self, *, limit: int | None = None) -> list[AuditEntry]:
        """The audit log (its last ``limit`` entries, when given), oldest first."""
        query = "SELECT time, token, action, dialogue, outcome FROM audit ORDER BY id DESC"
        with self._db.transaction(write=False) as db:
            rows = db.execute(query + (" LIMIT ?" if limit is not None else ""), (limit,) if limit is not None else ()).fetchall()
        return [AuditEntry(*r) for r in reversed(rows)]

    # ------------------------------------------------------------------ live sessions
    def open_session(self, state: SessionState) -> None:
        """Keep a new session's state; a dialogue that has a live session already is a :class:`StoreConflict`."""
        key = self.dialogue_key(state.dialogue)
        consent = _checked_consent(self.location, state.consent, key)
        speakers = None if state.declared_speakers is None else [self.speaker_key(s) for s in state.declared_speakers]
        stamp = _now()
        with self._db.transaction() as db:
            db.serialise(key)
            if db.execute("SELECT 1 FROM sessions WHERE dialogue = ? OR key = ?", (key, state.key)).fetchone():
                raise StoreConflict(f"dialogue {key} has a live session already")
            try:
                db.execute(
                    f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (state.key, key, consent, _json_or_none(speakers), state.text_vectors, json.dumps(state.predictions),
                     json.dumps(state.context_texts), state.length, state.created or stamp, stamp),
                )
            except db.IntegrityError:  # another host opened it in between
                raise StoreConflict(f"dialogue {key} has a live session already") from None

    def session(self, key: str) -> SessionState | None:
        with self._db.transaction(write=False):
            return self._session("key", key)

    def session_of_dialogue(self, dialogue_id: str) -> SessionState | None:
        with self._db.transaction(write=False):
            return self._session("dialogue", self.dialogue_key(dialogue_id))

    def touch_session(self, key: str) -> None:
        """Mark the session used now (idle eviction counts from here)."""
        with self._db.transaction() as db:
            db.execute("UPDATE sessions SET last_used = ? WHERE key = ?", (_now(), key))

    def end_session(self, key: str) -> SessionState | None:
        """Remove the session's state (and erase its texts); the state it had, or ``None``.

        The dialogue itself stays: the caller deletes it when its consent was ``none``.
        """
        with self._db.transaction() as db:
            state = self._session("key", key)
            if state is not None:
                db.serialise(state.dialogue)  # wait for an utterance being committed, so its state is the one returned
                state = self._session("key", key)
                db.execute("DELETE FROM sessions WHERE key = ?", (key,))
        if state is not None:
            self._db.erase(["sessions"], rebuild=False)
        return state

    def session_count(self) -> int:
        with self._db.transaction(write=False) as db:
            return int(db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])

    def idle_sessions(self, seconds: float) -> list[SessionState]:
        """Sessions not used for ``seconds`` or more, longest idle first."""
        cutoff = _stamp(datetime.now(UTC) - timedelta(seconds=seconds))
        with self._db.transaction(write=False) as db:
            rows = db.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE last_used <= ? ORDER BY last_used", (cutoff,)).fetchall()
        return [_session_state(r) for r in rows]

    def commit_utterance(
        self,
        state: SessionState,
        dialogue: Dialogue,
        predictions: list[ServedPrediction],
        *,
        keep_text: bool,
        expected_length: int,
    ) -> None:
        """Save the session's grown dialogue, its predictions and its new state in one transaction.

        Only if the stored state still has ``expected_length`` utterances: otherwise
        another worker added one first (or the session ended) and a :class:`StoreConflict`
        is raised with nothing written, so no utterance is ever lost or doubled.
        """
        key = self.dialogue_key(state.dialogue)
        if self.dialogue_key(dialogue.id) != key:
            raise DataError(self.location, "the dialogue is not the session's", dialogue=key, field="dialogue")
        speakers = None if state.declared_speakers is None else [self.speaker_key(s) for s in state.declared_speakers]
        with self._db.transaction() as db:
            db.serialise(key)
            moved = db.execute(
                "UPDATE sessions SET declared_speakers = ?, text_vectors = ?, predictions = ?, context_texts = ?, "
                "length = ?, last_used = ? WHERE key = ? AND length = ?",
                (_json_or_none(speakers), state.text_vectors, json.dumps(state.predictions), json.dumps(state.context_texts),
                 state.length, _now(), state.key, expected_length),
            ).rowcount
            if moved != 1:
                raise StoreConflict(f"session of dialogue {key} changed meanwhile (expected {expected_length} utterances)")
            keep = keep_text and state.consent != "none"
            self._write_dialogue(key, dialogue, keep_text=keep, consent=state.consent)
            self._write_predictions(predictions, keep_text=keep)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CorrectionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals (inside a transaction)
    def _write_dialogue(self, key: str, d: Dialogue, *, keep_text: bool, consent: str) -> None:
        source = self.location
        consent = _checked_consent(source, consent, key)
        stored = self._consent(key)
        if stored is not None and stored != consent:
            raise DataError(
                source, f"stored with consent {stored!r}, not {consent!r}; withdrawing or widening consent means deleting it first",
                dialogue=key, field="consent",
            )
        lost = sorted({c.index for c in self._corrections_of(key)} - set(d.positions()))
        if lost:
            raise DataError(
                source,
                f"utterance {lost[0]} has a correction but the new version has {len(d)} utterances; "
                "delete the stored dialogue first",
                dialogue=key, field="utterances",
            )
        now = _now()
        row = (
            key,
            json.dumps([self.speaker_key(s) for s in d.speakers]),
            json.dumps(list(d.texts)) if keep_text and consent != "none" and d.texts is not None else None,
            json.dumps([_label_json(lab) for lab in d.labels]) if d.labels is not None else None,
            json.dumps(list(d.origin)) if d.origin is not None else None,
            now, consent, now,
        )
        self._db.execute("DELETE FROM features WHERE dialogue = ?", (key,))
        self._db.execute(
            "INSERT INTO dialogues (id, speakers, texts, labels, origin, saved, consent, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET speakers = excluded.speakers, texts = excluded.texts, labels = excluded.labels, "
            "origin = excluded.origin, saved = excluded.saved",
            row,
        )
        self._db.executemany(
            'INSERT INTO features (dialogue, modality, "array") VALUES (?, ?, ?)',
            [(key, m, _array_bytes(x)) for m, x in sorted(d.features.items())],
        )

    def _write_predictions(self, predictions: list[ServedPrediction], *, keep_text: bool) -> None:
        served = _now()
        rows = []
        for p in predictions:
            key = self.dialogue_key(p.dialogue)
            rows.append((
                key, p.index, self.speaker_key(p.speaker), p.text if keep_text else None, _encode_label(p.label),
                p.confidence, None if p.uncertain is None else int(p.uncertain),
                _json_or_none(p.probabilities), json.dumps(p.missing), key, p.index, served,
            ))
        # a later prediction of an utterance replaces the earlier one, and so moves to the end of the stream
        self._db.executemany("DELETE FROM predictions WHERE dialogue = ? AND idx = ?", [(r[0], r[1]) for r in rows])
        self._db.executemany(
            "INSERT INTO predictions (dialogue, idx, speaker, text, label, confidence, uncertain, probabilities, missing, "
            "answered, served) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "CASE WHEN EXISTS (SELECT 1 FROM corrections WHERE dialogue = ? AND idx = ?) THEN 1 ELSE 0 END, ?)",
            rows,
        )

    def _consent(self, key: str) -> str | None:
        row = self._db.execute("SELECT consent FROM dialogues WHERE id = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _corrections_of(self, key: str) -> list[Correction]:
        rows = self._db.execute(
            "SELECT dialogue, idx, label, annotator, created FROM corrections WHERE dialogue = ? ORDER BY id", (key,)
        ).fetchall()
        return [_correction(r) for r in rows]

    def _dialogue(self, key: str) -> Dialogue | None:
        row = self._db.execute("SELECT speakers, texts, labels, origin FROM dialogues WHERE id = ?", (key,)).fetchone()
        if row is None:
            return None
        speakers, texts, labels, origin = (None if v is None else json.loads(v) for v in row)
        if labels is not None:
            labels = [_label_from_json(lab) for lab in labels]
        features = {
            m: np.load(io.BytesIO(bytes(blob)), allow_pickle=False)
            for m, blob in self._db.execute('SELECT modality, "array" FROM features WHERE dialogue = ?', (key,)).fetchall()
        }
        return Dialogue(id=key, speakers=speakers, features=features, texts=texts, labels=labels, origin=origin)

    def _session(self, column: str, value: str) -> SessionState | None:
        row = self._db.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE {column} = ?", (value,)).fetchone()
        return None if row is None else _session_state(row)


#: The tables :meth:`CorrectionStore.delete_dialogue` reports rows of, and their dialogue column, in deletion order.
_COUNTED = {"corrections": "dialogue", "features": "dialogue", "dialogues": "id"}
_TOKEN_COLUMNS = "token_id, name, role, digest, created, revoked"
_SESSION_COLUMNS = (
    "key, dialogue, consent, declared_speakers, text_vectors, predictions, context_texts, length, created, last_used"
)


def _session_state(row: tuple) -> SessionState:
    key, dialogue, consent, speakers, text_vectors, predictions, context, length, created, last_used = row
    return SessionState(
        key, dialogue, consent, None if speakers is None else json.loads(speakers), text_vectors,
        json.loads(predictions), json.loads(context), int(length), created, last_used,
    )


def _checked_consent(source: str, consent: object, dialogue: str | None) -> str:
    if consent not in CONSENT_SCOPES:
        problem = f"consent must be one of {', '.join(CONSENT_SCOPES)}, not {consent!r}"
        raise DataError(source, problem, dialogue=dialogue, field="consent")
    return consent


def _json_or_none(value: object) -> str | None:
    return None if value is None else json.dumps(value)


def _stamp(moment: datetime) -> str:
    """``moment`` as the store writes times: ISO-8601 in UTC to the millisecond (so text order is time order)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _now() -> str:
    return _stamp(datetime.now(UTC))


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


__all__ = [
    "CONSENT_SCOPES",
    "SCHEMA_VERSION",
    "AuditEntry",
    "Correction",
    "CorrectionStore",
    "ServedPrediction",
    "SessionState",
    "StoreConflict",
    "TokenRecord",
    "checked_label",
    "is_pseudonym",
]
