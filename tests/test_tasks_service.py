"""The service, its corrections and ensembles for a multilabel (emotions) and a regression (sentiment) model.

Served values are checked against the model's forward pass run here on a batch built in
the test, with the sigmoid, the clip and the per-emotion thresholds (read from the model's
``meta.json``) applied by hand, not against :meth:`Joyful.predict`, which the service calls.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from joyful import Joyful
from joyful.batching import Batch
from joyful.cli import app as cli_app
from joyful.corrections import CorrectionStore
from joyful.data.label_forms import MOSEI_EMOTIONS
from joyful.errors import DataError
from joyful.service.app import create_app
from joyful.synthetic_mosei import generate_mosei
from service_fixtures import dialogue_body, utterance_body

TASKS = ("regression", "multilabel")
WIDTHS = {"a": 16, "v": 8}
#: A small causal model (past context only), as served for live use; the multilabel one picks thresholds on validation.
SETTINGS = dict(
    modalities="av", epochs=4, batch_size=8, global_attention_dim=16, global_ff=32, specific_dim=32,
    causal=True, window_future=0, seed=3,
)


def videos(task: str, n: int, seed: int, prefix: str):
    return generate_mosei(n, task=task, widths=WIDTHS, seed=seed, prefix=prefix)


def train_model(task: str, out, **extra):
    train, valid = videos(task, 24, 1, "tr-"), videos(task, 8, 2, "va-")
    thresholds = {"thresholds": "validation"} if task == "multilabel" else {}
    Joyful(task=task, **{**SETTINGS, **thresholds, **extra}).fit(train, valid, out_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def task_model_dirs(tmp_path_factory) -> dict:
    """A saved causal regression model and a saved causal multilabel model, by task."""
    return {task: train_model(task, tmp_path_factory.mktemp(task) / "model") for task in TASKS}


@pytest.fixture(scope="module")
def models(task_model_dirs) -> dict:
    return {task: Joyful.load(path) for task, path in task_model_dirs.items()}


def client_for(clf, store):
    return TestClient(create_app(clf, store))


def sample(task: str, seed: int = 9, n: int = 6):
    one = generate_mosei(1, task=task, widths=WIDTHS, seed=seed, min_segments=n, max_segments=n, prefix=f"req{seed}-")
    return one.dialogues[0]


# ---------------------------------------------------------------------- references computed here
@torch.no_grad()
def logits_by_hand(model, d) -> np.ndarray:
    """The network's raw outputs for dialogue ``d``: one forward pass on a batch built here (one speaker per video)."""
    model.eval()
    n = len(d)
    first_seen: dict[str, int] = {}
    speaker = torch.tensor([first_seen.setdefault(s, len(first_seen)) for s in d.speakers]).clamp(max=model.n_speakers - 1)
    x = {m: torch.tensor(np.asarray(d.features[m], dtype=np.float32)) for m in ("a", "v")}
    k = len(MOSEI_EMOTIONS)
    y = torch.full((n, k), float("nan")) if model.task.name == "multilabel" else torch.full((n,), float("nan"))
    batch = Batch(ids=[d.id], x=x, speaker=speaker, y=y, lengths=torch.tensor([n]), batch=torch.zeros(n, dtype=torch.long),
                  position=torch.arange(n))
    return model(batch).logits.float().numpy()


def served_by_hand(model, task: str, d) -> np.ndarray:
    """What the service should give: per-emotion sigmoid probabilities ``(n, 6)`` of the logits divided by the
    model's calibration temperature, or the score clipped to [-3, 3] (scores are not calibrated)."""
    z = logits_by_hand(model, d)
    return 1 / (1 + np.exp(-z / model.temperature)) if task == "multilabel" else np.clip(z[:, 0], -3, 3)


def meta_thresholds(model_dir) -> list[float]:
    return json.loads((model_dir / "meta.json").read_text())["thresholds"]


def present(p: np.ndarray, thresholds) -> list[str]:
    return [e for e, q, t in zip(MOSEI_EMOTIONS, p, thresholds, strict=True) if q >= t]


def occluded(d, modality: str):
    return dataclasses.replace(d, features={m: np.full_like(x, np.nan) if m == modality else x for m, x in d.features.items()})


def support(task: str, out: np.ndarray, decided: np.ndarray | None) -> np.ndarray:
    """Regression: the score; multilabel: mean confidence in the decision (p when present, 1 - p when absent)."""
    return out if task == "regression" else np.where(decided, out, 1 - out).mean(-1)


def assert_served(task: str, utterances: list[dict], expected: np.ndarray, thresholds) -> None:
    """The answered rows against the hand computation (the service rounds to 6 decimals)."""
    if task == "regression":
        np.testing.assert_allclose([u["label"] for u in utterances], expected, atol=2e-6)
        assert all(isinstance(u["label"], float) and u["probabilities"] is None for u in utterances)
        return
    got = np.array([[u["probabilities"][e] for e in MOSEI_EMOTIONS] for u in utterances])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert [u["label"] for u in utterances] == [present(p, thresholds) for p in expected]


# ---------------------------------------------------------------------- model info, predict, explain
def test_model_info_says_the_task(models, task_model_dirs, tmp_path):
    with client_for(models["regression"], tmp_path / "r.sqlite") as c:
        info = c.get("/model").json()
        assert info["task"] == "regression" and info["labels"] == ["sentiment"] and info["label_set"] == "sentiment"
        assert info["score_range"] == [-3.0, 3.0] and info["thresholds"] is None
    with client_for(models["multilabel"], tmp_path / "m.sqlite") as c:
        info = c.get("/model").json()
        assert info["task"] == "multilabel" and info["labels"] == list(MOSEI_EMOTIONS) and info["label_set"] == "mosei6"
        assert info["thresholds"] == meta_thresholds(task_model_dirs["multilabel"]) and info["score_range"] is None


@pytest.mark.parametrize("task", TASKS)
def test_predict_serves_the_tasks_form_and_explains_it(task, task_model_dirs, tmp_path):
    clf = Joyful.load(task_model_dirs[task])
    thresholds = meta_thresholds(task_model_dirs[task]) if task == "multilabel" else None
    d = sample(task)
    if task == "regression":  # the output layer's bias raised, so that some raw scores pass the scale and the clip shows
        (head,) = [m for m in clf.model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1]
        with torch.no_grad():
            head.bias += 3.0 - float(logits_by_hand(clf.model, d)[:, 0].mean())
        assert logits_by_hand(clf.model, d)[:, 0].max() > 3
    with client_for(clf, tmp_path / "s.sqlite") as c:
        r = c.post("/predict?explain=true", json=dialogue_body(d, text=False, label=True, consent="store"))
    assert r.status_code == 200, r.text
    utterances = r.json()["utterances"]
    base = served_by_hand(clf.model, task, d)
    assert_served(task, utterances, base, thresholds)
    decided = None if task == "regression" else base >= np.array(thresholds)
    for m, name in (("a", "audio"), ("v", "visual")):  # the drop in support without each modality
        drop = support(task, base, decided) - support(task, served_by_hand(clf.model, task, occluded(d, m)), decided)
        np.testing.assert_allclose([u["explanation"]["modalities"][name] for u in utterances], drop, atol=2e-6)
    stored = CorrectionStore(tmp_path / "s.sqlite").dialogue(d.id)
    assert stored.labels == d.labels  # gold labels kept in their own form: tuples, or floats


@pytest.mark.parametrize("task", TASKS)
def test_streamed_answers_equal_the_forward_pass_on_each_prefix(task, models, task_model_dirs, tmp_path):
    clf = models[task]
    thresholds = meta_thresholds(task_model_dirs[task]) if task == "multilabel" else None
    d = sample(task, seed=10, n=5)
    with client_for(clf, tmp_path / "s.sqlite") as c:
        session = c.post("/sessions", json={"consent": "store", "dialogue": "live-video"}).json()["session"]
        answers = []
        for i in range(len(d)):
            r = c.post(f"/sessions/{session}/utterances?explain=false", json=utterance_body(d, i, text=False, label=True))
            assert r.status_code == 200, r.text
            answers.append(r.json())
        listed = c.get(f"/sessions/{session}").json()["utterances"]
    for i, a in enumerate(answers):
        prefix = dataclasses.replace(d, speakers=d.speakers[: i + 1], features={m: x[: i + 1] for m, x in d.features.items()})
        assert_served(task, [a], served_by_hand(clf.model, task, prefix)[i : i + 1], thresholds)
    assert [u["label"] for u in listed] == [a["label"] for a in answers]
    assert CorrectionStore(tmp_path / "s.sqlite").dialogue("live-video").labels == d.labels


# ---------------------------------------------------------------------- corrections
def test_regression_corrections_are_scores(models, tmp_path):
    store = tmp_path / "s.sqlite"
    d = sample("regression")
    with client_for(models["regression"], store) as c:
        c.post("/predict", json=dialogue_body(d, text=False, consent="train"))
        r = c.post("/corrections", json={"dialogue": d.id, "index": 1, "label": -1.5, "annotator": "kim"})
        assert r.status_code == 201, r.text
        assert r.json()["label"] == -1.5 and r.json()["annotator"] == "kim"
        assert c.post("/corrections", json={"dialogue": d.id, "index": 3, "label": 2}).json()["label"] == 2.0
        assert [x["label"] for x in c.get("/corrections").json()] == [-1.5, 2.0]
    (fixed,) = CorrectionStore(store).corrected_dialogues()
    assert fixed.labels == [None, -1.5, None, 2.0, None, None] and isinstance(fixed.labels[3], float)


def test_multilabel_corrections_are_lists_of_emotions(models, tmp_path):
    store = tmp_path / "s.sqlite"
    d = sample("multilabel")
    with client_for(models["multilabel"], store) as c:
        c.post("/predict", json=dialogue_body(d, text=False, consent="train"))
        r = c.post("/corrections", json={"dialogue": d.id, "index": 0, "label": ["fear", "happy"]})
        assert r.status_code == 201 and r.json()["label"] == ["happy", "fear"]  # in the model's label order
        assert c.post("/corrections", json={"dialogue": d.id, "index": 2, "label": []}).json()["label"] == []
        assert [x["label"] for x in c.get("/corrections", params={"dialogue": d.id}).json()] == [["happy", "fear"], []]
    (fixed,) = CorrectionStore(store).corrected_dialogues()
    assert fixed.labels[:3] == [("happy", "fear"), None, ()]


@pytest.mark.parametrize(
    ("task", "label", "words"),
    [
        ("regression", 3.5, "a score must be a number in [-3, 3], not 3.5"),
        ("regression", "happy", "the model is a regression model"),
        ("regression", ["happy"], "must be a number"),
        ("regression", True, "label"),  # not a score of 1
        ("regression", {"score": 1}, "label"),
        ("multilabel", "happy", "the model is a multilabel model, so the label must be a list"),
        ("multilabel", ["joy"], "unknown label 'joy'"),
        ("multilabel", ["sad", "sad"], "'sad' appears twice"),
        ("multilabel", 1.0, "must be a list"),
    ],
)
def test_a_correction_in_the_wrong_form_is_a_422_naming_the_label(task, label, words, models, tmp_path):
    d = sample(task)
    with client_for(models[task], tmp_path / "s.sqlite") as c:
        c.post("/predict", json=dialogue_body(d, text=False, consent="store"))
        r = c.post("/corrections", json={"dialogue": d.id, "index": 1, "label": label})
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert words in detail and "label" in detail, detail
        assert c.get("/corrections").json() == []


@pytest.mark.parametrize(
    ("task", "label", "words"),
    [("regression", 9.0, "not 9.0"), ("regression", "sad", "regression model"), ("multilabel", ["bored"], "'bored'")],
)
def test_a_streamed_gold_label_in_the_wrong_form_is_refused(task, label, words, models, tmp_path):
    d = sample(task)
    with client_for(models[task], tmp_path / "s.sqlite") as c:
        session = c.post("/sessions", json={"consent": "store"}).json()["session"]
        r = c.post(f"/sessions/{session}/utterances", json={**utterance_body(d, 0, text=False), "label": label})
        assert r.status_code == 422 and words in r.json()["detail"] and "utterance 0" in r.json()["detail"], r.text


def test_the_store_tells_encoded_labels_from_class_names(tmp_path):
    path = tmp_path / "s.sqlite"
    with CorrectionStore(path) as store:
        store.add_correction("a", 0, "3")  # a class named "3" stays a class name
        store.add_correction("a", 1, ("sad",))
        store.add_correction("a", 2, 0.5)
        with pytest.raises(DataError) as e:
            store.add_correction("a", 3, '{"score": 1}')
        assert e.value.field == "label"
    rows = sqlite3.connect(path).execute("SELECT label FROM corrections ORDER BY id").fetchall()
    assert rows == [("3",), ('{"labels": ["sad"]}',), ('{"score": 0.5}',)]  # a class name as it always was
    with CorrectionStore(path) as store:
        assert [c.label for c in store.corrections()] == ["3", ("sad",), 0.5]


def test_correct_command_takes_emotions_or_a_score(task_model_dirs, tmp_path):
    run = lambda *args: CliRunner().invoke(cli_app, ["correct", "--store", str(store), "--dialogue", "v1", *args])  # noqa: E731
    store = tmp_path / "s.sqlite"
    with CorrectionStore(store) as s:
        s.save_dialogue(sample("regression"))
        s.save_dialogue(dataclasses.replace(sample("multilabel"), id="v1"))
    result = run("--index", "1", "--emotions", "sad, fear", "--model", str(task_model_dirs["multilabel"]))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["label"] == ["sad", "fear"]
    assert json.loads(run("--index", "2", "--emotions", "").stdout)["label"] == []
    assert json.loads(run("--index", "3", "--score", "-1.5").stdout)["label"] == -1.5
    result = run("--index", "1", "--score", "1", "--label", "sad")
    assert result.exit_code == 2 and "exactly one of --label" in result.output
    result = run("--index", "1", "--label", "sad", "--model", str(task_model_dirs["multilabel"]))
    assert result.exit_code == 2 and "multilabel model" in result.output
    result = run("--index", "1", "--score", "4", "--model", str(task_model_dirs["regression"]))
    assert result.exit_code == 2 and "[-3, 3]" in result.output
    with CorrectionStore(store) as s:
        assert [c.label for c in s.corrections()] == [("sad", "fear"), (), -1.5]


# ---------------------------------------------------------------------- ensembles
@pytest.mark.parametrize("task", TASKS)
def test_an_ensemble_serves_the_mean_of_its_members(task, tmp_path):
    clf = Joyful.load(train_model(task, tmp_path / "model", ensemble=2))
    members = list(clf.model.members)
    assert len(members) == 2
    d = sample(task, seed=12)
    with client_for(clf, tmp_path / "s.sqlite") as c:
        utterances = c.post("/predict", json=dialogue_body(d, text=False, consent="store")).json()["utterances"]
    mean = np.mean([served_by_hand(m, task, d) for m in members], axis=0)  # sigmoid or clip per member, then the mean
    if task == "multilabel":  # one temperature calibrates the ensemble's mean (members are at 1)
        assert all(m.temperature == 1.0 for m in members)
        mean = 1 / (1 + np.exp(-np.log(mean / (1 - mean)) / clf.model.temperature))
    assert_served(task, utterances, mean, meta_thresholds(tmp_path / "model") if task == "multilabel" else None)
