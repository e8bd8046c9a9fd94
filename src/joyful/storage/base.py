"""What the correction store needs of a database, so its SQL is written once for every backend.

:class:`Backend` is a thin DB-API-style connection: statements use ``?`` placeholders
(a backend whose driver wants another style translates them), run inside
:meth:`Backend.transaction`, and the few things no SQL dialect shares (the type of a
byte column, an auto-numbered key, where the schema version lives, how freed bytes
are really erased, how two processes serialise on one key) are methods or attributes
of the backend. One connection serves one store object, used under a lock, so a store
can be shared by the threads of a web server; other processes and hosts open their own.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from joyful.errors import JoyfulError


class Backend(ABC):
    """One database connection, with the dialect differences the store's SQL leaves to it."""

    #: ``"sqlite"`` or ``"postgresql"``: reported by the store, for messages and metrics.
    name: str
    #: Column type of raw bytes (feature arrays).
    blob: str
    #: Column definition of an auto-numbered integer primary key.
    serial_key: str
    #: The driver's error classes: any failure, and a violated uniqueness constraint.
    Error: type[Exception]
    IntegrityError: type[Exception]

    def __init__(self, location: str, *, secret: str | None = None) -> None:
        self.location = location
        """Where the database is, password masked: safe to print."""
        self._secret = secret
        self._lock = threading.RLock()

    @abstractmethod
    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement (``?`` placeholders) in the current transaction; the driver's cursor."""

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per row of arguments."""

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Backend]:
        """Everything in the block commits together or not at all; the connection is this thread's meanwhile.

        ``write`` says the block changes data, so a backend that locks the whole file
        (SQLite) takes its write lock at the start rather than failing to upgrade a read
        lock half-way. A driver error becomes a :class:`JoyfulError` naming the store,
        since a user can act on "the store at X is unreachable" and not on a traceback.
        """
        with self._lock:
            try:
                self._begin(write)
            except self.Error as e:
                raise self.failure(e) from None
            try:
                yield self
            except BaseException as e:
                with contextlib.suppress(self.Error):
                    self._rollback()
                if isinstance(e, self.Error):
                    raise self.failure(e) from None
                raise
            try:
                self._commit()
            except self.Error as e:
                with contextlib.suppress(self.Error):
                    self._rollback()
                raise self.failure(e) from None

    def failure(self, error: Exception) -> JoyfulError:
        """A driver error as one line naming the store (never its password)."""
        return JoyfulError(f"correction store {self.location}: {self.describe(error)}")

    def describe(self, error: Exception) -> str:
        """The first line of a driver error, with the password masked (a driver may quote its connection string)."""
        text = str(error).strip()
        if self._secret:
            text = text.replace(self._secret, "***")
        return text.splitlines()[0] if text else type(error).__name__

    @abstractmethod
    def _begin(self, write: bool) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None: ...

    @abstractmethod
    def serialise(self, key: str) -> None:
        """Inside a write transaction: wait until no other connection's transaction holds ``key``.

        Guards a read-check-write on one dialogue (or name) against another process
        doing the same at once, where a uniqueness constraint cannot say it.
        """

    @abstractmethod
    def stored_version(self) -> int:
        """Inside a transaction: the schema version written in the database, 0 when it is new."""

    @abstractmethod
    def write_version(self, version: int) -> None:
        """Inside a transaction: record the schema version (the ``settings`` table exists by then)."""

    @abstractmethod
    def columns(self, table: str) -> set[str]:
        """Inside a transaction: the column names of ``table`` (empty when there is no such table)."""

    @abstractmethod
    def erase(self, tables: Sequence[str], *, rebuild: bool = True) -> None:
        """Outside a transaction, after deleting rows of ``tables``: make the deleted bytes unrecoverable.

        ``rebuild`` asks for the whole database to be rewritten without freed space
        (what deleting a person's dialogue deserves); without it only what the backend
        can do cheaply is done (enough for session state whose rows were zeroed).
        """

    def close(self) -> None:
        with self._lock:
            self._close()

    @abstractmethod
    def _close(self) -> None: ...


def masked(url: str) -> str:
    """``url`` with any password (in the authority or a ``password=`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="=")
    return urlunsplit(parts._replace(netloc=netloc, query=query))
