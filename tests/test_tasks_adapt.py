"""Adapting a regression (sentiment) and a multilabel (emotions) model to stored corrections.

The corrections disagree with the model on purpose (a score moved by 2; the emotion the
model is least sure of flipped, as an annotator fixes borderline calls); after adapting,
the corrected utterances' predictions must be closer to them, with the validation score
(MAE, or weighted F1) no worse than the tolerance allows, and a tolerance no epoch can
meet must leave the original weights. Agreement is computed here from
:meth:`Joyful.predict` rows, not by the adaptation code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from joyful import Joyful
from joyful.cli import app as cli_app
from joyful.corrections import CorrectionStore
from joyful.data.label_forms import MOSEI_EMOTIONS
from joyful.io.jsonl import write_jsonl
from joyful.training.adapt import adapt
from test_tasks_service import TASKS, train_model, videos

#: Base models trained further than the service's, deciding emotions at 0.5 (see the threshold test below).
BASE = dict(lr=3e-3, epochs=10, seed=5, thresholds="fixed")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict:
    out = {task: train_model(task, tmp_path_factory.mktemp(f"base-{task}") / "model", **BASE) for task in TASKS}
    out["thresholded"] = train_model("multilabel", tmp_path_factory.mktemp("thresholded") / "model")
    return out


def corrected_label(task: str, row: dict):
    """A correction the model disagrees with: the score moved 2 towards the middle, or its least sure emotion flipped."""
    if task == "regression":
        return round(row["label"] - 2 if row["label"] > 0 else row["label"] + 2, 2)
    unsure = min(MOSEI_EMOTIONS, key=lambda e: abs(row["probabilities"][e] - 0.5))
    flipped = set(row["label"]) ^ {unsure}
    return tuple(e for e in MOSEI_EMOTIONS if e in flipped)


@pytest.fixture(scope="module")
def stores(model_dirs, tmp_path_factory) -> dict:
    """Per task: a store with three new videos and six corrected utterances, and the corrections as {(video, index): label}."""
    out = {}
    for task in TASKS:
        clf = Joyful.load(model_dirs[task])
        path = tmp_path_factory.mktemp(f"store-{task}") / "store.sqlite"
        new = videos(task, 3, 77, "onsite-")
        wanted = {}
        with CorrectionStore(path) as s:
            for d in new:
                d.labels = None
                s.save_dialogue(d, consent="train")
            for r in [r for r in clf.predict(new) if r["index"] % 2 == 1][:6]:
                label = wanted[(s.dialogue_key(r["dialogue"]), r["index"])] = corrected_label(task, r)
                s.add_correction(r["dialogue"], r["index"], label, "tester", task=task)
        out[task] = path, wanted
    return out


def disagreement(task: str, clf: Joyful, dialogues, wanted: dict) -> float:
    """MAE against the corrected scores, or the share of (utterance, emotion) decisions that differ from the corrections."""
    rows = {(r["dialogue"], r["index"]): r["label"] for r in clf.predict(dialogues)}
    if task == "regression":
        return float(np.mean([abs(rows[k] - v) for k, v in wanted.items()]))
    return float(np.mean([(e in rows[k]) != (e in v) for k, v in wanted.items() for e in MOSEI_EMOTIONS]))


def corrected(path):
    with CorrectionStore(path) as s:
        return s.corrected_dialogues()


def base_data(task: str):
    return videos(task, 24, 1, "tr-"), videos(task, 8, 2, "va-")


@pytest.mark.parametrize("task", TASKS)
def test_corrections_are_learned_within_the_validation_tolerance(task, model_dirs, stores):
    path, wanted = stores[task]
    clf = Joyful.load(model_dirs[task])
    new = corrected(path)
    replay, valid = base_data(task)
    adapted, report = adapt(clf, new, replay=replay, valid=valid, progress=False)

    before, after = disagreement(task, clf, new, wanted), disagreement(task, adapted, new, wanted)
    assert after < 0.9 * before, (before, after, report.summary())
    metric = "mae" if task == "regression" else "label_agreement"
    assert report.new_metric == metric and report.n_new_labels == len(wanted) and report.best_epoch >= 1
    reported = (before, after) if task == "regression" else (1 - before, 1 - after)
    assert (report.new_before, report.new_after) == pytest.approx(reported, abs=1e-4)

    primary = "mae" if task == "regression" else "weighted_f1"
    assert report.valid_metric == primary
    assert report.valid_before[primary] == pytest.approx(clf.evaluate(valid)[primary], abs=1e-9)
    if task == "regression":  # lower is better: MAE may rise by the tolerance at most
        assert report.valid_after["mae"] <= report.valid_before["mae"] + 0.01
    else:
        assert report.valid_after["weighted_f1"] >= report.valid_before["weighted_f1"] - 0.01
    summary = report.summary()
    assert summary["task"] == task and summary["new_metric"] == metric and summary["valid_metric"] == primary
    assert {f"new_{metric}_before", f"new_{metric}_after", f"valid_{primary}_before", f"valid_{primary}_after"} <= set(summary)
    assert Joyful.load(model_dirs[task]).predict(new) == clf.predict(new)  # the original is untouched


@pytest.mark.parametrize("model", ["regression", "thresholded"])
def test_the_original_is_kept_when_no_epoch_meets_the_floor(model, model_dirs, stores):
    """A negative tolerance asks every epoch to improve validation by half a point (of MAE, or of weighted F1).

    The multilabel model here has per-emotion thresholds: it is scored at them, as ``evaluate`` does.
    """
    task = "regression" if model == "regression" else "multilabel"
    path, _ = stores[task]
    clf = Joyful.load(model_dirs[model])
    new = corrected(path)
    replay, valid = base_data(task)
    adapted, report = adapt(clf, new, replay=replay, valid=valid, epochs=3, tolerance=-0.5, progress=False)
    primary = report.valid_metric
    assert report.valid_before[primary] == pytest.approx(clf.evaluate(valid)[primary], abs=1e-9)
    assert report.best_epoch == 0 and report.summary()["kept_original"] and len(report.history) == 3
    original = clf.model.state_dict()
    for name, value in adapted.model.state_dict().items():
        assert torch.equal(value, original[name]), name
    assert report.valid_after == report.valid_before and report.new_after == report.new_before
    assert adapted.predict(new) == clf.predict(new)


def test_finetune_command_reports_mae_for_a_regression_model(model_dirs, stores, tmp_path):
    path, wanted = stores["regression"]
    replay, valid = base_data("regression")
    write_jsonl(replay.dialogues, tmp_path / "train.jsonl")
    write_jsonl(valid.dialogues, tmp_path / "valid.jsonl")
    out = tmp_path / "adapted"
    result = CliRunner().invoke(cli_app, [
        "finetune", "--model", str(model_dirs["regression"]), "--corrections", str(path), "--out", str(out),
        "--replay", str(tmp_path / "train.jsonl"), "--valid", str(tmp_path / "valid.jsonl"), "--epochs", "4", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["task"] == "regression" and summary["new_metric"] == "mae" and summary["valid_metric"] == "mae"
    assert summary["new_labels"] == len(wanted)
    before = disagreement("regression", Joyful.load(model_dirs["regression"]), corrected(path), wanted)
    assert summary["new_mae_before"] == pytest.approx(before, abs=1e-3)
    assert summary["valid_mae_after"] <= summary["valid_mae_before"] + 0.01
    assert json.loads((out / "meta.json").read_text())["adaptation"]["new_mae_after"] == summary["new_mae_after"]
