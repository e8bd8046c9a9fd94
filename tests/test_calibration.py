"""Temperature scaling and expected calibration error against references built in the test.

Served probabilities are checked against softmax/sigmoid of the model's own logits divided
by the saved temperature, computed here from a forward pass of the loaded weights; ECE
against a plain loop over bins; the fitted temperature against data drawn at a known one.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY
from joyful import Joyful, JoyfulConfig
from joyful.analysis.metrics import expected_calibration_error
from joyful.batching import IGNORE_INDEX, collate, encode_dialogues
from joyful.data.label_forms import MOSEI_EMOTIONS
from joyful.data.schema import DialogueSet
from joyful.data.tasks import get_task
from joyful.training.calibration import LOG_T_BOUND, calibrate, fit_temperature
from joyful.training.ensemble import EnsembleModel
from test_tasks import mosei_like


def hand_ece(confidence, outcome, bins: int = 15) -> float:
    """ECE as a loop: bin b holds confidences in [b/B, (b+1)/B), 1.0 in the last bin."""
    confidence, outcome = np.asarray(confidence, float), np.asarray(outcome, float)
    total = 0.0
    for b in range(bins):
        inside = (confidence >= b / bins) & ((confidence < (b + 1) / bins) | (b == bins - 1))
        if inside.any():
            total += inside.sum() / len(confidence) * abs(outcome[inside].mean() - confidence[inside].mean())
    return total


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@torch.no_grad()
def raw_logits(clf: Joyful, data) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, targets)`` of every utterance, one dialogue per forward pass, without any temperature."""
    ds = clf.prepare(data, role="test", label_set=clf.info.label_set, progress=False)
    encoded = encode_dialogues(ds, clf.config.modality_order, clf.info.label_set, clf.info.widths, clf.info.task)
    clf.model.eval()
    z = torch.cat([clf.model(collate([d], clf.model.n_speakers)).logits for d in encoded])
    return z.double().numpy(), torch.cat([d.label for d in encoded]).numpy()


# ---------------------------------------------------------------- the fit and the metric
def test_temperature_recovered_where_the_truth_is_known():
    rng = np.random.default_rng(0)
    z = 3 * rng.standard_normal((20000, 5))
    p = softmax(z / 2.0)  # labels drawn at temperature 2: the logits are over-confident by exactly 2
    y = (rng.random((len(z), 1)) > p.cumsum(-1)).sum(-1)
    assert fit_temperature(get_task("classification"), z, y) == pytest.approx(2.0, rel=0.05)
    z = 2 * rng.standard_normal((4000, 6))
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z / 0.5))).astype(float)  # under-confident: T = 0.5
    assert fit_temperature(get_task("multilabel"), z, y) == pytest.approx(0.5, rel=0.05)


def test_ece_by_hand():
    # confidences 0.91 and 0.93 share bin 13 (one right): |0.5 - 0.92|; 0.7 and 0.55 are alone and right
    prob = np.array([[0.91, 0.09], [0.07, 0.93], [0.3, 0.7], [0.55, 0.45]])
    got = expected_calibration_error("classification", np.array([0, 0, 1, 0]), prob)
    assert got == pytest.approx(2 / 4 * 0.42 + 1 / 4 * 0.3 + 1 / 4 * 0.45)
    # multilabel: every cell is a point, its probability against presence, each alone in its bin
    cells = np.array([[0.9, 0.2], [0.1, 0.95]])
    got = expected_calibration_error("multilabel", np.array([[1, 0], [1, 1]]), cells)
    assert got == pytest.approx((0.1 + 0.2 + 0.9 + 0.05) / 4)
    assert expected_calibration_error("classification", np.zeros(0, int), np.zeros((0, 3))) == 0.0


def test_calibration_repairs_a_deliberately_over_confident_model(data_dir):
    clf = Joyful(JoyfulConfig(architecture="context-lr", calibrate=False)).fit(
        data_dir / "train.jsonl", data_dir / "valid.jsonl", progress=False)
    with torch.no_grad():  # five times the logits: the same decisions, far too sure of them
        clf.model.linear.weight *= 5
        clf.model.linear.bias *= 5
    z, y = raw_logits(clf, data_dir / "valid.jsonl")
    known = y != IGNORE_INDEX
    z, y = z[known], y[known]
    encoded = encode_dialogues(clf.prepare(data_dir / "valid.jsonl", role="valid", label_set=clf.info.label_set,
                                           progress=False), clf.config.modality_order, clf.info.label_set, clf.info.widths)
    found = calibrate(clf.model, encoded, clf.info.label_set.labels, 8)
    t = clf.model.temperature
    assert t == found["temperature"] > 1.5

    def nll(temperature: float) -> float:
        return F.cross_entropy(torch.from_numpy(z / temperature), torch.from_numpy(y)).item()

    assert nll(t) < nll(1.0) and nll(t) <= min(nll(t * 1.05), nll(t / 1.05))  # the minimum, not just better
    before = hand_ece(softmax(z).max(-1), softmax(z).argmax(-1) == y)
    after = hand_ece(softmax(z / t).max(-1), softmax(z / t).argmax(-1) == y)
    assert found["ece_uncalibrated"] == pytest.approx(before) and found["ece"] == pytest.approx(after)
    assert after < before


# ---------------------------------------------------------------- saved with the model, applied everywhere
@pytest.fixture(scope="module")
def calibrated(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("calibrated")
    Joyful(JoyfulConfig(**{**TINY, "epochs": 3})).fit(
        data_dir / "train.jsonl", data_dir / "valid.jsonl", out_dir=out, progress=False)
    return out


def test_temperature_saved_reloaded_and_applied_in_evaluate_and_predict(calibrated, data_dir):
    meta = json.loads((calibrated / "meta.json").read_text())
    t = meta["calibration"]["temperature"]
    clf = Joyful.load(calibrated)
    assert clf.model.temperature == t and abs(math.log(t)) > 0.05  # a temperature that changes the numbers
    assert "temperature" not in "".join(torch.load(calibrated / "model.pt", weights_only=True))  # not a weight
    z, y = raw_logits(clf, data_dir / "test.jsonl")
    names = clf.info.label_set.labels
    rows = clf.predict(data_dir / "test.jsonl")
    got = np.array([[r["probabilities"][n] for n in names] for r in rows])
    np.testing.assert_allclose(got, softmax(z / t), atol=2e-6)  # predict rounds to 6 decimals
    assert np.abs(got - softmax(z)).max() > 1e-3

    m = clf.evaluate(data_dir / "test.jsonl")
    known = y != IGNORE_INDEX
    for key, p in (("ece", softmax(z / t)[known]), ("ece_uncalibrated", softmax(z)[known])):
        assert m[key] == pytest.approx(hand_ece(p.max(-1), p.argmax(-1) == y[known]), abs=1e-6), key

    zv, yv = raw_logits(clf, data_dir / "valid.jsonl")
    zv, yv = zv[yv != IGNORE_INDEX], yv[yv != IGNORE_INDEX]
    pv = softmax(zv / t)
    assert meta["calibration"]["ece"] == pytest.approx(hand_ece(pv.max(-1), pv.argmax(-1) == yv), abs=1e-6)
    saved = meta["validation_outputs"]
    assert saved["n_utterances"] == len(yv) == len(saved["confidence"]) == len(saved["correct"])
    np.testing.assert_allclose(saved["confidence"], pv.max(-1), atol=1e-6)
    assert saved["correct"] == (pv.argmax(-1) == yv).tolist() and saved["predicted"] == pv.argmax(-1).tolist()
    assert set(saved["missing_rate"]) == set(clf.config.modality_order)


def test_old_meta_without_calibration_loads_at_temperature_one(calibrated, data_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(calibrated, old)
    meta = json.loads((old / "meta.json").read_text())
    del meta["calibration"], meta["validation_outputs"]
    (old / "meta.json").write_text(json.dumps(meta))
    clf = Joyful.load(old)
    assert clf.model.temperature == 1.0
    z, _ = raw_logits(clf, data_dir / "test.jsonl")
    got = np.array([list(r["probabilities"].values()) for r in clf.predict(data_dir / "test.jsonl")])
    np.testing.assert_allclose(got, softmax(z), atol=2e-6)


def test_an_ensemble_gets_one_temperature_fitted_on_its_mean(data_dir, tmp_path):
    # a high learning rate: three epochs from chance, so the fitted T lies inside the searched range
    Joyful(JoyfulConfig(**{**TINY, "epochs": 3, "lr": 3e-2, "ensemble": 2})).fit(
        data_dir / "train.jsonl", data_dir / "valid.jsonl", out_dir=tmp_path, progress=False)
    clf = Joyful.load(tmp_path)
    t = json.loads((tmp_path / "meta.json").read_text())["calibration"]["temperature"]
    assert isinstance(clf.model, EnsembleModel) and clf.model.temperature == t
    assert [m.temperature for m in clf.model.members] == [1.0, 1.0]
    clf.model.temperature = 1.0  # the members' mean probability, as the logits' reference
    mean, y = raw_logits(clf, data_dir / "valid.jsonl")
    known = y != IGNORE_INDEX
    log_mean, y = np.log(softmax(mean[known])), torch.from_numpy(y[known])

    def nll(temperature: float) -> float:
        return F.cross_entropy(torch.from_numpy(log_mean / temperature), y).item()

    assert math.exp(-LOG_T_BOUND) < t < math.exp(LOG_T_BOUND)
    assert nll(t) <= min(nll(t * 1.05), nll(t / 1.05))


# ---------------------------------------------------------------- the other tasks
def _scored(n: int, seed: int, task: str) -> DialogueSet:
    """Scores and emotions behind noisier audio than the task tests', so the models are unsure enough to calibrate."""
    return mosei_like(n, seed, task, noise=0.8)


LR = dict(modalities="a", architecture="context-lr", fusion="concat", use_gcl=False)


def test_multilabel_probabilities_are_sigmoids_at_the_saved_temperature(tmp_path):
    Joyful(**LR, logreg_c=100.0).fit(_scored(40, 1, "multilabel"), _scored(10, 2, "multilabel"),
                                     out_dir=tmp_path, progress=False)
    clf = Joyful.load(tmp_path)
    t = clf.info.extra["calibration"]["temperature"]
    test = _scored(15, 3, "multilabel")
    z, y = raw_logits(clf, test)
    p = 1 / (1 + np.exp(-z / t))
    got = np.array([[r["probabilities"][e] for e in MOSEI_EMOTIONS] for r in clf.predict(test)])
    np.testing.assert_allclose(got, p, atol=2e-6)
    m = clf.evaluate(test)
    assert m["ece"] == pytest.approx(hand_ece(p.ravel(), y.ravel()), abs=1e-6)
    assert m["ece_uncalibrated"] == pytest.approx(hand_ece(1 / (1 + np.exp(-z.ravel())), y.ravel()), abs=1e-6)


def test_regression_is_never_calibrated(tmp_path):
    Joyful(**LR).fit(_scored(30, 1, "regression"), _scored(8, 2, "regression"), out_dir=tmp_path, progress=False)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert "calibration" not in meta
    saved = meta["validation_outputs"]
    assert set(saved) == {"predicted", "missing_rate", "n_utterances"} and saved["missing_rate"] == {"a": 0.0}
    clf = Joyful.load(tmp_path)
    assert clf.model.temperature == 1.0
    test = _scored(8, 3, "regression")
    m = clf.evaluate(test)
    assert "ece" not in m and "ece_uncalibrated" not in m
    z, _ = raw_logits(clf, test)
    scores = [r["label"] for r in clf.predict(test)]
    np.testing.assert_allclose(scores, np.clip(z[:, 0], -3, 3), atol=2e-6)
