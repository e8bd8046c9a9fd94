"""The store of issue 15 on every backend: pseudonyms, consent, retention, tokens, audit, sessions, upgrades.

Each claim is checked against what is really stored (``store_fixtures.raw_rows``, or the
SQLite file's bytes), not only against what the store returns.
"""

from __future__ import annotations

import hashlib
import hmac
import multiprocessing
import re
import sqlite3
import sys
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from joyful.corrections import (
    CONSENT_SCOPES,
    AuditEntry,
    CorrectionStore,
    ServedPrediction,
    SessionState,
    StoreConflict,
    TokenRecord,
    is_pseudonym,
)
from joyful.data.schema import Dialogue
from joyful.errors import DataError, JoyfulError
from store_fixtures import (  # noqa: F401 - location is a fixture
    commit_in_process,
    commit_second_utterance,
    file_bytes,
    location,
    postgres_location,
    raw_connection,
    raw_execute,
    raw_rows,
    raw_text,
)


def dialogue(did: str, n: int = 3, *, speakers: tuple[str, ...] = ("Alice Smith", "Bob Jones")) -> Dialogue:
    rng = np.random.default_rng(len(did))
    return Dialogue(
        id=did,
        speakers=[speakers[i % len(speakers)] for i in range(n)],
        features={"a": rng.standard_normal((n, 4)).astype(np.float32)},
        texts=[f"words of {did} {i}" for i in range(n)],
        labels=[None] * n,
    )


def served(did: str, index: int, speaker: str = "Alice Smith", *, uncertain: bool = True, text: str | None = None) -> ServedPrediction:
    return ServedPrediction(did, index, speaker, "hap", 0.4, uncertain, {"hap": 0.4, "sad": 0.6}, {"a": False}, text)


@pytest.fixture
def store(location):
    with CorrectionStore(location) as s:
        yield s


# ---------------------------------------------------------------------- pseudonyms
def test_pseudonyms_are_keyed_hmacs_of_the_stores_secret(store, location):
    secret = bytes.fromhex(raw_rows(location, "SELECT value FROM settings WHERE key = 'secret'")[0][0])
    assert len(secret) == 32
    mac = hmac.new(secret, b"dialogue\0call-7", hashlib.sha256).hexdigest()
    assert store.dialogue_key("call-7") == "p-" + mac[:24] and is_pseudonym(store.dialogue_key("call-7"))
    assert store.dialogue_key(store.dialogue_key("call-7")) == store.dialogue_key("call-7")  # idempotent
    assert store.speaker_key("Alice Smith") == "s-" + hmac.new(secret, b"speaker\0Alice Smith", hashlib.sha256).hexdigest()[:12]
    assert store.speaker_key(store.speaker_key("Alice Smith")) == store.speaker_key("Alice Smith")
    assert not is_pseudonym("call-7") and not is_pseudonym("p-" + "g" * 24)
    assert store.backend in ("sqlite", "postgresql") and store.pseudonymise


def test_names_are_never_stored_and_every_method_takes_either_form(store, location):
    store.save_dialogue(dialogue("call-7"), consent="train")
    store.save_predictions([served("call-7", 0)])
    store.add_correction("call-7", 1, "sad", "ann")
    store.audit("tok", "add_correction", "call-7", "201")
    store.open_session(SessionState("k" * 64, "call-7", "train", ["Alice Smith"], None))
    text = raw_text(location)
    assert "call-7" not in text and "Alice" not in text and "Bob" not in text
    key = store.dialogue_key("call-7")
    assert raw_rows(location, "SELECT id, speakers FROM dialogues") == [
        (key, f'["{store.speaker_key("Alice Smith")}", "{store.speaker_key("Bob Jones")}", "{store.speaker_key("Alice Smith")}"]')
    ]
    for given in ("call-7", key):
        assert store.dialogue(given).id == key and store.dialogue_consent(given) == "train"
        assert [c.dialogue for c in store.corrections(given)] == [key]
        assert store.session_of_dialogue(given).declared_speakers == [store.speaker_key("Alice Smith")]
    assert store.review_queue()[0].speaker == store.speaker_key("Alice Smith")
    assert store.audit_log()[0].dialogue == key and store.corrected_dialogues()[0].id == key
    assert store.delete_dialogue(key) == {"corrections": 1, "features": 1, "dialogues": 1}


def test_a_store_may_keep_names_as_given_but_never_switch(location):
    with CorrectionStore(location, pseudonymise=False) as store:
        store.save_dialogue(dialogue("call-7"))
        assert not store.pseudonymise and store.dialogue_key("call-7") == "call-7"
    assert raw_rows(location, "SELECT id FROM dialogues") == [("call-7",)]
    with CorrectionStore(location) as store:  # None keeps the store's setting
        assert store.dialogue("call-7").speakers[0] == "Alice Smith"
    with pytest.raises(JoyfulError, match="keeps ids and speakers as given"):
        CorrectionStore(location, pseudonymise=True)


def test_two_store_objects_share_one_secret(location):
    with CorrectionStore(location) as a, CorrectionStore(location, pseudonymise=True) as b:
        assert a.dialogue_key("x") == b.dialogue_key("x")


# ---------------------------------------------------------------------- consent
def test_consent_is_recorded_and_may_not_change_by_saving(store, location):
    assert CONSENT_SCOPES == ("none", "store", "train")
    store.save_dialogue(dialogue("s"), keep_text=True)
    assert store.dialogue_consent("s") == "store" and store.dialogue_consent("never") is None
    store.save_dialogue(dialogue("s", n=4), keep_text=True)  # same scope: a new version is fine
    for scope in ("train", "none"):
        with pytest.raises(DataError) as e:
            store.save_dialogue(dialogue("s"), consent=scope)
        assert e.value.field == "consent"
    with pytest.raises(DataError) as e:
        store.save_dialogue(dialogue("t"), consent="everything")
    assert e.value.field == "consent"
    assert raw_rows(location, "SELECT consent FROM dialogues") == [("store",)]


def test_a_none_dialogue_keeps_no_text_no_correction_and_is_listed_nowhere(store, location):
    store.save_dialogue(dialogue("n"), keep_text=True, consent="none")
    store.save_predictions([served("n", 0, text="words of n 0")])
    store.save_dialogue(dialogue("s"), consent="store")
    assert raw_rows(location, "SELECT texts FROM dialogues WHERE consent = 'none'") == [(None,)]
    assert raw_rows(location, "SELECT text FROM predictions") == [(None,)]
    with pytest.raises(DataError) as e:
        store.add_correction("n", 0, "sad")
    assert e.value.field == "consent" and store.corrections() == []
    assert store.dialogue_ids() == [store.dialogue_key("s")] and store.review_queue() == []
    assert store.dialogue("n") is not None  # still readable by the live session that owns it


def test_finetune_sees_only_the_scopes_asked_for(store):
    for did, scope in (("kept", "store"), ("taught", "train")):
        store.save_dialogue(dialogue(did), consent=scope)
        store.add_correction(did, 0, "sad")
    assert [d.id for d in store.corrected_dialogues()] == [store.dialogue_key("taught")]
    assert len(store.corrected_dialogues(consent=("store", "train"))) == 2
    with pytest.raises(DataError):
        store.corrected_dialogues(consent=("all",))


# ---------------------------------------------------------------------- retention
def test_purge_removes_what_is_older_than_the_retention(store, location):
    store.save_dialogue(dialogue("old"), consent="train")
    store.save_predictions([served("old", 0)])
    store.add_correction("old", 1, "sad")
    store.add_correction("never-stored", 0, "sad")  # an annotator's work ahead of a dialogue that never came
    store.open_session(SessionState("a" * 64, "idle", "none", None, None))
    store.open_session(SessionState("b" * 64, "abandoned", "none", None, None))
    store.save_dialogue(dialogue("abandoned"), consent="none")
    later = datetime.now(UTC) + timedelta(days=10)
    assert store.purge(30, now=later) == dict.fromkeys(["dialogues", "features", "predictions", "corrections", "sessions"], 0)
    removed = store.purge(5, now=later)
    assert removed == {"dialogues": 2, "features": 2, "predictions": 1, "corrections": 2, "sessions": 2}
    for table in ("dialogues", "features", "predictions", "corrections", "sessions"):
        assert raw_rows(location, f"SELECT COUNT(*) FROM {table}") == [(0,)], table
    store.save_dialogue(dialogue("new"))
    assert store.purge(5)["dialogues"] == 0  # newer than the cut-off


def test_purge_spares_a_dialogue_whose_session_is_in_use(store, location):
    store.open_session(SessionState("c" * 64, "ongoing", "store", None, None))
    store.save_dialogue(dialogue("ongoing"))
    raw_execute(location, "UPDATE dialogues SET created = '2020-01-01T00:00:00.000+00:00'")  # first saved long ago
    assert store.purge(1)["dialogues"] == 0  # its session was used just now
    assert store.purge(1, now=datetime.now(UTC) + timedelta(days=2)) == {
        "dialogues": 1, "features": 1, "predictions": 0, "corrections": 0, "sessions": 1,
    }


def test_purge_erases_the_bytes_like_delete(tmp_path):
    path = tmp_path / "store.sqlite"
    with CorrectionStore(path) as store:
        d = dialogue("gone")
        d.features["a"][:] = 0.987654321
        store.save_dialogue(d, keep_text=True)
        pattern = np.float32(0.987654321).tobytes() * 3
        assert pattern in file_bytes(path) and b"words of gone" in file_bytes(path)
        assert store.purge(1, now=datetime.now(UTC) + timedelta(days=2))["dialogues"] == 1
        raw = file_bytes(path)
        assert pattern not in raw and b"words of gone" not in raw and store.dialogue_key("gone").encode() not in raw


# ---------------------------------------------------------------------- tokens and audit
def test_tokens_keep_digests_and_names_are_unique_among_valid_ones(store):
    store.add_token("id1", "kim", "admin", "scrypt$salt$digest1")
    with pytest.raises(JoyfulError, match="kim"):
        store.add_token("id2", "kim", "viewer", "d2")
    store.add_token("id2", "lee", "viewer", "d2")
    assert store.active_tokens() == 2
    assert store.revoke_token("kim") and not store.revoke_token("kim") and not store.revoke_token("nobody")
    store.add_token("id3", "kim", "annotator", "d3")  # the name is free again
    got = store.tokens()
    assert [t.token_id for t in got] == ["id1", "id2", "id3"] and all(isinstance(t, TokenRecord) for t in got)
    assert got[0].revoked is not None and got[0].digest == "scrypt$salt$digest1" and got[2].revoked is None
    assert store.token_by_id("id3").role == "annotator" and store.token_by_id("nope") is None
    assert store.active_tokens() == 2


def test_audit_log_is_oldest_first_and_names_pseudonyms(store, location):
    for i in range(5):
        store.audit("kim" if i else None, f"action{i}", "call-7" if i % 2 else None, "200")
    log = store.audit_log()
    assert [e.action for e in log] == [f"action{i}" for i in range(5)] and all(isinstance(e, AuditEntry) for e in log)
    assert log[0].token is None and log[1].dialogue == store.dialogue_key("call-7") and log[2].dialogue is None
    assert [e.action for e in store.audit_log(limit=2)] == ["action3", "action4"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", log[0].time)
    assert "call-7" not in raw_text(location)


# ---------------------------------------------------------------------- sessions
def state(key: str = "f" * 64, did: str = "live", consent: str = "store") -> SessionState:
    return SessionState(key, did, consent, ["Alice Smith", "Bob Jones"], '{"t": 0}', context_texts=[])


def test_session_state_round_trips_and_ends(store):
    store.open_session(state())
    with pytest.raises(StoreConflict):
        store.open_session(state(key="e" * 64))  # the dialogue has a live session
    with pytest.raises(StoreConflict):
        store.open_session(state(did="other"))  # the session id is taken
    assert isinstance(StoreConflict("x"), JoyfulError)
    got = store.session("f" * 64)
    assert got.dialogue == store.dialogue_key("live")
    assert got.declared_speakers == [store.speaker_key("Alice Smith"), store.speaker_key("Bob Jones")]
    assert got.text_vectors == '{"t": 0}' and got.length == 0 and got.created and got.last_used >= got.created
    assert store.session_count() == 1 and store.session("nope") is None
    assert store.idle_sessions(3600) == [] and [s.key for s in store.idle_sessions(0)] == ["f" * 64]
    ended = store.end_session("f" * 64)
    assert ended.key == "f" * 64 and store.session_count() == 0 and store.end_session("f" * 64) is None


def test_commit_utterance_saves_dialogue_predictions_and_state_together(store, location):
    s = state(consent="none")
    store.open_session(s)
    s.length, s.predictions, s.context_texts = 1, [{"label": "hap"}], ["words of live 0"]
    store.commit_utterance(s, dialogue("live", n=1), [served("live", 0, text="words of live 0")], keep_text=True, expected_length=0)
    back = store.session(s.key)
    assert back.length == 1 and back.predictions == [{"label": "hap"}] and back.context_texts == ["words of live 0"]
    assert store.dialogue_consent("live") == "none" and len(store.dialogue("live")) == 1
    assert raw_rows(location, "SELECT texts FROM dialogues") == [(None,)]  # consent none: no text beyond the session
    assert raw_rows(location, "SELECT text FROM predictions") == [(None,)]
    with pytest.raises(StoreConflict):
        store.commit_utterance(s, dialogue("live", n=2), [served("live", 1)], keep_text=True, expected_length=0)
    assert len(store.dialogue("live")) == 1 and len(store.recent_predictions()) == 1  # nothing of the loser written
    with pytest.raises(DataError):
        store.commit_utterance(s, dialogue("another", n=2), [], keep_text=False, expected_length=1)


def _race_ready(location: str) -> str:
    """A session whose first utterance is committed; its key."""
    with CorrectionStore(location) as store:
        s = state()
        store.open_session(s)
        s.length = 1
        store.commit_utterance(s, dialogue("live", n=1), [served("live", 0)], keep_text=False, expected_length=0)
    return s.key


def test_two_threads_committing_the_same_utterance_one_wins(location):
    key = _race_ready(location)
    barrier, results = threading.Barrier(2), []
    threads = [threading.Thread(target=lambda: results.append(commit_second_utterance(location, key, barrier))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost", "won"]
    with CorrectionStore(location) as store:
        assert store.session(key).length == 2 and len(store.dialogue("live")) == 2


def test_processes_committing_the_same_utterance_one_wins(location):
    key = _race_ready(location)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=commit_in_process, args=(location, key, barrier, results)) for _ in range(2)]
    for w in workers:
        w.start()
    outcomes = sorted(results.get(timeout=60) for _ in workers)
    for w in workers:
        w.join(timeout=30)
    assert outcomes == ["lost", "won"]
    with CorrectionStore(location) as store:
        assert store.session(key).length == 2 and len(store.recent_predictions()) == 2


def test_concurrent_writers_lose_no_correction(location):
    with CorrectionStore(location) as store:
        store.save_dialogue(dialogue("shared", n=20), consent="train")

    def work(k: int) -> None:
        with CorrectionStore(location) as mine:  # a connection of its own, as another worker has
            for i in range(10):
                mine.add_correction("shared", i, "sad", f"w{k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert raw_rows(location, "SELECT COUNT(*) FROM corrections") == [(30,)]


def test_ending_a_session_erases_its_texts_from_the_file(tmp_path):
    path = tmp_path / "store.sqlite"
    with CorrectionStore(path) as store:
        s = state(consent="none")
        store.open_session(s)
        s.length, s.context_texts = 1, ["my very private sentence"]
        store.commit_utterance(s, dialogue("live", n=1), [], keep_text=True, expected_length=0)
        assert b"my very private sentence" in file_bytes(path)
        store.end_session(s.key)
        store.delete_dialogue("live")  # what the service does for a none session
        raw = file_bytes(path)
        assert b"my very private sentence" not in raw and store.dialogue_key("live").encode() not in raw


# ---------------------------------------------------------------------- upgrades from earlier versions
_V1 = """
CREATE TABLE dialogues (id TEXT PRIMARY KEY, speakers TEXT NOT NULL, texts TEXT, labels TEXT, origin TEXT, saved TEXT NOT NULL);
CREATE TABLE features (dialogue TEXT NOT NULL, modality TEXT NOT NULL, array BLOB NOT NULL, PRIMARY KEY (dialogue, modality));
CREATE TABLE corrections (id INTEGER PRIMARY KEY, dialogue TEXT NOT NULL, idx INTEGER NOT NULL, label TEXT NOT NULL,
    annotator TEXT, created TEXT NOT NULL);
"""
_V2 = _V1 + """
CREATE TABLE predictions (id INTEGER PRIMARY KEY, dialogue TEXT NOT NULL, idx INTEGER NOT NULL, speaker TEXT NOT NULL,
    text TEXT, label TEXT NOT NULL, confidence REAL, uncertain INTEGER, probabilities TEXT, missing TEXT NOT NULL,
    answered INTEGER NOT NULL DEFAULT 0, served TEXT NOT NULL, UNIQUE (dialogue, idx));
INSERT INTO predictions (dialogue, idx, speaker, label, confidence, uncertain, missing, served)
    VALUES ('old-call', 0, 'Carol Old', 'hap', 0.3, 1, '{}', '2020-01-01T00:00:00.000+00:00');
"""


def _old_store(path, version: int) -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ones((2, 3), np.float32), allow_pickle=False)
    db = sqlite3.connect(path)
    db.executescript(_V1 if version == 1 else _V2)
    db.execute(
        "INSERT INTO dialogues VALUES ('old-call', '[\"Carol Old\", \"Dan Old\"]', NULL, NULL, NULL, '2020-01-01T00:00:00.000+00:00')"
    )
    db.execute("INSERT INTO features VALUES ('old-call', 'a', ?)", (buffer.getvalue(),))
    db.execute("INSERT INTO corrections (dialogue, idx, label, created) VALUES ('old-call', 1, 'sad', '2020-01-02T00:00:00.000+00:00')")
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


@pytest.mark.parametrize("version", [1, 2])
def test_old_stores_upgrade_to_pseudonyms_consent_store_and_created(tmp_path, version):
    path = tmp_path / "old.sqlite"
    _old_store(path, version)
    with CorrectionStore(path) as store:
        key = store.dialogue_key("old-call")
        assert store.dialogue_ids() == [key] and store.dialogue_consent("old-call") == "store"
        assert store.dialogue(key).speakers == [store.speaker_key("Carol Old"), store.speaker_key("Dan Old")]
        assert [(c.dialogue, c.index) for c in store.corrections()] == [(key, 1)]
        assert store.corrected_dialogues() == [] and len(store.corrected_dialogues(consent=("store",))) == 1
        if version == 2:
            assert store.recent_predictions()[0].speaker == store.speaker_key("Carol Old")
        assert store.purge(365, now=datetime(2020, 6, 1, tzinfo=UTC))["dialogues"] == 0  # created = its old `saved`
    raw = file_bytes(path)
    assert b"old-call" not in raw and b"Carol Old" not in raw and b"Dan Old" not in raw
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3
    with CorrectionStore(path) as store:  # opening again changes nothing
        assert store.dialogue_ids() == [store.dialogue_key("old-call")]


def test_an_old_store_may_keep_its_names(tmp_path):
    path = tmp_path / "old.sqlite"
    _old_store(path, 2)
    with CorrectionStore(path, pseudonymise=False) as store:
        assert store.dialogue_ids() == ["old-call"] and store.dialogue("old-call").speakers == ["Carol Old", "Dan Old"]


def test_a_newer_store_is_refused(location):
    CorrectionStore(location).close()
    if location.startswith("postgresql://"):
        raw_execute(location, "UPDATE settings SET value = '99' WHERE key = 'schema_version'")
    else:
        raw_execute(location, "PRAGMA user_version = 99")
    with pytest.raises(JoyfulError, match="newer joyful .store version 99"):
        CorrectionStore(location)


# ---------------------------------------------------------------------- PostgreSQL specifics and errors
def test_postgres_vacuums_the_tables_a_delete_touched(postgres_location):
    location = postgres_location  # SQLite's erasure is checked on the file's bytes, above
    with CorrectionStore(location) as store:
        store.save_dialogue(dialogue("gone"), consent="train")
        store.save_predictions([served("gone", 0)])
        store.add_correction("gone", 0, "sad")
        store.audit("kim", "add_correction", "gone", "201")
        store.delete_dialogue("gone")
    raw_execute(location, "DELETE FROM audit")  # the control: deleted behind the store's back, not vacuumed

    def vacuum_report(table: str) -> str:  # a second VACUUM finds nothing left to remove if the store's ran
        with raw_connection(location) as db:
            notes: list[str] = []
            db.add_notice_handler(lambda d: notes.append(d.message_primary or ""))
            db.execute(f"VACUUM (VERBOSE) {table}")
        return next(n for n in notes if n.startswith("finished vacuuming") and f".{table}\"" in n)

    for table in ("dialogues", "features", "corrections", "predictions"):
        report = vacuum_report(table)
        assert "tuples: 0 removed" in report and "had 0 dead item identifiers removed" in report, report
    assert "tuples: 1 removed" in vacuum_report("audit")


def test_an_unreachable_postgres_is_one_line_without_its_password():
    pytest.importorskip("psycopg")
    with pytest.raises(JoyfulError) as e:
        CorrectionStore("postgresql://joyful:hunter2-secret@127.0.0.1:1/nowhere")
    message = str(e.value)
    assert "\n" not in message and "hunter2" not in message and "postgresql://joyful:***@127.0.0.1:1/nowhere" in message


def test_missing_psycopg_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ImportError
    with pytest.raises(JoyfulError, match=r"pip install 'joyful\[serve\]'"):
        CorrectionStore("postgresql://u:p@localhost/db")


def test_a_sqlite_store_that_cannot_be_made_names_its_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JoyfulError, match=f"cannot open the correction store {blocker}/store.sqlite"):
        CorrectionStore(blocker / "store.sqlite")
