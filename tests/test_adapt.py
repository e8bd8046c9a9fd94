"""Adapting a model to corrections (with replay) and to on-site data: the corrections take, nothing is forgotten."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import TINY, WIDTHS
from joyful import Joyful, JoyfulConfig
from joyful.corrections import CorrectionStore
from joyful.synthetic import generate_dialogues
from joyful.training.adapt import adapt


@pytest.fixture(scope="module")
def model_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    Joyful(JoyfulConfig(**TINY)).fit(data_dir / "train.jsonl", data_dir / "valid.jsonl", out_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def store(model_dir, tmp_path_factory):
    """Two new dialogues in a store, with five utterances corrected to a label the model did not give."""
    clf = Joyful.load(model_dir)
    path = tmp_path_factory.mktemp("store") / "store.sqlite"
    new = generate_dialogues(2, widths=WIDTHS, seed=77, signal=2.5, prefix="onsite-", min_length=10, max_length=12)
    rows = clf.predict(new)
    labels = clf.info.label_set.labels
    wanted = {}
    with CorrectionStore(path) as s:
        for d in new:
            d.labels = None
            s.save_dialogue(d, consent="train")
        for r in [r for r in rows if r["index"] % 4 == 1][:5]:
            other = labels[(labels.index(r["label"]) + 1) % len(labels)]
            s.add_correction(r["dialogue"], r["index"], other, annotator="tester")
            wanted[(s.dialogue_key(r["dialogue"]), r["index"])] = other
    return path, wanted


def test_corrections_are_learned_without_losing_validation_f1(model_dir, store, data_dir):
    path, wanted = store
    clf = Joyful.load(model_dir)
    with CorrectionStore(path) as s:
        corrected = s.corrected_dialogues()
    adapted, report = adapt(clf, corrected, replay=data_dir / "train.jsonl", valid=data_dir / "valid.jsonl", progress=False)
    assert report.new_accuracy_before == 0.0  # every correction disagreed with the model
    rows = {(r["dialogue"], r["index"]): r["label"] for r in adapted.predict(corrected)}
    right = sum(rows[k] == v for k, v in wanted.items())
    assert right >= 4, (right, report.summary())
    assert report.valid_after["weighted_f1"] >= report.valid_before["weighted_f1"] - 0.01
    assert clf.predict(corrected) != adapted.predict(corrected)  # the original is untouched
    assert Joyful.load(model_dir).predict(corrected) == clf.predict(corrected)


def test_finetune_command_writes_a_new_model_and_reports_before_and_after(model_dir, store, tmp_path):
    path, wanted = store
    out = tmp_path / "adapted"
    run = subprocess.run(
        [sys.executable, "-m", "joyful.cli", "finetune", "--model", str(model_dir), "--corrections", str(path),
         "--out", str(out), "--epochs", "6", "--quiet"],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["new_labels"] == len(wanted)
    assert summary["valid_weighted_f1_before"] is not None and summary["valid_weighted_f1_after"] is not None
    assert summary["replay"].endswith("train.jsonl")  # the model's own training data, found from its meta
    meta = json.loads((out / "meta.json").read_text())
    assert meta["adaptation"]["new_labels"] == len(wanted)
    assert Joyful.load(out).info.label_set == Joyful.load(model_dir).info.label_set


def test_finetune_needs_something_to_adapt_to(model_dir, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "joyful.cli", "finetune", "--model", str(model_dir), "--out", str(tmp_path / "x")],
        capture_output=True, text=True,
    )
    assert run.returncode == 2 and "--corrections" in run.stderr


def test_domain_adaptation_with_a_small_labelled_dataset(model_dir, data_dir, tmp_path):
    from joyful.io.jsonl import write_jsonl

    onsite = generate_dialogues(4, widths=WIDTHS, seed=88, signal=2.5, prefix="site-")
    write_jsonl(onsite.dialogues, tmp_path / "site.jsonl")
    clf = Joyful.load(model_dir)
    adapted, report = adapt(clf, tmp_path / "site.jsonl", replay=data_dir / "train.jsonl",
                            valid=data_dir / "valid.jsonl", epochs=4, progress=False)
    assert report.n_new_labels == onsite.n_utterances and report.best_epoch >= 1
    assert report.new_accuracy_after >= report.new_accuracy_before - 0.05
    # new weights: what the adapted model serves on validation is refitted (temperature, reference outputs)
    served = [r["confidence"] for r in adapted.predict(data_dir / "valid.jsonl")]
    assert adapted.info.extra["validation_outputs"]["confidence"] == pytest.approx(served, abs=2e-6)
    assert adapted.info.extra["calibration"]["temperature"] != clf.info.extra["calibration"]["temperature"]


def test_when_every_epoch_forgets_the_original_model_is_kept(model_dir, store, data_dir):
    """No epoch within tolerance (here: none can gain half a point of WF1) → the original weights, as epoch 0."""
    path, _ = store
    clf = Joyful.load(model_dir)
    with CorrectionStore(path) as s:
        corrected = s.corrected_dialogues()
    adapted, report = adapt(
        clf, corrected, replay=data_dir / "train.jsonl", valid=data_dir / "valid.jsonl", epochs=3, tolerance=-0.5,
        progress=False,
    )
    assert report.best_epoch == 0 and report.summary()["kept_original"]
    assert len(report.history) == 3  # it did train, and rejected every epoch
    original = clf.model.state_dict()
    for name, value in adapted.model.state_dict().items():
        assert torch.equal(value, original[name]), name
    assert report.valid_after == report.valid_before
    assert adapted.predict(corrected) == clf.predict(corrected)


def test_successive_rounds_are_held_to_the_first_models_validation_score(model_dir, data_dir, tmp_path):
    """Round 2's floor is the original's validation WF1 minus the tolerance, not round 1's: losses cannot add up."""
    from joyful.io.jsonl import write_jsonl

    for k, seed in enumerate((91, 92)):
        write_jsonl(generate_dialogues(2, widths=WIDTHS, seed=seed, signal=2.5, prefix=f"r{k}-").dialogues,
                    tmp_path / f"round{k}.jsonl")
    valid = data_dir / "valid.jsonl"
    first, one = adapt(Joyful.load(model_dir), tmp_path / "round0.jsonl", replay=data_dir / "train.jsonl", valid=valid,
                       epochs=2, tolerance=0.05, progress=False)
    assert not one.anchored and one.valid_floor == pytest.approx(one.valid_before["weighted_f1"] - 0.05)
    first.save(tmp_path / "first")  # the anchor travels in the model's meta
    second, two = adapt(Joyful.load(tmp_path / "first"), tmp_path / "round1.jsonl", replay=data_dir / "train.jsonl",
                        valid=valid, epochs=2, tolerance=0.05, progress=False)
    original = one.valid_before["weighted_f1"]  # measured on the original model, in round 1
    assert two.anchored and two.valid_floor == pytest.approx(original - 0.05)
    assert two.summary()["valid_weighted_f1_limit"] == pytest.approx(original - 0.05, abs=1e-4)
    assert two.valid_after["weighted_f1"] >= original - 0.05 - 1e-9
    # other validation data: the line starts again from the model given
    other = generate_dialogues(6, widths=WIDTHS, seed=93, signal=2.5, prefix="v-")
    _, three = adapt(second, tmp_path / "round1.jsonl", valid=other, epochs=1, tolerance=0.05, progress=False)
    assert not three.anchored and three.valid_floor == pytest.approx(three.valid_before["weighted_f1"] - 0.05)
