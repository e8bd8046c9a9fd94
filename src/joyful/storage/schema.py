"""The correction store's tables, and the upgrade of stores written by earlier versions.

Version 1 had dialogues, features and corrections; version 2 added ``predictions``;
version 3 adds consent and first-save time to dialogues, and the tables ``settings``
(the pseudonym secret, and whether this store pseudonymises), ``tokens``, ``audit`` and
``sessions``. An older store is upgraded in one transaction when opened: its dialogues
read as consent ``store`` and as first saved when last saved, and, when it is to
pseudonymise, the ids and speakers it holds are replaced by their pseudonyms (the
caller then erases the freed bytes). A store written by a newer joyful is refused, not
misread.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from joyful.errors import JoyfulError
from joyful.storage.base import Backend
from joyful.storage.pseudonyms import Pseudonyms

SCHEMA_VERSION = 3

# ``{blob}`` and ``{serial_key}`` are the backend's; "array" is quoted (a PostgreSQL keyword).
_TABLES = """
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dialogues (
    id TEXT PRIMARY KEY,
    speakers TEXT NOT NULL,
    texts TEXT,
    labels TEXT,
    origin TEXT,
    saved TEXT NOT NULL,
    consent TEXT NOT NULL DEFAULT 'store',
    created TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS dialogues_by_created ON dialogues (created);
CREATE TABLE IF NOT EXISTS features (
    dialogue TEXT NOT NULL,
    modality TEXT NOT NULL,
    "array" {blob} NOT NULL,
    PRIMARY KEY (dialogue, modality)
);
CREATE TABLE IF NOT EXISTS corrections (
    id {serial_key},
    dialogue TEXT NOT NULL,
    idx INTEGER NOT NULL,
    label TEXT NOT NULL,
    annotator TEXT,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS corrections_by_dialogue ON corrections (dialogue, id);
CREATE TABLE IF NOT EXISTS predictions (
    id {serial_key},
    dialogue TEXT NOT NULL,
    idx INTEGER NOT NULL,
    speaker TEXT NOT NULL,
    text TEXT,
    label TEXT NOT NULL,
    confidence DOUBLE PRECISION,
    uncertain INTEGER,
    probabilities TEXT,
    missing TEXT NOT NULL,
    answered INTEGER NOT NULL DEFAULT 0,
    served TEXT NOT NULL,
    UNIQUE (dialogue, idx)
);
CREATE TABLE IF NOT EXISTS tokens (
    id {serial_key},
    token_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    digest TEXT NOT NULL,
    created TEXT NOT NULL,
    revoked TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_active_name ON tokens (name) WHERE revoked IS NULL;
CREATE TABLE IF NOT EXISTS audit (
    id {serial_key},
    time TEXT NOT NULL,
    token TEXT,
    action TEXT NOT NULL,
    dialogue TEXT,
    outcome TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY,
    dialogue TEXT NOT NULL UNIQUE,
    consent TEXT NOT NULL,
    declared_speakers TEXT,
    text_vectors TEXT,
    predictions TEXT NOT NULL,
    context_texts TEXT NOT NULL,
    length INTEGER NOT NULL,
    created TEXT NOT NULL,
    last_used TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_last_used ON sessions (last_used)
"""

#: Tables whose rows name a dialogue (by this column) and so hold a pseudonym once upgraded.
DIALOGUE_COLUMNS = {"corrections": "dialogue", "features": "dialogue", "predictions": "dialogue", "dialogues": "id"}


@dataclass(frozen=True)
class Opened:
    """What opening a store found: its pseudonyms, and whether freed bytes wait to be erased."""

    pseudonyms: Pseudonyms
    scrubbed: bool
    """An upgrade replaced names by pseudonyms: the names' bytes must be erased now."""


def prepare(db: Backend, pseudonymise: bool | None) -> Opened:
    """Create or upgrade the tables of the store behind ``db`` and read its pseudonym settings.

    Runs in one write transaction, serialised across processes, so two workers opening a
    new store at once agree on one secret.
    """
    with db.transaction():
        db.serialise("joyful schema")
        version = db.stored_version()
        if version > SCHEMA_VERSION:
            raise JoyfulError(f"{db.location}: written by a newer joyful (store version {version}); upgrade joyful")
        if version in (1, 2):
            _add_consent_and_created(db)
        if version < SCHEMA_VERSION:  # a current store (every open but the first) needs no DDL
            for statement in _TABLES.format(blob=db.blob, serial_key=db.serial_key).split(";"):
                db.execute(statement.strip())
        rows = dict(db.execute("SELECT key, value FROM settings WHERE key IN ('secret', 'pseudonymise')").fetchall())
        if rows:
            stored = rows["pseudonymise"] == "1"
            if pseudonymise is not None and pseudonymise != stored:
                said = "pseudonymises" if stored else "keeps ids and speakers as given"
                raise JoyfulError(f"{db.location}: this store {said}; that cannot change once it holds data")
            secret = bytes.fromhex(rows["secret"])
        else:
            stored = True if pseudonymise is None else pseudonymise
            secret = secrets.token_bytes(32)
            db.executemany(
                "INSERT INTO settings (key, value) VALUES (?, ?)",
                [("secret", secret.hex()), ("pseudonymise", "1" if stored else "0")],
            )
        pseudonyms = Pseudonyms(secret if stored else None)
        scrubbed = version in (1, 2) and stored and _pseudonymise_rows(db, pseudonyms)
        if version < SCHEMA_VERSION:
            db.write_version(SCHEMA_VERSION)
    return Opened(pseudonyms, scrubbed)


def _add_consent_and_created(db: Backend) -> None:
    """Version 1 and 2 dialogues: consent ``store`` (they were kept before scopes existed), first saved when saved."""
    have = db.columns("dialogues")
    if "consent" not in have:
        db.execute("ALTER TABLE dialogues ADD COLUMN consent TEXT NOT NULL DEFAULT 'store'")
    if "created" not in have:
        db.execute("ALTER TABLE dialogues ADD COLUMN created TEXT NOT NULL DEFAULT ''")
    db.execute("UPDATE dialogues SET created = saved WHERE created = ''")


def _pseudonymise_rows(db: Backend, pseudonyms: Pseudonyms) -> bool:
    """Replace the dialogue ids and speakers an old store holds by their pseudonyms; whether any changed."""
    ids: set[str] = set()
    for table, column in DIALOGUE_COLUMNS.items():
        ids.update(r[0] for r in db.execute(f"SELECT DISTINCT {column} FROM {table}"))
    changed = False
    for raw in sorted(ids):
        key = pseudonyms.dialogue(raw)
        if key != raw:
            changed = True
            for table, column in DIALOGUE_COLUMNS.items():
                db.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (key, raw))
    for did, speakers in db.execute("SELECT id, speakers FROM dialogues").fetchall():
        names = json.loads(speakers)
        keys = [pseudonyms.speaker(s) for s in names]
        if keys != names:
            changed = True
            db.execute("UPDATE dialogues SET speakers = ? WHERE id = ?", (json.dumps(keys), did))
    for (name,) in db.execute("SELECT DISTINCT speaker FROM predictions").fetchall():
        if pseudonyms.speaker(name) != name:
            changed = True
            db.execute("UPDATE predictions SET speaker = ? WHERE speaker = ?", (pseudonyms.speaker(name), name))
    return changed
