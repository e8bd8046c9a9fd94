"""Explanations: leave-one-modality-out and context-occlusion attributions, checked against the model."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY, WIDTHS
from joyful import Joyful, JoyfulConfig
from joyful.data.schema import Dialogue
from joyful.synthetic import generate_dialogues


@pytest.fixture(scope="module")
def model(data_dir):
    return Joyful(JoyfulConfig(**{**TINY, "epochs": 4})).fit(data_dir / "train.jsonl", data_dir / "valid.jsonl", progress=False)


@pytest.fixture(scope="module")
def dialogue():
    d = generate_dialogues(1, widths=WIDTHS, seed=31, min_length=8, max_length=8, signal=2.5).dialogues[0]
    d.labels = None
    return d


def p_of(rows, i, label):
    return rows[i]["probabilities"][label]


def test_explanation_shape(model, dialogue):
    rows = model.predict([dialogue], explain=True, top_k=2)
    assert len(rows) == len(dialogue)
    for r in rows:
        e = r["explanation"]
        assert set(e["modalities"]) == {"text", "audio", "visual"}
        assert len(e["context"]) == 2 and all(c["index"] != r["index"] for c in e["context"])
        assert all(set(c) == {"index", "speaker", "influence"} for c in e["context"])
        influences = [abs(c["influence"]) for c in e["context"]]
        assert influences == sorted(influences, reverse=True)
    assert [r["probabilities"] for r in rows] == [r["probabilities"] for r in model.predict([dialogue])]


def test_modality_contribution_is_the_drop_when_that_modality_is_missing(model, dialogue):
    rows = model.predict([dialogue], explain=True)
    without_audio = Dialogue(dialogue.id, dialogue.speakers, {**dialogue.features, "a": np.full_like(dialogue.features["a"], np.nan)})
    with pytest.warns(UserWarning):
        masked = model.predict([without_audio])
    for i, r in enumerate(rows):
        expected = p_of(rows, i, r["label"]) - p_of(masked, i, r["label"])
        assert r["explanation"]["modalities"]["audio"] == pytest.approx(expected, abs=2e-6)


def test_context_influence_is_the_drop_when_that_utterance_is_hidden(model, dialogue):
    rows = model.predict([dialogue], explain=True, top_k=len(dialogue))
    j = 3
    hidden = Dialogue(dialogue.id, dialogue.speakers, {m: x.copy() for m, x in dialogue.features.items()})
    for x in hidden.features.values():
        x[j] = np.nan
    masked = model.predict([hidden])
    for i, r in enumerate(rows):
        if i == j:
            continue
        got = next(c["influence"] for c in r["explanation"]["context"] if c["index"] == j)
        assert got == pytest.approx(p_of(rows, i, r["label"]) - p_of(masked, i, r["label"]), abs=2e-6)


def test_causal_model_is_never_influenced_by_later_utterances(data_dir, dialogue):
    clf = Joyful(JoyfulConfig(**{**TINY, "epochs": 2, "causal": True, "window_future": 0})).fit(
        data_dir / "train.jsonl", data_dir / "valid.jsonl", progress=False
    )
    rows = clf.predict([dialogue], explain=True, top_k=len(dialogue))
    for r in rows:
        later = [c["influence"] for c in r["explanation"]["context"] if c["index"] > r["index"]]
        assert all(abs(v) < 1e-6 for v in later)
        earlier = [c["influence"] for c in r["explanation"]["context"] if c["index"] < r["index"]]
        assert r["index"] == 0 or any(abs(v) > 1e-6 for v in earlier)
