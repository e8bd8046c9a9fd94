"""The review queue and the drift monitor of the service, and `joyful monitor`.

PSI is checked against sums written out here; the monitor against streams generated
for the purpose: dialogues from the generator the model's validation data came from
(no alert), the same with audio and video missing, and dialogues whose labels lean to
one class (alerts). The validation outputs training will save are built here from the
model's validation predictions (see ``test_selective.attach_validation_outputs``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import TINY, WIDTHS
from joyful import Joyful, JoyfulConfig
from joyful.cli import app
from joyful.corrections import ServedPrediction
from joyful.monitoring import EPSILON, Reference, drift_report, psi, rate_psi
from joyful.service.app import create_app
from joyful.synthetic import DEFAULT_LABELS, generate_dialogues
from service_fixtures import dialogue_body, served_model_dir, utterance_body  # noqa: F401 - served_model_dir is a fixture
from test_selective import attach_validation_outputs


def generated(n: int, seed: int, prefix: str):
    """Dialogues as the served model's data were made (``conftest.data_dir``)."""
    return generate_dialogues(n, widths=WIDTHS, seed=seed, speakers=(1, 3), signal=2.5, prefix=prefix).dialogues


@pytest.fixture(scope="module")
def monitored(data_dir, tmp_path_factory):
    """A causal tiny model trained long enough to tell the classes apart, with validation outputs of 40 dialogues."""
    config = JoyfulConfig(**{**TINY, "epochs": 12, "causal": True, "window_future": 0})
    clf = Joyful(config).fit(data_dir / "train.jsonl", data_dir / "valid.jsonl", progress=False)
    attach_validation_outputs(clf, generated(40, 2, "ref-"))
    out = tmp_path_factory.mktemp("monitored") / "model"
    clf.save(out)
    return out


def feed(client, dialogues, *, text: bool = False, **params) -> list[dict]:
    rows = []
    for d in dialogues:
        r = client.post("/predict", json=dialogue_body(d, text=text, consent="store"), params=params)
        assert r.status_code == 200, r.text
        rows += r.json()["utterances"]
    return rows


# ---------------------------------------------------------------------- PSI
def test_psi_by_hand():
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(2) - 0.25 * math.log(0.5 / 0.75))
    assert psi([10, 30], [1, 3]) == pytest.approx(0.0)  # counts are shares once normalised
    assert psi([0, 1], [0.5, 0.5]) == pytest.approx((EPSILON - 0.5) * math.log(EPSILON / 0.5) + 0.5 * math.log(2))
    assert rate_psi(0.3, 0.1) == pytest.approx(0.2 * math.log(3) + (-0.2) * math.log(0.7 / 0.9))
    assert psi([1, 2, 3], [3, 2, 1]) == psi([3, 2, 1], [1, 2, 3]) > 0  # symmetric


def test_statistics_of_a_hand_made_stream():
    saved = {  # 10 validation utterances of two classes
        "predicted": [0] * 8 + [1] * 2, "confidence": [0.9] * 5 + [0.6] * 5,
        "correct": [True] * 5 + [True, True, False, False, False], "missing_rate": {"a": 0.1}, "n_utterances": 10,
    }
    ref = Reference.from_validation(saved, "classification", ["x", "y"], ["a"], threshold=0.7)
    assert ref.uncertain_rate == 0.5 and ref.correction_rate == 0.6  # 3 of the 5 under 0.7 are wrong
    stream = [
        ServedPrediction("d", i, "A", "x" if i < 5 else "y", 0.9 if i % 2 else 0.6, not i % 2, None,
                         {"a": i == 0}, corrected=("y" if i < 3 else None) if i < 4 else "y")
        for i in range(10)
    ]
    report = drift_report(stream, ref, threshold=0.2, min_utterances=5)
    stats = report["statistics"]
    assert stats["labels"]["value"] == {"x": 0.5, "y": 0.5}
    assert stats["labels"]["psi"] == pytest.approx(round(psi([0.5, 0.5], [0.8, 0.2]), 6))
    assert stats["uncertain_rate"]["value"] == 0.5 and stats["uncertain_rate"]["psi"] == 0
    assert stats["missing:audio"]["psi"] == pytest.approx(0.0)
    # answered: 0, 1, 2 (to y, from x: changed) and 4..9 (to y: 4 changed, 5..9 the same) → 4 of 9 changed
    assert stats["correction_rate"]["value"] == pytest.approx(round(4 / 9, 6))
    assert stats["correction_rate"]["psi"] is None  # fewer than MIN_ANSWERED answers
    # 0.42 is past 0.2 but the label mix alerts only past 2.5 × 0.2 = 0.5; at threshold 0.1 it alerts (0.25)
    assert not report["alert"] and report["shifted"] == [] and report["label_threshold"] == 0.5
    lower = drift_report(stream, ref, threshold=0.1, min_utterances=1)
    assert lower["alert"] and lower["shifted"] == ["labels"]


# ---------------------------------------------------------------------- review queue
def test_review_queue_fills_answers_and_survives_a_restart(monitored, tmp_path):
    store = tmp_path / "store.sqlite"
    clf = Joyful.load(monitored)
    d1, d2 = generated(2, 11, "rq-")
    with TestClient(create_app(clf, store, keep_text=True, abstain_below=0.9, pseudonymise=False)) as client:
        rows = feed(client, [d1], text=True)
        assert all(r["uncertain"] == (r["confidence"] < 0.9) for r in rows)
        unsure = [r for r in rows if r["uncertain"]]
        assert unsure, "the test needs some uncertain predictions"
        queue = client.get("/review").json()
        assert [(q["dialogue"], q["index"]) for q in queue] == [(d1.id, r["index"]) for r in unsure]
        first = queue[0]
        assert first["text"] == d1.texts[first["index"]] and first["speaker"] == d1.speakers[first["index"]]
        assert first["confidence"] == unsure[0]["confidence"] and first["probabilities"] == unsure[0]["probabilities"]
        # a request's own threshold wins: nothing of this dialogue is uncertain under P = 0
        assert not any(r["uncertain"] for r in feed(client, [d2], abstain_below=0))
        # streamed predictions join the queue too
        session = client.post("/sessions", json={"consent": "store", "dialogue": "live-1"}).json()["session"]
        r = client.post(f"/sessions/{session}/utterances", json=utterance_body(d2, 0, text=False),
                        params={"abstain_below": 1, "explain": False})
        assert r.status_code == 200, r.text
        assert r.json()["uncertain"] is True
        answered = client.post("/corrections", json={"dialogue": d1.id, "index": first["index"], "label": "sad"})
        assert answered.status_code == 201
        left = client.get("/review").json()
        assert (d1.id, first["index"]) not in [(q["dialogue"], q["index"]) for q in left]
        assert len(left) == len(queue) - 1 + 1  # one answered, one streamed
    with TestClient(create_app(clf, store)) as client:  # a new service on the same store
        assert client.get("/review").json() == left
        client.delete(f"/dialogues/{d1.id}")
        assert [q["dialogue"] for q in client.get("/review").json()] == ["live-1"]


def test_options_the_model_cannot_honour_are_refused(served_model_dir, tmp_path):
    clf = Joyful.load(served_model_dir)
    clf.info.extra.pop("validation_outputs", None)  # as a model saved before training kept them
    with TestClient(create_app(clf, tmp_path / "s.sqlite")) as client:
        d = generated(1, 12, "no-")[0]
        r = client.post("/predict", json=dialogue_body(d, text=False), params={"target_accuracy": 0.8})
        assert r.status_code == 422 and "retrain" in r.json()["detail"]
        r = client.post("/predict", json=dialogue_body(d, text=False), params={"abstain_below": 1.5})
        assert r.status_code == 422
        r = client.get("/monitor")
        assert r.status_code == 409 and "retrain" in r.json()["detail"]
    with pytest.raises(Exception, match="retrain"):
        create_app(clf, tmp_path / "s.sqlite", target_accuracy=0.8)


# ---------------------------------------------------------------------- drift
def monitor_after(model_dir, store, dialogues, **options) -> dict:
    with TestClient(create_app(Joyful.load(model_dir), store, abstain_below=0.7, **options)) as client:
        feed(client, dialogues)
        r = client.get("/monitor")
        assert r.status_code == 200, r.text
        return r.json()


def leaning_to_one_class(n: int) -> list:
    """Generated dialogues whose utterances are mostly of the first class: a different label distribution."""
    pool = generate_dialogues(400, widths=WIDTHS, seed=21, speakers=(1, 1), signal=2.5, prefix="lean-").dialogues
    return [d for d in pool if np.mean([lab == DEFAULT_LABELS[0] for lab in d.labels]) > 0.6][:n]


def test_no_alert_on_the_reference_stream(monitored, tmp_path):
    report = monitor_after(monitored, tmp_path / "s.sqlite", generated(30, 5, "live-"))
    assert report["n"] >= 100 and not report["alert"], report
    assert set(report["statistics"]) >= {"labels", "confidence", "uncertain_rate", "correction_rate", "missing:audio"}
    for s in report["statistics"].values():
        assert s["psi"] is None or s["psi"] < 0.2


def test_alert_on_missing_modalities_and_on_a_label_shift(monitored, tmp_path):
    silent = generated(30, 5, "mute-")
    for d in silent:
        d.features["a"] = np.full_like(d.features["a"], np.nan)
        d.features["v"] = np.full_like(d.features["v"], np.nan)
    report = monitor_after(monitored, tmp_path / "a.sqlite", silent)
    assert report["alert"] and {"missing:audio", "missing:visual"} <= set(report["shifted"])
    assert report["statistics"]["missing:audio"]["value"] == 1.0
    lean = leaning_to_one_class(12)
    report = monitor_after(monitored, tmp_path / "b.sqlite", lean)
    assert report["alert"] and "labels" in report["shifted"], report
    # recomputed here from the served labels: the share of the first class
    share = report["statistics"]["labels"]["value"][DEFAULT_LABELS[0]]
    assert share > 0.4


def test_too_small_a_window_never_alerts(monitored, tmp_path):
    silent = generated(2, 5, "few-")
    for d in silent:
        d.features["a"] = np.full_like(d.features["a"], np.nan)
    report = monitor_after(monitored, tmp_path / "s.sqlite", silent)
    assert report["shifted"] and not report["alert"] and report["n"] < 100


def test_monitor_command_writes_the_services_report(monitored, tmp_path):
    store = tmp_path / "s.sqlite"
    served = monitor_after(monitored, store, leaning_to_one_class(12))
    out = tmp_path / "drift.json"
    result = CliRunner().invoke(
        app, ["monitor", "--store", str(store), "--model", str(monitored), "--abstain-below", "0.7", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == served
    missing = CliRunner().invoke(app, ["monitor", "--store", str(tmp_path / "none.sqlite"), "--model", str(monitored)])
    assert missing.exit_code == 2 and "no such store" in missing.output


def test_a_store_written_before_predictions_were_kept_opens_and_gains_the_table(tmp_path):
    import sqlite3

    from joyful.corrections import CorrectionStore

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(  # version 1's tables, as joyful wrote them before this change
        "CREATE TABLE dialogues (id TEXT PRIMARY KEY, speakers TEXT NOT NULL, texts TEXT, labels TEXT, origin TEXT, "
        "saved TEXT NOT NULL); CREATE TABLE features (dialogue TEXT NOT NULL, modality TEXT NOT NULL, array BLOB NOT NULL, "
        "PRIMARY KEY (dialogue, modality)); CREATE TABLE corrections (id INTEGER PRIMARY KEY, dialogue TEXT NOT NULL, "
        "idx INTEGER NOT NULL, label TEXT NOT NULL, annotator TEXT, created TEXT NOT NULL); "
        "INSERT INTO dialogues VALUES ('old', '[\"A\"]', NULL, NULL, NULL, '2026-01-01T00:00:00');"
        "INSERT INTO corrections VALUES (1, 'old', 0, 'sad', 'kim', '2026-01-01T00:00:00'); PRAGMA user_version = 1;"
    )
    db.close()
    with CorrectionStore(path) as store:
        assert [(c.dialogue, c.label) for c in store.corrections()] == [(store.dialogue_key("old"), "sad")]
        assert store.review_queue() == [] and store.recent_predictions() == []
        store.save_predictions([ServedPrediction("old", 0, "A", "hap", 0.3, True, {"hap": 0.3}, {"a": False})])
        (p,) = store.recent_predictions()
        assert p.corrected == "sad" and store.review_queue() == []  # already corrected: not queued
