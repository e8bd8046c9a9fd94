"""Consent scopes, pseudonyms, retention, and sessions that outlive a process (issue 15, parts 2 and 5).

What a site promises the people it records is checked in the store's bytes, not in
what the API says: a ``none``-scope session leaves nothing once it ends, names and ids
are never written as given, and only ``train``-scope corrections reach fine-tuning.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from joyful import Joyful
from joyful.corrections import CorrectionStore
from joyful.errors import DataError
from joyful.service.app import create_app
from joyful.training.adapt import stored_corrections
from service_fixtures import (  # noqa: F401 - served_model_dir is a fixture
    dialogue_body, file_bytes, sample_dialogue, serve_process, served_model_dir, utterance_body,
)
from store_fixtures import location, raw_rows  # noqa: F401 - location is a fixture

NAMES = {"S0": "Margarethe", "S1": "Bartholomew"}


@pytest.fixture(scope="module")
def clf(served_model_dir):
    return Joyful.load(served_model_dir)


def named(seed: int = 7, n: int = 4, prefix: str = "call-"):
    """A generated dialogue whose speakers have names that cannot occur in a file by chance."""
    d = sample_dialogue(seed=seed, n=n, prefix=prefix)
    d.speakers = [NAMES[s] for s in d.speakers]
    return d


def stream(c, d, consent: str, dialogue: str | None = None):
    body = {"consent": consent, **({"dialogue": dialogue} if dialogue else {})}
    opened = c.post("/sessions", json=body)
    assert opened.status_code == 201, opened.text
    session = opened.json()["session"]
    answers = [c.post(f"/sessions/{session}/utterances", json=utterance_body(d, i)) for i in range(len(d))]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    return session, opened.json()["dialogue"], [a.json() for a in answers]


def traces(path, d) -> list[str]:
    """Which traces of ``d`` the store's files hold: its id, its speakers' names, its feature bytes."""
    raw = file_bytes(path)
    found = [x for x in (d.id, *NAMES.values()) if x.encode() in raw]
    return found + [f"features of {i}" for i in range(len(d)) if d.features["a"][i].astype(np.float32).tobytes() in raw]


def test_a_none_scope_session_leaves_nothing_once_it_ends(clf, location):
    d = named()
    tables = ("dialogues", "features", "predictions", "corrections", "sessions")
    with TestClient(create_app(clf, location)) as c:
        session, stored_as, answers = stream(c, d, "none", dialogue=d.id)
        assert [a["speaker"] for a in answers] == d.speakers  # the caller sees the names it sent
        assert stored_as != d.id and stored_as.startswith("p-")
        during = {t: raw_rows(location, f"SELECT COUNT(*) FROM {t}")[0][0] for t in tables}
        assert during["sessions"] == 1 and during["features"] == 3  # kept while it lives, so a restart resumes it
        assert during["predictions"] == 0  # none of it is ever reviewed or monitored
        r = c.post("/corrections", json={"dialogue": d.id, "index": 0, "label": "sad"})
        assert r.status_code == 409 and "consent none" in r.json()["detail"]
        assert c.get("/review").json() == []
        assert c.delete(f"/sessions/{session}").status_code == 200
    assert {t: raw_rows(location, f"SELECT COUNT(*) FROM {t}")[0][0] for t in tables} == dict.fromkeys(tables, 0)
    assert not any(n in repr(raw_rows(location, "SELECT * FROM audit")) for n in (d.id, *NAMES.values()))
    if not location.startswith("postgresql"):
        assert traces(Path(location), d) == []


def test_predict_keeps_nothing_without_consent_and_pseudonymises_what_it_keeps(clf, tmp_path):
    path = tmp_path / "s.sqlite"
    with TestClient(create_app(clf, path)) as c:
        r = c.post("/predict", json=dialogue_body(named(prefix="nothing-")))
        assert r.status_code == 200 and r.json()["stored"] is False and r.json()["stored_as"] is None
        kept = named(prefix="kept-")
        r = c.post("/predict", json={**dialogue_body(kept), "consent": "store"})
        assert r.json()["stored"] is True
        key = r.json()["stored_as"]
    with CorrectionStore(path) as store:
        assert store.dialogue_ids() == [key] and store.dialogue_consent(kept.id) == "store"
        stored = store.dialogue(kept.id)
        assert len(set(stored.speakers)) == 2 and not set(stored.speakers) & set(NAMES.values())
        # the pseudonyms keep who spoke when, which is all the model reads
        assert [stored.speakers.index(s) for s in stored.speakers] == [kept.speakers.index(s) for s in kept.speakers]
    raw = file_bytes(path)
    assert b"kept-0000" not in raw and b"nothing-0000" not in raw and not any(n.encode() in raw for n in NAMES.values())
    assert kept.features["a"][0].astype(np.float32).tobytes() in raw  # kept: the features fine-tuning needs


def test_only_train_scope_corrections_feed_finetune(clf, tmp_path):
    path = tmp_path / "s.sqlite"
    with TestClient(create_app(clf, path)) as c:
        for scope in ("store", "train"):
            d = named(prefix=f"{scope}-")
            c.post("/predict", json={**dialogue_body(d), "consent": scope})
            r = c.post("/corrections", json={"dialogue": d.id, "index": 1, "label": "sad"})
            assert r.status_code == 201, r.text
        # the review queue and the corrections list name dialogues by pseudonym, and a pseudonym is accepted back
        listed = c.get("/corrections").json()
        assert len(listed) == 2 and all(x["dialogue"].startswith("p-") for x in listed)
        again = c.post("/corrections", json={"dialogue": listed[0]["dialogue"], "index": 2, "label": "ang"})
        assert again.status_code == 201
    (fed,) = stored_corrections(path).dialogues
    with CorrectionStore(path) as store:
        assert fed.id == store.dialogue_key("train-0000") and fed.labels[1] == "sad"
        assert store.dialogue_consent("store-0000") == "store"


def test_finetune_refuses_a_store_without_train_scope(clf, tmp_path):
    path = tmp_path / "s.sqlite"
    with TestClient(create_app(clf, path)) as c:
        d = named()
        c.post("/predict", json={**dialogue_body(d), "consent": "store"})
        c.post("/corrections", json={"dialogue": d.id, "index": 0, "label": "sad"})
    with pytest.raises(DataError, match="consent 'train'"):
        stored_corrections(path)


def test_a_restarted_service_keeps_the_session(clf, location, tmp_path):
    """A new service on the same store (a restart, or another host of a PostgreSQL store) continues the session."""
    path = location
    d = named(n=6)
    with TestClient(create_app(clf, tmp_path / "reference.sqlite")) as c:
        _, _, reference = stream(c, d, "store")
    with TestClient(create_app(clf, path)) as c:
        session = c.post("/sessions", json={"consent": "store"}).json()["session"]
        for i in range(3):
            assert c.post(f"/sessions/{session}/utterances", json=utterance_body(d, i)).status_code == 200
    with TestClient(create_app(clf, path)) as c:  # a new process would see exactly this: only the store
        assert c.get("/health").json()["sessions"] == 1
        for i in range(3, len(d)):
            r = c.post(f"/sessions/{session}/utterances", json=utterance_body(d, i))
            assert r.status_code == 200 and r.json()["index"] == i
        got = c.get(f"/sessions/{session}").json()["utterances"]
    assert [u["label"] for u in got] == [u["label"] for u in reference]
    np.testing.assert_allclose(
        [list(u["probabilities"].values()) for u in got], [list(u["probabilities"].values()) for u in reference], atol=1e-5
    )


def test_retention_erases_old_dialogues_at_start_up(clf, tmp_path):
    path = tmp_path / "s.sqlite"
    old, recent = named(prefix="old-"), named(seed=8, prefix="recent-")
    with TestClient(create_app(clf, path)) as c:
        for d in (old, recent):
            c.post("/predict", json={**dialogue_body(d), "consent": "train"})
            c.post("/corrections", json={"dialogue": d.id, "index": 0, "label": "sad"})
    with CorrectionStore(path) as store:
        key = store.dialogue_key(old.id)
    ten_days_ago = (datetime.now(UTC) - timedelta(days=10)).isoformat(timespec="milliseconds")
    with sqlite3.connect(path) as db:  # written here, not through the store: its clock is the one under test
        db.execute("UPDATE dialogues SET created = ?, saved = ? WHERE id = ?", (ten_days_ago, ten_days_ago, key))
    with TestClient(create_app(clf, path, retention_days=7)):
        deadline = time.monotonic() + 20
        while CorrectionStore(path).dialogue(old.id) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
    with CorrectionStore(path) as store:
        assert store.dialogue(old.id) is None and store.corrections(old.id) == []
        assert store.dialogue(recent.id) is not None and len(store.corrections(recent.id)) == 1
    assert old.features["a"][1].astype(np.float32).tobytes() not in file_bytes(path)


def test_an_idle_none_scope_session_is_erased_when_it_makes_room(clf, tmp_path):
    path = tmp_path / "s.sqlite"
    d = named()
    with TestClient(create_app(clf, path, max_sessions=1, session_idle_seconds=0)) as c:
        stream(c, d, "none")
        assert c.post("/sessions", json={}).status_code == 201
    assert traces(path, d) == []


def test_two_workers_share_sessions_and_a_restart_keeps_them(served_model_dir, tmp_path):
    """`joyful serve --workers 2`: every utterance over a new connection (either worker), then a restart."""
    store = tmp_path / "served.sqlite"
    d = named(n=6)
    args = ("--model", str(served_model_dir), "--store", str(store), "--workers", "2")
    with serve_process(*args) as (url, _):
        session = httpx.post(f"{url}/sessions", json={"consent": "store"}).json()["session"]
        for i in range(4):
            with httpx.Client(base_url=url, timeout=60) as h:  # a new connection each time
                r = h.post(f"/sessions/{session}/utterances", json=utterance_body(d, i))
                assert r.status_code == 200 and r.json()["index"] == i
    with serve_process(*args) as (url, _):
        r = httpx.post(f"{url}/sessions/{session}/utterances", json=utterance_body(d, 4), timeout=60)
        assert r.status_code == 200 and r.json()["index"] == 4
        assert len(httpx.get(f"{url}/sessions/{session}").json()["utterances"]) == 5
