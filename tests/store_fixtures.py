"""Correction stores on every backend, and raw views of what they hold, for the store tests.

The ``location`` fixture is a fresh SQLite path, or a fresh PostgreSQL schema on the
server named by ``JOYFUL_TEST_POSTGRES`` (``.ci/run`` starts one; skipped without it),
dropped afterwards, so every test starts from an empty store. :func:`raw_rows` reads
the tables through a connection of its own, not the store's, so a test sees what is
really stored rather than what the store chooses to return. Nothing here imports torch,
so the worker processes of the concurrency tests start quickly.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest

from joyful.corrections import CorrectionStore, ServedPrediction, StoreConflict
from joyful.data.schema import Dialogue

POSTGRES_URL = os.environ.get("JOYFUL_TEST_POSTGRES")
_NO_POSTGRES = (
    "JOYFUL_TEST_POSTGRES is not set (a postgresql:// URL of a database the tests may create schemas in; .ci/run sets it)"
    if not POSTGRES_URL
    else "psycopg is not installed (pip install 'joyful[serve]')"
    if importlib.util.find_spec("psycopg") is None
    else None
)
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.skipif(_NO_POSTGRES is not None, reason=_NO_POSTGRES or "")),
]


@pytest.fixture(params=BACKENDS)
def location(request, tmp_path) -> Iterator[str]:
    """Where a new, empty store may be made: a SQLite path or a PostgreSQL URL with a schema of its own."""
    if request.param == "sqlite":
        yield str(tmp_path / "store.sqlite")
    else:
        with postgres_schema() as url:
            yield url


@pytest.fixture
def postgres_location() -> Iterator[str]:
    """A new, empty PostgreSQL store's URL, for what only PostgreSQL does (skipped without a server)."""
    if _NO_POSTGRES is not None:
        pytest.skip(_NO_POSTGRES)
    with postgres_schema() as url:
        yield url


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose ``search_path`` is a schema made for the caller and dropped (with everything in it) afterwards."""
    import psycopg

    schema = f"joyful_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            parts = urlsplit(POSTGRES_URL)
            # no waiting for the disk at each commit: the tests need isolation, not durability
            options = f"options=-csearch_path%3D{schema}%20-csynchronous_commit%3Doff"
            query = "&".join(q for q in (parts.query, options) if q)
            yield urlunsplit(parts._replace(query=query))
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@contextlib.contextmanager
def raw_connection(location: str):
    """A connection of the test's own to the store's database, in the store's schema."""
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as db:
            yield db
    else:
        db = sqlite3.connect(location)
        try:
            yield db
        finally:
            db.close()


def raw_rows(location: str, sql: str, args: tuple = ()) -> list[tuple]:
    """The rows ``sql`` (``?`` placeholders) selects from the store's tables, read past the store."""
    with raw_connection(location) as db:
        if not isinstance(db, sqlite3.Connection):
            sql = sql.replace("?", "%s")
        return [tuple(r) for r in db.execute(sql, args).fetchall()]


def raw_execute(location: str, sql: str, args: tuple = ()) -> None:
    """Change the store's tables behind its back (to age a row, or fake a newer version)."""
    with raw_connection(location) as db:
        if isinstance(db, sqlite3.Connection):
            db.execute(sql, args)
            db.commit()
        else:
            db.execute(sql.replace("?", "%s"), args)


def file_bytes(path: str | Path) -> bytes:
    """A SQLite store's file and its write-ahead log, where a trace of a dialogue could hide."""
    return b"".join(p.read_bytes() for p in (Path(path), Path(f"{path}-wal")) if p.exists())


def raw_text(location: str) -> str:
    """Every text value of every table, joined: where a name that should not be stored would show."""
    tables = ("dialogues", "features", "corrections", "predictions", "sessions", "audit")
    return "\n".join(repr(row) for t in tables for row in raw_rows(location, f"SELECT * FROM {t}"))


def commit_second_utterance(location: str, session_key: str, barrier) -> str:
    """Open the store, wait for the other racers, and add utterance 1 to the session: ``"won"`` or ``"lost"``."""
    with CorrectionStore(location) as store:
        state = store.session(session_key)
        state.length = 2
        grown = Dialogue(id=state.dialogue, speakers=["A", "B"], features={"a": np.zeros((2, 4), np.float32)})
        prediction = ServedPrediction(state.dialogue, 1, "B", "hap", 0.9, False, None, {"a": False})
        barrier.wait(timeout=30)
        try:
            store.commit_utterance(state, grown, [prediction], keep_text=False, expected_length=1)
        except StoreConflict:
            return "lost"
        return "won"


def commit_in_process(location: str, session_key: str, barrier, results) -> None:
    """:func:`commit_second_utterance` as a worker process's target, its outcome put on ``results``."""
    results.put(commit_second_utterance(location, session_key, barrier))
