"""The SQLite backend: one file on one host, shared by its processes through WAL and a busy timeout."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from joyful.errors import JoyfulError
from joyful.storage.base import Backend


class SQLiteBackend(Backend):
    """A SQLite file created readable by its owner only, with deleted bytes zeroed and vacuumed away.

    Writers take the file's write lock at the start of their transaction (``BEGIN
    IMMEDIATE``), so two processes never deadlock upgrading read locks, and wait up to
    30 s for each other. ``secure_delete`` overwrites freed content; :meth:`erase`
    rebuilds the file (``VACUUM``, its copy kept in memory, never in a temporary file)
    and empties the write-ahead log, which may still hold earlier versions of pages.
    """

    name = "sqlite"
    blob = "BLOB"
    serial_key = "INTEGER PRIMARY KEY"
    Error = sqlite3.Error
    IntegrityError = sqlite3.IntegrityError

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(str(path))
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise JoyfulError(f"cannot open the correction store {self.path}: {e}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA temp_store=MEMORY")
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise JoyfulError(f"{self.path}: cannot be used as a correction store ({e})") from None

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    def _begin(self, write: bool) -> None:
        self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _commit(self) -> None:
        self._db.execute("COMMIT")

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def serialise(self, key: str) -> None:
        """Nothing to do: a write transaction already holds the whole file's write lock."""

    def stored_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def write_version(self, version: int) -> None:
        self._db.execute(f"PRAGMA user_version = {int(version)}")

    def columns(self, table: str) -> set[str]:
        return {row[1] for row in self._db.execute("SELECT * FROM pragma_table_info(?)", (table,))}

    def erase(self, tables: Sequence[str], *, rebuild: bool = True) -> None:
        with self._lock:
            try:
                if rebuild:
                    self._db.execute("VACUUM")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:
                raise self.failure(e) from None

    def _close(self) -> None:
        self._db.close()
