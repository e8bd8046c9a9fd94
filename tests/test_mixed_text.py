"""Texts with and without text vectors in one input: encoded when the vectors are the encoder's, else refused.

The failure this guards against: one utterance carrying ``text_features`` used to stop the
texts of all the others from being encoded, so they were silently treated as missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import TINY
from joyful import Joyful, JoyfulConfig
from joyful.data.schema import Dialogue, DialogueSet
from joyful.data.text_encoder import TextEncoder
from joyful.data.text_features import SUPPLIED, ensure_text_features
from joyful.errors import DataError
from joyful.io.jsonl import write_jsonl
from joyful.service.app import create_app

PHRASES = {
    "hap": ["I am so glad to see you", "this is wonderful news", "what a lovely day"],
    "sad": ["I miss her so much", "nothing ever goes right", "I feel so alone"],
    "ang": ["get out of my way", "this is outrageous", "stop lying to me"],
    "neu": ["the meeting is at noon", "I put it on the table", "we take the next train"],
}


def text_dialogues(n: int, seed: int, prefix: str) -> list[Dialogue]:
    rng = np.random.default_rng(seed)
    labels = list(PHRASES)
    out = []
    for k in range(n):
        length = int(rng.integers(5, 10))
        ys = [labels[int(rng.integers(len(labels)))] for _ in range(length)]
        texts = [PHRASES[y][int(rng.integers(3))] + ("!" if rng.random() < 0.3 else "") for y in ys]
        out.append(Dialogue(f"{prefix}{k}", ["A" if i % 2 == 0 else "B" for i in range(length)], texts=texts, labels=ys))
    return out


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("text-cache")
    before = os.environ.get("JOYFUL_CACHE_DIR")
    os.environ["JOYFUL_CACHE_DIR"] = str(path)
    yield path
    if before is None:
        os.environ.pop("JOYFUL_CACHE_DIR")
    else:
        os.environ["JOYFUL_CACHE_DIR"] = before


@pytest.fixture(scope="module")
def text_model(cache_dir, tmp_path_factory):
    """A tiny text-only model on MiniLM vectors it computes itself."""
    d = tmp_path_factory.mktemp("mixed")
    write_jsonl(text_dialogues(24, 1, "tr-"), d / "train.jsonl")
    write_jsonl(text_dialogues(6, 2, "va-"), d / "valid.jsonl")
    cfg = JoyfulConfig(**{**TINY, "epochs": 15, "modalities": "t", "label_set": "auto"})
    Joyful(cfg).fit(d / "train.jsonl", d / "valid.jsonl", out_dir=d / "model", progress=False)
    return d


def minilm(texts: list[str]) -> np.ndarray:
    return TextEncoder(show_progress=False).encode(texts)


def write_variants(d, dialogue: Dialogue) -> dict[str, object]:
    """The same dialogue as text only, with the encoder's own vector on utterance 0, and with a foreign one."""
    own = minilm(dialogue.texts[:1])[0]
    files = {}
    for name, vector in (("text", None), ("own", own), ("foreign", np.ones_like(own) / np.sqrt(own.size))):
        record = {"dialogue": dialogue.id, "utterances": [{"speaker": s, "text": t} for s, t in zip(dialogue.speakers, dialogue.texts)]}
        if vector is not None:
            record["utterances"][0]["text_features"] = [float(v) for v in vector]
        files[name] = d / f"{name}.jsonl"
        files[name].write_text(json.dumps(record) + "\n")
    return files


def joyful_cli(*args, cache_dir):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "JOYFUL_CACHE_DIR": str(cache_dir)}
    return subprocess.run([sys.executable, "-m", "joyful.cli", *args], capture_output=True, text=True, env=env, timeout=600)


def test_predict_gives_the_same_labels_whether_or_not_one_utterance_brings_the_encoders_vector(text_model, cache_dir, tmp_path):
    dialogue = text_dialogues(1, 9, "held-")[0]
    files = write_variants(tmp_path, dialogue)
    outputs = {}
    for name in ("text", "own"):
        out = tmp_path / f"{name}.pred.jsonl"
        proc = joyful_cli("predict", "--model", str(text_model / "model"), "--data", str(files[name]), "--out", str(out),
                          cache_dir=cache_dir)
        assert proc.returncode == 0, proc.stderr
        assert "warning" not in proc.stderr
        outputs[name] = [json.loads(line) for line in out.read_text().splitlines()]
    labels = [r["label"] for r in outputs["text"]]
    assert len(set(labels)) > 1  # the model reads the texts, so a text treated as missing would change labels
    assert [r["label"] for r in outputs["own"]] == labels
    for a, b in zip(outputs["own"], outputs["text"]):
        for k in a["probabilities"]:
            assert abs(a["probabilities"][k] - b["probabilities"][k]) < 1e-4


def test_foreign_vectors_beside_texts_are_refused_naming_the_utterance(text_model, cache_dir, tmp_path):
    dialogue = text_dialogues(1, 9, "held-")[0]
    files = write_variants(tmp_path, dialogue)
    out = tmp_path / "foreign.pred.jsonl"
    proc = joyful_cli("predict", "--model", str(text_model / "model"), "--data", str(files["foreign"]), "--out", str(out),
                      cache_dir=cache_dir)
    assert proc.returncode == 2 and not out.exists()
    message = proc.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert str(files["foreign"]) in message and "'held-0'" in message and "utterance 1" in message
    assert "text_features" in message


def test_nan_text_vector_is_an_error_not_a_missing_text(text_model, cache_dir, tmp_path):
    dialogue = text_dialogues(1, 9, "held-")[0]
    record = {"dialogue": dialogue.id, "utterances": [{"speaker": s, "text": t} for s, t in zip(dialogue.speakers, dialogue.texts)]}
    record["utterances"][2]["text_features"] = [float("nan")] * 384
    path = tmp_path / "nan.jsonl"
    path.write_text(json.dumps(record) + "\n")  # json.dumps writes the NaN literal
    assert "NaN" in path.read_text()
    for command in (["predict", "--out", str(tmp_path / "p.jsonl")], ["evaluate"]):
        proc = joyful_cli(command[0], "--model", str(text_model / "model"), "--data", str(path), *command[1:], cache_dir=cache_dir)
        assert proc.returncode == 2, proc.stderr
        message = proc.stderr.strip()
        assert "\n" not in message and "NaN or infinite" in message and "utterance 2" in message
    assert not (tmp_path / "p.jsonl").exists()


def test_a_model_trained_on_foreign_vectors_refuses_texts_to_encode(cache_dir, tmp_path):
    train = text_dialogues(12, 3, "tr-")
    rng = np.random.default_rng(0)
    for d in train:  # vectors of "another encoder": random, 384 wide like MiniLM's
        d.features["t"] = rng.normal(size=(len(d), 384)).astype(np.float32)
    cfg = JoyfulConfig(**{**TINY, "epochs": 1, "modalities": "t", "label_set": "auto"})
    clf = Joyful(cfg).fit(train, progress=False)
    assert clf.info.extra["text_features"] == SUPPLIED
    with pytest.raises(DataError, match="trained on text_features that are not its text encoder's") as e:
        clf.predict(text_dialogues(1, 4, "new-"))
    assert e.value.field == "text_features" and e.value.index == 0


class CountingEncoder:
    """A stand-in encoder with known vectors: one-hot by text length (an independent reference)."""

    name = "counting"

    def __init__(self):
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        out = np.zeros((len(texts), 8), dtype=np.float32)
        out[np.arange(len(texts)), [len(t) % 8 for t in texts]] = 1.0
        return out


def test_mixed_set_is_filled_only_where_text_lacks_a_vector():
    enc = CountingEncoder()
    own = enc.encode(["hello"])  # the encoder's vector for "hello"
    enc.calls.clear()
    given = np.full((3, 8), np.nan, dtype=np.float32)
    given[0] = own[0]
    data = DialogueSet(
        [Dialogue("a", ["A", "B", "A"], features={"t": given}, texts=["hello", "hi", ""]),
         Dialogue("b", ["A", "B"], texts=["good day", "bye"])],
        "mem",
    )
    ensure_text_features(data, enc)
    a, b = data.dialogues
    assert enc.calls[-1] == ["hi", "good day", "bye"]  # only the texts without a vector (after the check)
    np.testing.assert_array_equal(a.features["t"][0], own[0])
    assert a.features["t"][1, len("hi") % 8] == 1.0 and np.isnan(a.features["t"][2]).all()  # empty text: missing
    assert b.features["t"][0, len("good day") % 8] == 1.0
    assert np.isnan(given[1]).all()  # the caller's array is untouched


def test_vectors_without_texts_to_check_them_are_not_mixed_with_encoded_ones():
    enc = CountingEncoder()
    data = DialogueSet(
        [Dialogue("a", ["A", "B"], features={"t": np.ones((2, 8), dtype=np.float32)}, texts=["", ""]),
         Dialogue("b", ["A"], texts=["bye"])],
        "mem",
    )
    with pytest.raises(DataError, match="no text to check them against") as e:
        ensure_text_features(data, enc)
    assert (e.value.dialogue, e.value.index, e.value.field) == ("b", 0, "text_features")


def test_service_predict_and_sessions_follow_the_rule(text_model, cache_dir):
    clf = Joyful.load(text_model / "model")
    dialogue = text_dialogues(1, 11, "svc-")[0]
    plain = {"dialogue": "p1", "utterances": [{"speaker": s, "text": t} for s, t in zip(dialogue.speakers, dialogue.texts)]}
    mixed = json.loads(json.dumps(plain))
    mixed["dialogue"] = "p2"
    mixed["utterances"][0]["text_features"] = [float(v) for v in minilm(dialogue.texts[:1])[0]]
    with TestClient(create_app(clf, text_model / "store.sqlite")) as c:
        a = c.post("/predict", json=plain).json()["utterances"]
        b = c.post("/predict", json=mixed).json()["utterances"]
        assert [u["label"] for u in a] == [u["label"] for u in b]
        foreign = json.loads(json.dumps(mixed))
        foreign["dialogue"] = "p3"
        foreign["utterances"][0]["text_features"] = [1.0] * 384
        r = c.post("/predict", json=foreign)
        assert r.status_code == 422 and "utterance 1" in r.text
        session = c.post("/sessions", json={}).json()["session"]
        first = {"speaker": "A", "text": dialogue.texts[0], "text_features": mixed["utterances"][0]["text_features"]}
        assert c.post(f"/sessions/{session}/utterances?explain=false", json=first).status_code == 200
        r = c.post(f"/sessions/{session}/utterances?explain=false", json={"speaker": "B", "text": dialogue.texts[1]})
        assert r.status_code == 422 and "utterance 1" in r.text and "text_features" in r.text


def test_a_text_that_is_not_a_string_is_a_data_error(cache_dir):
    d = Dialogue("odd", ["A", "B"], texts=["fine", 42], labels=["hap", "sad"])
    cfg = JoyfulConfig(**{**TINY, "epochs": 1, "modalities": "t", "label_set": "auto"})
    with pytest.raises(DataError, match="text is not a string") as e:
        Joyful(cfg).fit([d], progress=False)
    assert (e.value.dialogue, e.value.index, e.value.field) == ("odd", 1, "text")
