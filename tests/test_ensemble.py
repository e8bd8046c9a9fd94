"""Seed ensembles: members trained one after another, saved together, predicting the mean probability.

The references here are built in the test: each member is rebuilt on its own from the
saved weights (``members.<k>.*`` in ``model.pt``), run through its own forward pass, and
the members' softmax probabilities are averaged by hand. An ensemble that used only one
member, or averaged logits instead of probabilities, disagrees with that mean.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from conftest import TINY
from joyful import Joyful, JoyfulConfig
from joyful.batching import IGNORE_INDEX, collate, encode_dialogues
from joyful.model import JoyfulModel
from joyful.training.ensemble import EnsembleModel


@pytest.fixture(scope="module")
def ensemble(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ens")
    clf = Joyful(JoyfulConfig(**{**TINY, "epochs": 3, "ensemble": 2})).fit(
        data_dir / "train.jsonl", data_dir / "valid.jsonl", out_dir=out, progress=False
    )
    return clf, out


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def saved_members(out) -> list[JoyfulModel]:
    """Each member rebuilt alone from the ensemble's ``model.pt`` (keys ``members.<k>.<param>``)."""
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    meta = json.loads((out / "meta.json").read_text())
    loaded = Joyful.load(out)  # only for the config, widths and sizes the members were built with
    members = []
    for k in range(meta["ensemble_members"]):
        prefix = f"members.{k}."
        own = {name[len(prefix):]: v for name, v in state.items() if name.startswith(prefix)}
        m = JoyfulModel(loaded.info.config, loaded.info.widths, len(loaded.info.label_set.labels), loaded.info.n_speakers)
        m.load_state_dict(own)  # strict: every parameter of a single model is there
        members.append(m.eval())
    assert sum(len(dict(m.state_dict())) for m in members) == len(state)  # nothing else in the file
    return members


@torch.no_grad()
def member_outputs(members, clf, path):
    """Per member: softmax probabilities and logits, one dialogue at a time, utterances in file order."""
    ds = clf.prepare(path, role="test", label_set=clf.info.label_set, progress=False)
    encoded = encode_dialogues(ds, clf.config.modality_order, clf.info.label_set, clf.info.widths)
    probs, logits = [], []
    for m in members:
        out = [m(collate([d], m.n_speakers)).logits for d in encoded]
        logits.append(torch.cat(out).numpy())
        probs.append(torch.cat(out).softmax(-1).numpy())
    y = torch.cat([d.label for d in encoded]).numpy()
    return np.stack(probs), np.stack(logits), y


def test_predict_is_the_mean_of_the_members_softmax(ensemble, data_dir):
    _, out = ensemble
    clf = Joyful.load(out)
    assert isinstance(clf.model, EnsembleModel) and len(clf.model.members) == 2
    members = saved_members(out)
    probs, logits, _ = member_outputs(members, clf, data_dir / "test.jsonl")
    names = clf.info.label_set.labels
    rows = clf.predict(data_dir / "test.jsonl")
    got = np.array([[r["probabilities"][n] for n in names] for r in rows])
    # mean of probabilities, by hand, then the ensemble's one saved temperature on its log
    t = json.loads((out / "meta.json").read_text())["calibration"]["temperature"]
    expected = softmax(np.log(probs.mean(0)) / t)
    np.testing.assert_allclose(got, expected, atol=2e-6)  # predict rounds to 6 decimals
    assert [r["label"] for r in rows] == [names[i] for i in expected.argmax(1)]

    # The reference would catch the wrong ensembles: the members really differ, and
    # neither one member alone nor the softmax of the mean logit gives the same numbers.
    assert np.abs(probs[0] - probs[1]).max() > 1e-2
    for alone in probs:
        assert np.abs(got - alone).max() > 5e-3
    mean_logits = torch.from_numpy(logits.mean(0)).softmax(-1).numpy()
    assert np.abs(got - mean_logits).max() > 1e-4


def test_members_differ_by_seed_and_predict_their_mean(ensemble, data_dir):
    """Member k is the model a single run with seed 24 + k trains (members differ only in their seed).

    The singles are left uncalibrated, so their probabilities are the members' own; the
    ensemble serves their mean at its one temperature.
    """
    clf, _ = ensemble
    singles = [Joyful(JoyfulConfig(**{**TINY, "epochs": 3, "seed": 24 + k, "calibrate": False})).fit(
        data_dir / "train.jsonl", data_dir / "valid.jsonl", progress=False) for k in range(2)]
    rows = clf.predict(data_dir / "test.jsonl")
    alone = [s.predict(data_dir / "test.jsonl") for s in singles]
    assert alone[0] != alone[1]
    t = clf.info.extra["calibration"]["temperature"]
    for i in range(len(rows)):
        mean = np.mean([[a[i]["probabilities"][k] for k in rows[i]["probabilities"]] for a in alone], axis=0)
        assert np.allclose(list(rows[i]["probabilities"].values()), softmax(np.log(mean) / t), atol=2e-6)


def test_ensemble_is_saved_and_loaded_whole(ensemble, data_dir):
    clf, out = ensemble
    meta = json.loads((out / "meta.json").read_text())
    assert meta["ensemble_members"] == 2 and [m["seed"] for m in meta["members"]] == [24, 25]
    header = (out / "history.csv").read_text().splitlines()[0]
    assert header.startswith("member,epoch,")
    loaded = Joyful.load(out)
    members = saved_members(out)
    # Two distinct sets of weights were saved, not one member twice.
    assert any(not torch.equal(a, b) for a, b in zip(members[0].state_dict().values(), members[1].state_dict().values()))
    # Scores, by hand: weighted F1 (scikit-learn) of the argmax of the mean member probabilities.
    names = loaded.info.label_set.labels
    for split, metrics in (("test", loaded.evaluate(data_dir / "test.jsonl")), ("valid", meta["valid_metrics"])):
        probs, _, y = member_outputs(members, loaded, data_dir / f"{split}.jsonl")
        known = y != IGNORE_INDEX
        pred = probs.mean(0).argmax(1)
        hand = f1_score(y[known], pred[known], average="weighted", labels=range(len(names)))
        assert metrics["weighted_f1"] == pytest.approx(hand), split
    assert clf.result.best_valid == meta["valid_metrics"]


def test_ensemble_explains_and_adapts(ensemble, data_dir):
    from joyful.training.adapt import adapt

    clf, _ = ensemble
    rows = clf.predict(data_dir / "test.jsonl", explain=True)
    assert "explanation" in rows[0]
    adapted, report = adapt(clf, data_dir / "valid.jsonl", valid=data_dir / "valid.jsonl", epochs=1, progress=False)
    assert isinstance(adapted.model, EnsembleModel) and report.best_epoch == 1


def test_interrupted_ensemble_keeps_the_members_finished(data_dir, tmp_path):
    seen = []

    def stop_in_third_member(record):
        seen.append(record.member)
        if record.member == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Joyful(JoyfulConfig(**{**TINY, "epochs": 2, "ensemble": 3})).fit(
            data_dir / "train.jsonl", data_dir / "valid.jsonl", out_dir=tmp_path, progress=False, on_epoch=stop_in_third_member
        )
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert seen == [0, 0, 1, 1, 2] and meta["ensemble_members"] == 2
    assert [m["seed"] for m in meta["members"]] == [24, 25]
    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert {name.split(".")[1] for name in state} == {"0", "1"}  # the unfinished third member is not saved
    clf = Joyful.load(tmp_path)
    assert len(clf.model.members) == 2
    probs, _, _ = member_outputs(saved_members(tmp_path), clf, data_dir / "test.jsonl")
    names = clf.info.label_set.labels
    got = np.array([[r["probabilities"][n] for n in names] for r in clf.predict(data_dir / "test.jsonl")])
    np.testing.assert_allclose(got, probs.mean(0), atol=2e-6)


def test_report_of_an_ensemble_draws_one_members_curves(ensemble, data_dir, tmp_path):
    from joyful.analysis.report import write_report

    _, out = ensemble
    page = write_report(out, data=str(data_dir / "test.jsonl"), out=tmp_path / "r.html", progress=False)
    assert "first of the ensemble&#x27;s 2 members" in page.read_text()
