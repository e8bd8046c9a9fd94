"""Selective prediction: the threshold for a target accuracy, ``confidence``/``uncertain`` rows, refusals.

Thresholds are checked against a brute-force search written here (every candidate P,
accuracy of ``confidence >= P`` counted directly), and against lists worked out by hand.
The validation outputs training will save are built here from the model's own
validation predictions (``attach_validation_outputs``), as the contract defines them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY, WIDTHS
from joyful import Joyful, JoyfulConfig
from joyful.analysis.selective import abstention_threshold, risk_coverage, threshold_for_accuracy
from joyful.cli import app
from joyful.data.schema import missing_rows
from joyful.errors import JoyfulError
from joyful.synthetic import generate_dialogues


def attach_validation_outputs(clf: Joyful, dialogues) -> dict:
    """``info.extra["validation_outputs"]`` from ``clf``'s predictions of labelled ``dialogues`` (classification)."""
    rows = clf.predict(dialogues)
    gold = [lab for d in dialogues for lab in d.labels]
    kept = [(r, g) for r, g in zip(rows, gold, strict=True) if g is not None]
    labels = list(clf.info.label_set.labels)
    n = sum(len(d) for d in dialogues)
    saved = {
        "confidence": [r["confidence"] for r, _ in kept],
        "correct": [r["label"] == g for r, g in kept],
        "predicted": [labels.index(r["label"]) for r, _ in kept],
        "missing_rate": {
            m: sum(int(missing_rows(d.features[m]).sum()) if m in d.features else len(d) for d in dialogues) / n
            for m in clf.config.modality_order
        },
        "n_utterances": len(kept),
    }
    clf.info.extra["validation_outputs"] = saved
    return saved


def brute_force_threshold(confidence, correct, target) -> float | None:
    conf, ok = np.asarray(confidence), np.asarray(correct, dtype=bool)
    for p in sorted(set(conf.tolist())):  # smallest first
        if ok[conf >= p].mean() >= target:
            return p
    return None


# ---------------------------------------------------------------------- threshold selection
CONF = [0.9, 0.8, 0.8, 0.7, 0.6, 0.5]
OK = [True, True, False, True, False, False]


@pytest.mark.parametrize(
    "target, expected",
    # retained accuracy at P = 0.9, 0.8, 0.7, 0.6, 0.5: 1, 2/3, 3/4, 3/5, 1/2 (the two 0.8s go together)
    [(1.0, 0.9), (0.9, 0.9), (0.75, 0.7), (0.7, 0.7), (0.6, 0.6), (0.5, 0.5), (0.1, 0.5)],
)
def test_threshold_by_hand(target, expected):
    assert threshold_for_accuracy(CONF, OK, target) == expected


def test_risk_coverage_by_hand_keeps_ties_together():
    curve = risk_coverage(CONF, OK)
    assert curve.threshold.tolist() == [0.9, 0.8, 0.7, 0.6, 0.5]
    assert curve.coverage.tolist() == pytest.approx([1 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    assert curve.accuracy.tolist() == pytest.approx([1.0, 2 / 3, 3 / 4, 3 / 5, 1 / 2])
    assert curve.risk.tolist() == pytest.approx([0.0, 1 / 3, 1 / 4, 2 / 5, 1 / 2])


def test_threshold_matches_brute_force_on_random_lists():
    rng = np.random.default_rng(0)
    for _ in range(50):
        conf = np.round(rng.uniform(0.2, 1.0, size=40), 2)  # rounded: ties happen
        correct = rng.uniform(size=40) < conf
        for target in (0.5, 0.7, 0.8, 0.9):
            expected = brute_force_threshold(conf, correct, target)
            if expected is None:
                with pytest.raises(JoyfulError, match="the best is"):
                    threshold_for_accuracy(conf, correct, target)
            else:
                assert threshold_for_accuracy(conf, correct, target) == expected


def test_an_unreachable_target_names_the_best_accuracy():
    with pytest.raises(JoyfulError, match=r"the best is 0\.5000"):
        threshold_for_accuracy([0.9, 0.9, 0.3], [True, False, False], 0.8)
    with pytest.raises(JoyfulError, match=r"in \(0, 1\]"):
        threshold_for_accuracy(CONF, OK, 1.5)


def test_regression_and_models_without_validation_outputs_are_refused():
    with pytest.raises(JoyfulError, match="regression model's score has none"):
        abstention_threshold("regression", None, abstain_below=0.5)
    with pytest.raises(JoyfulError, match="regression"):
        abstention_threshold("regression", {"predicted": [0.1]}, target_accuracy=0.8)
    with pytest.raises(JoyfulError, match="retrain it"):
        abstention_threshold("classification", None, target_accuracy=0.8)
    with pytest.raises(JoyfulError, match="not both"):
        abstention_threshold("classification", None, 0.5, 0.8)


# ---------------------------------------------------------------------- rows of a model
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny classifier on a weak signal (so its confidences spread), with validation outputs attached."""
    train = generate_dialogues(24, widths=WIDTHS, seed=1, signal=1.0).dialogues
    valid = generate_dialogues(16, widths=WIDTHS, seed=2, signal=1.0, prefix="va-").dialogues
    clf = Joyful(JoyfulConfig(**{**TINY, "epochs": 10})).fit(train, valid, progress=False)
    saved = attach_validation_outputs(clf, valid)
    out = tmp_path_factory.mktemp("selective") / "model"
    clf.save(out)
    return clf, saved, out


def test_rows_carry_confidence_and_uncertain_agrees_with_the_threshold(fitted):
    clf, _, _ = fitted
    test = generate_dialogues(6, widths=WIDTHS, seed=3, signal=1.0, prefix="te-").dialogues
    plain = clf.predict(test)
    assert all("uncertain" not in r for r in plain)
    for r in plain:  # confidence is the chosen class's probability
        assert r["confidence"] == pytest.approx(max(r["probabilities"].values()), abs=1e-6)
        assert r["probabilities"][r["label"]] == pytest.approx(r["confidence"], abs=1e-6)
    p = float(np.median([r["confidence"] for r in plain]))
    rows = clf.predict(test, abstain_below=p)
    assert [r["uncertain"] for r in rows] == [r["confidence"] < p for r in plain]
    assert 0 < sum(r["uncertain"] for r in rows) < len(rows)


def test_target_accuracy_picks_p_on_validation_and_holds_there(fitted):
    clf, saved, _ = fitted
    conf, correct = np.array(saved["confidence"]), np.array(saved["correct"])
    target = 0.9 if correct.mean() < 0.9 else 1.0
    p = clf.abstain_threshold(target)
    assert p == brute_force_threshold(conf, correct, target)
    assert correct[conf >= p].mean() >= target
    valid = generate_dialogues(16, widths=WIDTHS, seed=2, signal=1.0, prefix="va-").dialogues
    rows = clf.predict(valid, target_accuracy=target)
    assert [r["uncertain"] for r in rows] == [r["confidence"] < p for r in rows]


def test_predict_command_marks_uncertain_rows_and_refuses_what_it_cannot_do(fitted, tmp_path):
    clf, _, model = fitted
    data = tmp_path / "test.jsonl"
    from joyful.io.jsonl import write_jsonl

    write_jsonl(generate_dialogues(3, widths=WIDTHS, seed=5, signal=1.0, prefix="c-").dialogues, data)
    result = CliRunner().invoke(app, ["predict", "--model", str(model), "--data", str(data), "--abstain-below", "0.6"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows and all(r["uncertain"] == (r["confidence"] < 0.6) for r in rows)
    both = CliRunner().invoke(
        app, ["predict", "--model", str(model), "--data", str(data), "--abstain-below", "0.6", "--target-accuracy", "0.8"]
    )
    assert both.exit_code == 2 and "not both" in both.output


def test_a_regression_model_refuses_selective_prediction(tmp_path):
    from joyful.synthetic_mosei import generate_mosei

    train = generate_mosei(12, task="regression", widths={"a": 8}, seed=1, prefix="r-")
    clf = Joyful(task="regression", modalities="a", architecture="context-lr").fit(train, progress=False)
    rows = clf.predict(train.dialogues[:1])
    assert "confidence" not in rows[0] and "uncertain" not in rows[0]
    with pytest.raises(JoyfulError, match="regression model's score has none"):
        clf.predict(train.dialogues[:1], abstain_below=0.5)
