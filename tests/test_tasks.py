"""The three tasks against hand-computed references: targets, losses, outputs, metrics, thresholds, models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from joyful import Joyful
from joyful.analysis.metrics import multilabel_metrics, regression_metrics
from joyful.data.label_forms import MOSEI_EMOTIONS, infer_task
from joyful.data.labels import MOSEI6, SENTIMENT, resolve_label_set
from joyful.data.schema import Dialogue, DialogueSet
from joyful.data.tasks import IGNORE_INDEX, get_task
from joyful.errors import DataError, JoyfulError
from joyful.training.thresholds import choose_thresholds

WHERE = ("<test>", "d1")


# ---------------------------------------------------------------- targets
def test_targets_of_each_task_by_hand():
    y = get_task("classification").encode(["b", None, "a"], 3, ("a", "b"), WHERE)
    assert y.tolist() == [1, IGNORE_INDEX, 0]
    y = get_task("multilabel").encode([("fear", "happy"), (), None], 3, MOSEI_EMOTIONS, WHERE)
    assert y[0].tolist() == [1, 0, 0, 0, 0, 1] and y[1].tolist() == [0] * 6 and torch.isnan(y[2]).all()
    y = get_task("regression").encode([1.5, None, -3], 3, ("sentiment",), WHERE)
    assert y[0] == 1.5 and math.isnan(y[1]) and y[2] == -3.0


@pytest.mark.parametrize(("task", "label", "says"), [
    ("multilabel", "happy", "needs a list of labels"),
    ("multilabel", ("joy",), "unknown label 'joy'"),
    ("regression", "0.5", "needs a number"),
    ("regression", True, "needs a number"),
    ("regression", float("nan"), "needs a number"),
])
def test_a_label_of_the_wrong_form_names_dialogue_and_utterance(task, label, says):
    with pytest.raises(DataError, match=says) as err:
        get_task(task).encode([None, label], 2, MOSEI_EMOTIONS, WHERE)
    assert "d1" in str(err.value) and "label" in str(err.value)


def test_task_inferred_from_labels_and_mixed_labels_refused():
    assert infer_task("auto", [("d", "hap")], "<s>") == "classification"
    assert infer_task("auto", [("d", ("sad",))], "<s>") == "multilabel"
    assert infer_task("auto", [("d", 0.3)], "<s>") == "regression"
    with pytest.raises(DataError, match="mix"):
        infer_task("auto", [("d", "hap"), ("e", ("sad",))], "<s>")
    with pytest.raises(DataError, match="the task is regression"):
        infer_task("regression", [("d", "hap")], "<s>")


def test_label_sets_for_the_new_tasks():
    data = DialogueSet([Dialogue("d", ["a", "a"], labels=[("sad",), ()])], "<s>")
    assert resolve_label_set("auto", data, "multilabel") is MOSEI6
    data = DialogueSet([Dialogue("d", ["a", "a"], labels=[0.5, -2.0])], "<s>")
    assert resolve_label_set("auto", data, "regression") is SENTIMENT
    with pytest.raises(DataError, match=r"sentiment 4.0 is not a number in \[-3, 3\]"):
        SENTIMENT.apply(DialogueSet([Dialogue("d", ["a"], labels=[4.0])], "<s>"))
    with pytest.raises(DataError, match="unknown label 'joy'"):
        MOSEI6.apply(DialogueSet([Dialogue("d", ["a"], labels=[("happy", "joy")])], "<s>"))


# ---------------------------------------------------------------- losses and outputs
def test_losses_equal_their_formulas_over_labelled_rows():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [float("nan")] * 2, [0.0, 0.0]])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    rows = [(2.0, 1), (-1.0, 0), (-3.0, 0), (1.0, 0)]
    bce = -sum(math.log(sig(x)) if t else math.log(1 - sig(x)) for x, t in rows) / 4
    assert get_task("multilabel").loss(logits, y).item() == pytest.approx(bce, rel=1e-5)
    scores = torch.tensor([[0.5], [1.0], [-4.0]])
    y = torch.tensor([1.5, float("nan"), -3.0])
    assert get_task("regression").loss(scores, y).item() == pytest.approx((1.0 + 1.0) / 2)
    assert get_task("regression").outputs(scores).tolist() == [0.5, 1.0, -3.0]  # clipped to [-3, 3]


def test_label_smoothing_mixes_the_target_with_the_uniform_distribution():
    # Classification, ε = 0.3, 3 classes: target of class 0 = (0.8, 0.1, 0.1); loss = −Σ q·log softmax(z).
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, IGNORE_INDEX])
    log_p = [v - math.log(math.e + 1 + math.exp(-1)) for v in (1.0, 0.0, -1.0)]
    expected = -(0.8 * log_p[0] + 0.1 * log_p[1] + 0.1 * log_p[2])
    assert get_task("classification").loss(logits, y, smoothing=0.3).item() == pytest.approx(expected, rel=1e-6)
    # Multilabel, ε = 0.2: a present emotion's target is 0.9, an absent one's 0.1.
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    bce = -(0.9 * math.log(sig(2.0)) + 0.1 * math.log(1 - sig(2.0)) + 0.1 * math.log(sig(-1.0)) + 0.9 * math.log(1 - sig(-1.0))) / 2
    got = get_task("multilabel").loss(torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]]), smoothing=0.2)
    assert got.item() == pytest.approx(bce, rel=1e-6)


def test_ensemble_logits_give_back_the_mean_output():
    a, b = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, -2.0]])
    task = get_task("multilabel")
    want = (torch.sigmoid(a) + torch.sigmoid(b)) / 2
    assert torch.allclose(task.outputs(task.ensemble_logits([a, b])), want, atol=1e-6)
    task = get_task("regression")
    # the members' served (clipped) scores are averaged: 1 and min(5, 3)
    assert task.outputs(task.ensemble_logits([torch.tensor([[1.0]]), torch.tensor([[5.0]])])).item() == pytest.approx(2.0)


# ---------------------------------------------------------------- metrics
def test_multilabel_metrics_by_hand():
    y_true = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    y_prob = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.1], [0.1, 0.45]])
    m = multilabel_metrics(y_true, y_prob, ("x", "z"), [0.5, 0.4])
    # x: predicted [1,0,1,0]: TP 1, FN 1, FP 1, TN 1 -> WA (1*2/2 + 1)/(2*2) = 0.5, F1 0.5, acc 0.5
    assert m["per_emotion"]["x"] == pytest.approx({"weighted_accuracy": 0.5, "f1": 0.5, "accuracy": 0.5, "threshold": 0.5,
                                                   "positives": 2})
    # z at 0.4: predicted [0,1,0,1]: all right
    assert m["per_emotion"]["z"]["f1"] == 1.0 and m["per_emotion"]["z"]["weighted_accuracy"] == 1.0
    assert m["subset_accuracy"] == pytest.approx(2 / 4)  # rows 2 and 4 fully right
    assert m["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # TP 3, FP 1, FN 1
    assert m["macro_f1"] == pytest.approx(0.75) and m["weighted_f1"] == pytest.approx(0.75)


def test_regression_metrics_by_hand():
    y_true = np.array([-2.0, 0.0, 1.2, 2.6, -0.4])
    y_pred = np.array([-1.0, 0.3, 0.8, 3.4, 0.2])
    m = regression_metrics(y_true, y_pred)
    assert m["mae"] == pytest.approx((1.0 + 0.3 + 0.4 + 0.8 + 0.6) / 5)
    assert m["corr"] == pytest.approx(np.corrcoef(y_true, y_pred)[0, 1])
    # non-negative vs negative: truth [0,1,1,1,0], pred [0,1,1,1,1] -> 4/5 right
    assert m["acc2"] == pytest.approx(0.8)
    # zeros left out: truth [0,1,1,0] (positive?), pred [0,1,1,1] -> 3/4
    assert m["acc2_non0"] == pytest.approx(0.75)
    # Acc-7: rounded truth [-2,0,1,3,-0], pred [-1,0,1,3,0] -> 4/5; Acc-5 clips to ±2: [-2,0,1,2,0] vs [-1,0,1,2,0]
    assert m["acc7"] == pytest.approx(0.8) and m["acc5"] == pytest.approx(0.8)
    assert regression_metrics(np.ones(3), np.ones(3))["corr"] is None


def test_thresholds_chosen_for_best_f1_on_the_grid():
    y_true = np.array([[1], [1], [0], [0], [0]])
    y_prob = np.array([[0.32], [0.28], [0.2], [0.1], [0.05]])
    # any threshold in (0.2, 0.28] separates them; of the grid values 0.25 is the only one
    assert choose_thresholds(y_true, y_prob) == [0.25]
    assert choose_thresholds(np.zeros((3, 1)), np.full((3, 1), 0.9)) == [0.5]


# ---------------------------------------------------------------- end to end
def mosei_like(n: int, seed: int, task: str, *, noise: float = 0.3) -> DialogueSet:
    """Audio vectors that are a fixed linear map of the sentiment and emotion scores, plus noise."""
    mix = np.random.default_rng(99).standard_normal((7, 12))
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        m = int(rng.integers(4, 10))
        z = rng.uniform(-1, 1, (m, 7))
        z[:, 0] *= 3
        x = (z @ mix + noise * rng.standard_normal((m, 12))).astype(np.float32)
        labels = (
            [float(np.round(v, 1)) for v in z[:, 0]] if task == "regression"
            else [tuple(e for e, s in zip(MOSEI_EMOTIONS, row[1:], strict=True) if s > 0.2) for row in z]
        )
        out.append(Dialogue(f"video{seed}_{k}", [f"video{seed}_{k}"] * m, {"a": x}, labels=labels))
    return DialogueSet(out, f"<{task} {seed}>")


SMALL = dict(modalities="a", epochs=12, batch_size=8, global_attention_dim=16, global_ff=32, specific_dim=32, patience=6)


@pytest.mark.parametrize("architecture", ["joyful", "context-lr"])
def test_regression_model_beats_a_constant_predictor_and_round_trips(tmp_path, architecture):
    extra = {} if architecture == "joyful" else {"architecture": "context-lr", "fusion": "concat", "use_gcl": False}
    Joyful(**SMALL, **extra).fit(mosei_like(40, 1, "regression"), mosei_like(10, 2, "regression"),
                                 out_dir=tmp_path, progress=False)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["task"] == "regression" and meta["label_set"]["name"] == "sentiment"
    clf = Joyful.load(tmp_path)
    test = mosei_like(15, 3, "regression")
    m = clf.evaluate(test)
    truth = np.concatenate([d.labels for d in test])
    constant = np.abs(truth - np.median(truth)).mean()  # the best constant under L1
    assert m["task"] == "regression" and m["mae"] < 0.6 * constant
    rows = clf.predict(test)
    assert all(-3 <= r["label"] <= 3 and "probabilities" not in r for r in rows)
    assert np.mean([abs(r["label"] - t) for r, t in zip(rows, truth, strict=True)]) == pytest.approx(m["mae"], abs=1e-5)


def test_multilabel_model_reports_per_emotion_scores_and_uses_its_thresholds(tmp_path):
    clf = Joyful(**SMALL, thresholds="validation").fit(
        mosei_like(40, 1, "multilabel"), mosei_like(10, 2, "multilabel"), out_dir=tmp_path, progress=False,
    )
    loaded = Joyful.load(tmp_path)
    assert loaded.task == "multilabel" and loaded.thresholds == clf.thresholds and len(clf.thresholds) == 6
    test = mosei_like(15, 3, "multilabel")
    m = loaded.evaluate(test, with_predictions=True)
    assert set(m["per_emotion"]) == set(MOSEI_EMOTIONS)
    assert [m["per_emotion"][e]["threshold"] for e in MOSEI_EMOTIONS] == loaded.thresholds
    rows = loaded.predict(test)
    for r, prob in zip(rows, m["y_prob"], strict=True):
        want = [e for e, p, t in zip(MOSEI_EMOTIONS, prob, loaded.thresholds, strict=True) if p >= t]
        assert r["label"] == want
    positives = np.array(m["y_true"]).mean(0)  # a model that learnt beats "always absent" (F1 0) on common emotions
    assert m["weighted_f1"] > 0.5 and positives.max() > 0.2


def test_text_encoder_fine_tuning_is_refused_for_a_score(tmp_path):
    data = DialogueSet([Dialogue("v", ["v", "v"], texts=["good", "bad"], labels=[2.0, -1.0])], "<s>")
    with pytest.raises(JoyfulError, match="softmax over classes; a regression model"):
        Joyful(modalities="t", finetune_text_encoder=True).fit(data, out_dir=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


def test_confidence_of_a_decision_by_hand():
    probs = np.array([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]])
    assert get_task("classification").confidence(probs).tolist() == [0.7, 0.5]
    emotions = np.array([[0.9, 0.2], [0.4, 0.6]])
    # row 1: present (0.9), absent (1 - 0.2) -> 0.85; row 2 at thresholds (0.3, 0.7): present 0.4, absent 0.4 -> 0.4
    assert get_task("multilabel").confidence(emotions, [0.3, 0.7]) == pytest.approx([0.85, 0.4])
    assert get_task("regression").confidence(np.array([1.0])) is None
