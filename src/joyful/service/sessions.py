"""Live dialogues: utterances arrive one at a time and each is labelled from its past.

A session holds its dialogue so far in memory (speakers, feature rows, texts, labels)
and the prediction made for each utterance when it arrived. Sessions are bounded in
number and length, because each one costs memory and each new utterance re-runs the
model on the whole prefix; idle sessions make room for new ones. Each session has its
own lock, so utterances of one session are taken in order while different sessions
proceed side by side.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from joyful.data.schema import Dialogue, missing_matrix


class ServiceError(Exception):
    """A request the service refuses, with the HTTP status that says why."""

    status = 400


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class TooManySessions(ServiceError):
    status = 429


@dataclass
class Session:
    """One live dialogue; change it only while holding ``lock``, and only through :meth:`commit`."""

    id: str
    dialogue: Dialogue
    """The dialogue so far; starts with no utterance."""
    declared_speakers: list[str] | None
    predictions: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    """Set once the session is ended or deleted: a request that was waiting for the lock must not revive it."""
    last_used: float = 0.0
    text_vectors: str | None = None
    """Who gives the utterances their text vectors, fixed by the first that has one: "client" or "service"."""

    def __len__(self) -> int:
        return len(self.dialogue)

    def extended(self, utterance: Dialogue, widths: dict[str, int]) -> Dialogue:
        """The dialogue with ``utterance`` (a one-utterance dialogue) appended; the session is unchanged.

        Every modality of the model gets a row: the utterance's vector, or a NaN row (missing).
        Texts are kept as a list with ``""`` for an utterance sent without text, which is
        how the text encoder marks text as missing.
        """
        d = self.dialogue
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

    def commit(self, dialogue: Dialogue, prediction: dict, text_vectors: str | None = None) -> None:
        """Adopt ``dialogue`` (from :meth:`extended`) and the prediction for its last utterance."""
        self.dialogue = dialogue
        self.text_vectors = self.text_vectors or text_vectors
        self.predictions.append(prediction)


class SessionRegistry:
    """At most ``max_sessions`` live sessions, each of at most ``max_utterances``; thread-safe."""

    def __init__(
        self,
        max_sessions: int,
        *,
        max_utterances: int = 1000,
        idle_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.max_sessions = max_sessions
        self.max_utterances = max_utterances
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def open(self, dialogue_id: str | None, speakers: list[str] | None) -> Session:
        """A new session; its id is a secret, since whoever knows it can read and extend the dialogue."""
        with self._lock:
            if dialogue_id is not None and any(s.dialogue.id == dialogue_id for s in self._sessions.values()):
                raise Conflict(f"dialogue {dialogue_id!r} already has a live session")
            if len(self._sessions) >= self.max_sessions:
                self._evict_idle()
            if len(self._sessions) >= self.max_sessions:
                raise TooManySessions(
                    f"all {self.max_sessions} sessions are in use; end one (DELETE /sessions/{{id}}) "
                    f"or wait until one has been idle for {self.idle_seconds:g} s"
                )
            session = Session(
                id=secrets.token_urlsafe(16),
                dialogue=Dialogue(id=dialogue_id or f"live-{secrets.token_hex(8)}", speakers=[]),
                declared_speakers=speakers,
                last_used=self._clock(),
            )
            self._sessions[session.id] = session
            return session

    def get(self, session_id: str) -> Session:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise NotFound(f"no live session {session_id!r} (ended, deleted, idle too long, or never opened)")
            session.last_used = self._clock()
            return session

    def has_dialogue(self, dialogue_id: str) -> bool:
        with self._lock:
            return any(s.dialogue.id == dialogue_id for s in self._sessions.values())

    def check_room(self, session: Session) -> None:
        if len(session) >= self.max_utterances:
            raise Conflict(f"session has reached its limit of {self.max_utterances} utterances; start a new one")

    def close(self, session_id: str) -> Session:
        """End a session; waits for an utterance in progress, so nothing is saved after this returns."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise NotFound(f"no live session {session_id!r}")
        _mark_closed(session)
        return session

    def close_dialogue(self, dialogue_id: str) -> int:
        """End every session of a dialogue (there is at most one); how many were ended."""
        with self._lock:
            ended = [s for s in self._sessions.values() if s.dialogue.id == dialogue_id]
            for s in ended:
                del self._sessions[s.id]
        for s in ended:
            _mark_closed(s)
        return len(ended)

    def _evict_idle(self) -> None:
        """Drop sessions idle for longer than ``idle_seconds`` (their stored dialogues stay in the store)."""
        now = self._clock()
        for sid, s in list(self._sessions.items()):
            if now - s.last_used > self.idle_seconds and s.lock.acquire(blocking=False):
                s.closed = True
                s.lock.release()
                del self._sessions[sid]


def _mark_closed(session: Session) -> None:
    with session.lock:
        session.closed = True
