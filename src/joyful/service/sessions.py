"""Live dialogues: utterances arrive one at a time and each is labelled from its past.

A session's state lives in the store (:class:`joyful.corrections.SessionState`), not in
a process, so a session survives a restart of the service and any worker (``joyful
serve --workers N``, or several hosts sharing a PostgreSQL store) can take its next
utterance. The session id is a secret (whoever knows it can read and extend the
dialogue); the store keeps only its SHA-256. The dialogue so far is stored with the
session's consent scope; a ``none``-scope dialogue is erased when its session ends.

Utterances of one session are taken in order: within a process under a per-session
lock, and across processes by :meth:`CorrectionStore.commit_utterance`, which refuses a
commit whose prefix is no longer the stored one (answered 409: send it again). Sessions
are bounded in number and length, because each one costs storage and each new
utterance re-runs the model on the whole prefix; idle sessions make room for new ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
import weakref
from collections.abc import Iterator

import numpy as np

from joyful.corrections import CorrectionStore, ServedPrediction, SessionState, StoreConflict
from joyful.data.schema import Dialogue, missing_matrix
from joyful.service.schemas import MAX_UTTERANCES


class ServiceError(Exception):
    """A request the service refuses, with the HTTP status that says why."""

    status = 400


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class TooManySessions(ServiceError):
    status = 429


def session_key(session_id: str) -> str:
    """What the store knows a session by: the hash of its secret id, which a stolen store does not give back."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def extended(d: Dialogue, utterance: Dialogue, widths: dict[str, int]) -> Dialogue:
    """``d`` with ``utterance`` (a one-utterance dialogue) appended; ``d`` is unchanged.

    Every modality of the model gets a row: the utterance's vector, or a NaN row (missing).
    Texts are kept as a list with ``""`` for an utterance sent without text, which is
    how the text encoder marks text as missing.
    """
    features = {
        m: np.vstack([d.features.get(m, missing_matrix(len(d), w)), utterance.features.get(m, missing_matrix(1, w))])
        for m, w in widths.items()
    }
    labels = [*(d.labels or [None] * len(d)), *(utterance.labels or [None])]
    return Dialogue(
        id=d.id,
        speakers=[*d.speakers, *utterance.speakers],
        features=features,
        texts=[*(d.texts or [""] * len(d)), *(utterance.texts or [""])],
        labels=labels if any(lab is not None for lab in labels) else None,
    )


class SessionRegistry:
    """At most ``max_sessions`` live sessions in ``store``, each of at most ``max_utterances``; thread-safe."""

    def __init__(
        self, store: CorrectionStore, max_sessions: int, *, max_utterances: int = MAX_UTTERANCES, idle_seconds: float = 3600.0
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.store = store
        self.max_sessions = max_sessions
        self.max_utterances = max_utterances
        self.idle_seconds = idle_seconds
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
        self._locks_lock = threading.Lock()

    def __len__(self) -> int:
        return self.store.session_count()

    def open(self, dialogue_id: str | None, speakers: list[str] | None, consent: str) -> tuple[str, SessionState]:
        """A new session: its secret id (given to the client once) and its state."""
        did = dialogue_id or f"live-{secrets.token_hex(8)}"
        if self.store.session_of_dialogue(did) is not None:
            raise Conflict(f"dialogue {dialogue_id!r} already has a live session")
        if self.store.session_count() >= self.max_sessions:
            self.evict_idle()
        if self.store.session_count() >= self.max_sessions:
            raise TooManySessions(
                f"all {self.max_sessions} sessions are in use; end one (DELETE /sessions/{{id}}) "
                f"or wait until one has been idle for {self.idle_seconds:g} s"
            )
        session_id = secrets.token_urlsafe(16)
        state = SessionState(  # the store stamps when it was opened and last used
            key=session_key(session_id),
            dialogue=self.store.dialogue_key(did),
            consent=consent,
            declared_speakers=None if speakers is None else [self.store.speaker_key(s) for s in speakers],
            text_vectors=None,
            predictions=[],
            context_texts=[],
            length=0,
        )
        try:
            self.store.open_session(state)
        except StoreConflict as e:
            raise Conflict(str(e)) from None
        return session_id, state

    def get(self, session_id: str, *, touch: bool = True) -> SessionState:
        """The session's current state; it counts as used now unless ``touch=False`` (a commit will mark it)."""
        state = self.store.session(session_key(session_id))
        if state is None:
            raise NotFound(f"no live session {session_id!r} (ended, deleted, idle too long, or never opened)")
        if touch:
            self.store.touch_session(state.key)
        return state

    @contextlib.contextmanager
    def lock(self, session_id: str) -> Iterator[None]:
        """Hold the session for one utterance in this process (other processes are held off by the store)."""
        key = session_key(session_id)
        with self._locks_lock:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
        with lock:
            yield

    def dialogue(self, state: SessionState) -> Dialogue:
        """The dialogue so far: from the store, with the texts the text context needs where none are stored."""
        d = self.store.dialogue(state.dialogue) if state.length else None
        if d is None:
            return Dialogue(id=state.dialogue, speakers=[])
        if d.texts is None:
            d.texts = [""] * len(d)
        return d

    def check_room(self, state: SessionState) -> None:
        if state.length >= self.max_utterances:
            raise Conflict(f"session has reached its limit of {self.max_utterances} utterances; start a new one")

    def commit(
        self, state: SessionState, dialogue: Dialogue, predictions: list[ServedPrediction], *, keep_text: bool,
        expected_length: int,
    ) -> None:
        """:meth:`CorrectionStore.commit_utterance` (which marks the session used), with its refusals as the client
        should read them."""
        try:
            self.store.commit_utterance(
                state, dialogue, predictions, keep_text=keep_text, expected_length=expected_length
            )
        except StoreConflict:
            if self.store.session(state.key) is None:
                raise NotFound("the session ended while this utterance was being labelled") from None
            raise Conflict("another utterance of this session arrived at the same time; send this one again") from None

    def close(self, session_id: str) -> SessionState:
        """End a session; a ``none``-scope dialogue is erased with it."""
        state = self._end(session_key(session_id))
        if state is None:
            raise NotFound(f"no live session {session_id!r}")
        return state

    def close_dialogue(self, dialogue_id: str, *, erase: bool = True) -> int:
        """End the session of a dialogue, if it has one; how many were ended.

        ``erase=False`` leaves a ``none``-scope dialogue to a caller about to delete it
        anyway, so that its count of what was removed is complete.
        """
        state = self.store.session_of_dialogue(dialogue_id)
        return 0 if state is None or self._end(state.key, erase=erase) is None else 1

    def evict_idle(self) -> int:
        """End sessions idle for longer than ``idle_seconds`` (dialogues stored with consent stay in the store)."""
        return sum(self._end(s.key) is not None for s in self.store.idle_sessions(self.idle_seconds))

    def _end(self, key: str, *, erase: bool = True) -> SessionState | None:
        state = self.store.end_session(key)
        if erase and state is not None and state.consent == "none":
            self.store.delete_dialogue(state.dialogue)
        return state

