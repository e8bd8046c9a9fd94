"""Utterances streamed as recordings: the service extracts their features as ``joyful extract`` did for the model.

The model is trained on audio features that ``joyful extract`` made from speech that
espeak-ng generates here; the same WAV posted to a streaming session must get the
features the extraction wrote to the training data, and exactly the prediction of the
same utterance sent as JSON with those features.
"""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from media_fixtures import face_video, require_tools, scene_video, speech, write_manifest
from service_fixtures import file_bytes

from conftest import TINY
from joyful import Joyful, JoyfulConfig
from joyful.io.jsonl import read_jsonl
from joyful.service.app import create_app

#: Two speakers whose voices carry the label: a quick high American voice, a slow low British one.
SPEECH = {
    "hello.wav": ("What a lovely day this is!", "en-us", 175, 70),
    "great.wav": ("That is wonderful news.", "en-us", 175, 70),
    "keys.wav": ("I lost my keys again.", "en-gb", 110, 25),
}
LABELS = {"hello.wav": "happy", "great.wav": "happy", "keys.wav": "sad", "face.mp4": "sad"}  # the face speaks keys.wav
#: The training dialogues, as the recording of each utterance.
DIALOGUES = [("hello.wav", "keys.wav"), ("face.mp4", "great.wav"), ("great.wav", "face.mp4", "hello.wav")]


@pytest.fixture(scope="session")
def recorded_model(tmp_path_factory):
    """``(model dir, {file name: path}, extracted dataset)``: a tiny causal model of extracted voices and faces.

    The dataset's first utterance is ``hello.wav``, its second dialogue's first ``face.mp4``.
    """
    from joyful.extract.runner import extract_dataset

    require_tools()
    folder = tmp_path_factory.mktemp("recordings")
    media = {name: speech(folder / name, *spoken) for name, spoken in SPEECH.items()}
    media["face.mp4"] = face_video(folder / "face.mp4", audio=media["keys.wav"], seconds=1.5)
    rows = [
        {"dialogue": f"r{k}", "index": i, "speaker": "AB"[i % 2], "media": name, "label": LABELS[name]}
        for k, names in enumerate(DIALOGUES) for i, name in enumerate(names)
    ]
    data = folder / "data.jsonl"
    extract_dataset(write_manifest(folder / "manifest.csv", rows), data, text_encoder=None, audio_features="librosa",
                    visual_features="face", fps=2.0, workers=1, progress=False)
    model = folder / "model"
    config = JoyfulConfig(**{**TINY, "epochs": 2, "modalities": "av", "causal": True, "window_future": 0})
    Joyful(config).fit(data, data, out_dir=model, progress=False)
    return model, media, data


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The temporary directory the service may use, watched: it must be empty after every request."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def client(recorded_model, tmp_path, scratch):
    with TestClient(create_app(Joyful.load(recorded_model[0]), tmp_path / "store.sqlite")) as c:
        yield c


def new_session(client) -> str:
    r = client.post("/sessions", json={})
    assert r.status_code == 201, r.text
    return r.json()["session"]


def post_recording(client, session: str, files: dict, **fields: str):
    return client.post(f"/sessions/{session}/utterances", data={"speaker": "A", **fields}, files=files)


def test_recordings_get_the_features_joyful_extract_gave_and_the_json_prediction(client, recorded_model, scratch,
                                                                                 tmp_path):
    _, media, data = recorded_model
    session = new_session(client)
    wav, video = media["hello.wav"].read_bytes(), media["face.mp4"].read_bytes()
    r = post_recording(client, session, {"audio": ("hello.wav", wav, "audio/wav")}, text="What a lovely day")
    assert r.status_code == 200, r.text
    assert list(scratch.iterdir()) == []  # the private copy is gone
    # A video gives the visual features, and the audio ones from its sound, as a manifest row's one media file.
    r2 = post_recording(client, session, {"video": ("face.mp4", video, "video/mp4")}, speaker="B", label="sad")
    assert r2.status_code == 200, r2.text
    got = [r.json(), r2.json()]
    assert [(u["index"], u["speaker"]) for u in got] == [(0, "A"), (1, "B")]
    assert all(u["label"] in ("happy", "sad") for u in got)

    hello, face = (d.features for d in read_jsonl(data).dialogues[:2])  # as `joyful extract` wrote them
    assert "v" not in hello  # a WAV has no pictures
    extracted = {"a": np.stack([hello["a"][0], face["a"][0]]), "v": np.stack([np.full_like(face["v"][0], np.nan),
                                                                           face["v"][0]])}
    stored = client.app.state.store.dialogue(got[0]["dialogue"])
    for m in ("a", "v"):
        np.testing.assert_array_equal(stored.features[m], extracted[m])
    assert stored.labels == [None, "sad"]
    kept = file_bytes(tmp_path / "store.sqlite")
    assert wav[len(wav) // 2 : len(wav) // 2 + 64] not in kept and video[-64:] not in kept  # features only

    typed, url = [], f"/sessions/{new_session(client)}/utterances"
    for i, speaker in enumerate("AB"):
        vectors = {field: [float(x) for x in extracted[m][i]] for m, field in (("a", "audio"), ("v", "visual"))
                   if not np.isnan(extracted[m][i]).any()}
        typed.append(client.post(url, json={"speaker": speaker, **vectors}).json())
    assert [u["probabilities"] for u in typed] == [u["probabilities"] for u in got]


def test_a_file_that_cannot_be_decoded_is_422_naming_the_field_and_file(client, scratch, tmp_path):
    session = new_session(client)
    r = post_recording(client, session, {"audio": ("broken.webm", b"\x1aE\xdf\xa3 not a recording", "audio/webm")})
    assert r.status_code == 422
    assert "'audio'" in r.json()["detail"] and "broken.webm" in r.json()["detail"]
    silent = scene_video(tmp_path / "silent.mp4", audio=None, seconds=0.5).read_bytes()
    r = post_recording(client, session, {"audio": ("silent.mp4", silent, "video/mp4")})  # pictures, no sound
    assert r.status_code == 422 and "'audio'" in r.json()["detail"] and "no audio stream" in r.json()["detail"]
    assert list(scratch.iterdir()) == []  # removed on error too
    assert client.get(f"/sessions/{session}").json()["utterances"] == []


def test_a_model_without_extraction_settings_is_422(recorded_model, tmp_path, scratch):
    clf = Joyful.load(recorded_model[0])
    del clf.info.extra["extraction"]  # as a model trained on vectors made elsewhere
    with TestClient(create_app(clf, tmp_path / "store.sqlite")) as c:
        wav = recorded_model[1]["hello.wav"].read_bytes()
        r = post_recording(c, new_session(c), {"audio": ("hello.wav", wav, "audio/wav")})
    assert r.status_code == 422
    assert "'audio'" in r.json()["detail"] and "no extraction settings" in r.json()["detail"]


def test_json_stays_as_it_was_and_a_form_needs_a_recording(client):
    session = new_session(client)
    url = f"/sessions/{session}/utterances"
    assert client.post(url, content=b'{"speaker": ', headers={"Content-Type": "application/json"}).status_code == 400
    r = client.post(url, json={"speaker": ""})
    assert r.status_code == 422 and r.json()["detail"].startswith("speaker:")
    r = client.post(url, content=json.dumps({"speaker": "A"}), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post(url, data={"speaker": "A", "text": "no recording"})  # urlencoded: neither JSON nor multipart
    assert r.status_code == 415
    r = client.post(url, data={"speaker": "A"}, files={"other": ("x.wav", b"RIFF", "audio/wav")})
    assert r.status_code == 422 and "needs a recording" in r.json()["detail"]
    r = client.post(url, data={"speaker": "A", "audio": "not a file"}, files={"video": ("x.webm", b"x", "video/webm")})
    assert r.status_code == 422 and "'audio'" in r.json()["detail"]

    body = client.get("/openapi.json").json()["paths"]["/sessions/{session_id}/utterances"]["post"]["requestBody"]
    assert set(body["content"]) == {"application/json", "multipart/form-data"}
    form = body["content"]["multipart/form-data"]["schema"]["properties"]
    assert form["audio"]["format"] == form["video"]["format"] == "binary"
