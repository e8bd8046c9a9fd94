"""The context logistic-regression baseline against a naive re-implementation (loops + scikit-learn)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from joyful import Joyful, JoyfulConfig
from joyful.errors import JoyfulError
from joyful.batching import collate, encode_dialogues
from joyful.data.labels import resolve_label_set
from joyful.nn.context_lr import ContextLogisticRegression
from joyful.synthetic import generate_dialogues

WIDTHS = {"t": 5, "a": 3}


def naive_features(d, order, past, future, scales):
    """Utterance by utterance: [x_i; mean over same-speaker j≠i in window; mean over other-speaker j in window]."""
    x = np.concatenate([np.nan_to_num(d.features[m], nan=0.0) * scales[m] for m in order], axis=1)
    n = len(d)
    rows = []
    for i in range(n):
        lo = 0 if past < 0 else max(0, i - past)
        hi = n - 1 if future < 0 else min(n - 1, i + future)
        same = [j for j in range(lo, hi + 1) if j != i and d.speakers[j] == d.speakers[i]]
        other = [j for j in range(lo, hi + 1) if d.speakers[j] != d.speakers[i]]
        mean = lambda js: x[js].mean(0) if js else np.zeros(x.shape[1])  # noqa: E731
        rows.append(np.concatenate([x[i], mean(same), mean(other)]))
    return np.array(rows)


@pytest.mark.parametrize(("past", "future"), [(2, 1), (0, 3), (-1, -1)])
def test_features_equal_a_per_utterance_loop(past, future):
    ds = generate_dialogues(3, widths=WIDTHS, seed=4, min_length=4, max_length=9, speakers=(2, 3))
    ds.dialogues[1].features["a"][2] = np.nan  # a missing modality counts as zeros (the untrained stand-in)
    cfg = JoyfulConfig.preset("context-lr", modalities="at", window_past=past, window_future=future)
    labels = resolve_label_set("auto", ds)
    encoded = encode_dialogues(ds, cfg.modality_order, labels)
    model = ContextLogisticRegression(cfg, WIDTHS, len(labels.labels), 3)
    got = model.features(collate(encoded, 3)).detach().numpy()
    ones = {m: 1.0 for m in WIDTHS}
    expected = np.concatenate([naive_features(d, cfg.modality_order, past, future, ones) for d in ds])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_fitted_probabilities_equal_scikit_learn_on_the_naive_features(tmp_path):
    train = generate_dialogues(20, widths=WIDTHS, seed=1, signal=1.5)
    test = generate_dialogues(5, widths=WIDTHS, seed=2, signal=1.5)
    for d in train:
        d.features["a"] *= 300.0  # audio on another scale: each modality is brought to mean norm 1
    for d in test:
        d.features["a"] *= 300.0
    cfg = JoyfulConfig.preset("context-lr", modalities="at", window_past=3, window_future=3, logreg_c=0.5)
    clf = Joyful(cfg).fit(train, out_dir=tmp_path / "m", progress=False)
    names = clf.info.label_set.labels

    order = cfg.modality_order
    scales = {m: 1.0 / np.mean(np.linalg.norm(np.concatenate([d.features[m] for d in train]), axis=1)) for m in order}
    x = np.concatenate([naive_features(d, order, 3, 3, scales) for d in train])
    y = np.concatenate([[names.index(lab) for lab in d.labels] for d in train])
    reference = LogisticRegression(C=0.5, max_iter=1000).fit(x, y)
    xt = np.concatenate([naive_features(d, order, 3, 3, scales) for d in test])
    expected = reference.predict_proba(xt)

    for model in (clf, Joyful.load(tmp_path / "m")):  # fitted, and through the checkpoint
        rows = model.predict(test)
        got = np.array([[r["probabilities"][n] for n in names] for r in rows])
        np.testing.assert_allclose(got, expected, atol=2e-4)
    assert clf.evaluate(test)["accuracy"] > 0.5  # the planted signal is learned (chance is 1/6)


def test_a_class_absent_from_training_is_never_predicted():
    train = generate_dialogues(12, widths=WIDTHS, seed=3, signal=2.0)
    for d in train:
        d.labels = ["neu" if lab == "ang" else lab for lab in d.labels]
    cfg = JoyfulConfig.preset("context-lr", modalities="at", label_set="iemocap6")
    clf = Joyful(cfg).fit(train, progress=False)
    rows = clf.predict(generate_dialogues(4, widths=WIDTHS, seed=5))
    assert all(r["probabilities"]["ang"] < 1e-6 for r in rows)


def test_the_fit_ignores_the_seed_so_an_ensemble_of_it_is_refused():
    """Why ``ensemble`` must be 1: two seeds fit the same weights, so N members would be N copies."""
    train = generate_dialogues(10, widths=WIDTHS, seed=4, signal=2.0)
    weights = [
        Joyful(JoyfulConfig.preset("context-lr", modalities="at", seed=seed)).fit(train, progress=False)
        .model.linear.weight.detach().clone()
        for seed in (1, 7)
    ]
    assert torch.equal(weights[0], weights[1])
    with pytest.raises(JoyfulError, match="'ensemble'.*context-lr"):
        JoyfulConfig.preset("context-lr", ensemble=3)
    JoyfulConfig.preset("iemocap6", ensemble=3)  # a graph model's members differ by seed: allowed


def test_cli_trains_and_evaluates_the_baseline(data_dir, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def run(*args):
        proc = subprocess.run([sys.executable, "-m", "joyful.cli", *args], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    run("train", "--train", str(data_dir / "train.jsonl"), "--valid", str(data_dir / "valid.jsonl"),
        "--out", str(tmp_path / "lr"), "--preset", "context-lr", "--quiet")
    meta = json.loads((tmp_path / "lr" / "meta.json").read_text())
    assert meta["config"]["architecture"] == "context-lr"
    scores = json.loads(run("evaluate", "--model", str(tmp_path / "lr"), "--data", str(data_dir / "test.jsonl"), "--json"))
    assert scores["weighted_f1"] > 0.5
