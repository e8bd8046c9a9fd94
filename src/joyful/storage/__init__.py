"""Database backends of the correction store: a SQLite file (one host) or PostgreSQL (several hosts).

:func:`open_backend` picks the backend from the location's form; the store
(:mod:`joyful.corrections`) writes its SQL once against :class:`Backend`.
"""

from __future__ import annotations

import os
from pathlib import Path

from joyful.storage.base import Backend, masked

#: URL schemes that name a PostgreSQL database rather than a SQLite file.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: str | os.PathLike) -> bool:
    """Does ``location`` name a PostgreSQL database (a URL) rather than a SQLite file (a path)?"""
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def exists(location: str | os.PathLike) -> bool:
    """Whether there is a store at ``location``: a SQLite file must be there (opening one creates it), a URL names a
    server's database, which is taken to exist (connecting says otherwise)."""
    return is_postgres(location) or Path(location).is_file()


def open_backend(location: str | os.PathLike) -> Backend:
    """A connection to the store at ``location``: a ``postgresql://`` URL or a SQLite path."""
    if is_postgres(location):
        from joyful.storage.postgres import PostgresBackend  # psycopg is optional

        return PostgresBackend(str(location))
    from joyful.storage.sqlite import SQLiteBackend

    return SQLiteBackend(location)


__all__ = ["POSTGRES_SCHEMES", "Backend", "exists", "is_postgres", "masked", "open_backend"]
