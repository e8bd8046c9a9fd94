"""Seed ensembles: members trained one after another, saved together, predicting the mean probability."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY
from joyful import Joyful, JoyfulConfig
from joyful.ensemble import EnsembleModel


@pytest.fixture(scope="module")
def ensemble(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ens")
    clf = Joyful(JoyfulConfig(**{**TINY, "epochs": 3, "ensemble": 2})).fit(
        data_dir / "train.jsonl", data_dir / "valid.jsonl", out_dir=out, progress=False
    )
    return clf, out


def test_members_differ_by_seed_and_predict_their_mean(ensemble, data_dir):
    clf, out = ensemble
    assert isinstance(clf.model, EnsembleModel) and len(clf.model.members) == 2
    singles = [Joyful(JoyfulConfig(**{**TINY, "epochs": 3, "seed": TINY.get("seed", 24) + k})).fit(
        data_dir / "train.jsonl", data_dir / "valid.jsonl", progress=False) for k in range(2)]
    rows = clf.predict(data_dir / "test.jsonl")
    alone = [s.predict(data_dir / "test.jsonl") for s in singles]
    assert alone[0] != alone[1]
    for i in (0, 5, 17):
        mean = np.mean([[a[i]["probabilities"][k] for k in rows[i]["probabilities"]] for a in alone], axis=0)
        assert np.allclose(list(rows[i]["probabilities"].values()), mean, atol=1e-5)


def test_ensemble_is_saved_and_loaded_whole(ensemble, data_dir):
    clf, out = ensemble
    meta = json.loads((out / "meta.json").read_text())
    assert meta["ensemble_members"] == 2 and [m["seed"] for m in meta["members"]] == [24, 25]
    assert meta["valid_metrics"] == clf.result.best_valid
    assert Joyful.load(out).predict(data_dir / "test.jsonl") == clf.predict(data_dir / "test.jsonl")
    header = (out / "history.csv").read_text().splitlines()[0]
    assert header.startswith("member,epoch,")
    metrics = Joyful.load(out).evaluate(data_dir / "test.jsonl")
    assert metrics["weighted_f1"] == pytest.approx(Joyful.load(out).evaluate(data_dir / "test.jsonl")["weighted_f1"])


def test_ensemble_explains_and_adapts(ensemble, data_dir):
    from joyful.adapt import adapt

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
    clf = Joyful.load(tmp_path)
    assert len(clf.model.members) == 2 and clf.evaluate(data_dir / "test.jsonl")["weighted_f1"] > 0


def test_report_of_an_ensemble_draws_one_members_curves(ensemble, data_dir, tmp_path):
    from joyful.report import write_report

    _, out = ensemble
    page = write_report(out, data=str(data_dir / "test.jsonl"), out=tmp_path / "r.html", progress=False)
    assert "first of the ensemble&#x27;s 2 members" in page.read_text()
