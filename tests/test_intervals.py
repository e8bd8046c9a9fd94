"""The dialogue bootstrap: scores as scikit-learn gives them, whole dialogues resampled, repeatable intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from joyful.analysis.intervals import Scored, bootstrap_intervals, half_width_by_size, weighted_scores

LABELS = ("hap", "sad", "neu", "ang")


def _classification(n_dialogues: int = 30, length: int = 12, correct: float = 0.7, seed: int = 0) -> Scored:
    rng = np.random.default_rng(seed)
    n = n_dialogues * length
    y = rng.integers(0, len(LABELS), n)
    pred = np.where(rng.random(n) < correct, y, rng.integers(0, len(LABELS), n))
    return Scored("classification", y, pred, np.repeat(np.arange(n_dialogues), length), LABELS)


def test_scores_of_all_ones_weights_are_scikit_learns():
    s = _classification()
    got = {k: v[0] for k, v in weighted_scores(s, np.ones((1, len(s.y_true)))).items()}
    ids = list(range(len(LABELS)))
    assert got["accuracy"] == pytest.approx(accuracy_score(s.y_true, s.y_pred))
    assert got["weighted_f1"] == pytest.approx(f1_score(s.y_true, s.y_pred, labels=ids, average="weighted"))
    assert got["macro_f1"] == pytest.approx(f1_score(s.y_true, s.y_pred, labels=ids, average="macro"))
    per_class = f1_score(s.y_true, s.y_pred, labels=ids, average=None)
    assert [got[f"f1_{c}"] for c in LABELS] == pytest.approx(list(per_class))


def test_integer_weights_score_like_repeated_utterances():
    """A weight of 2 is the utterance drawn twice: the bootstrap's resamples are scored exactly."""
    rng = np.random.default_rng(1)
    n = 40
    y, pred = rng.integers(0, 2, (n, 3)), rng.integers(0, 2, (n, 3))
    s = Scored("multilabel", y, pred, np.arange(n) // 4, ("a", "b", "c"))
    counts = rng.integers(0, 3, n)
    got = weighted_scores(s, counts[None].astype(float))
    rep = np.repeat(np.arange(n), counts)
    assert got["micro_f1"][0] == pytest.approx(f1_score(y[rep], pred[rep], average="micro"))
    assert got["weighted_f1"][0] == pytest.approx(f1_score(y[rep], pred[rep], average="weighted", zero_division=0))
    assert got["subset_accuracy"][0] == pytest.approx(accuracy_score(y[rep], pred[rep]))
    score, truth = rng.normal(size=n), rng.normal(size=n)
    r = weighted_scores(Scored("regression", truth, score, np.arange(n) // 4, ()), counts[None].astype(float))
    assert r["mae"][0] == pytest.approx(np.abs(truth[rep] - score[rep]).mean())
    assert r["corr"][0] == pytest.approx(np.corrcoef(truth[rep], score[rep])[0, 1])


def test_bootstrap_draws_whole_dialogues_as_a_loop_over_dialogues_does():
    """Reference: draw dialogue ids with the same generator, concatenate their utterances, score with scikit-learn."""
    s = _classification(n_dialogues=15, length=8)
    got = bootstrap_intervals(s, n_resamples=300, seed=7)
    draws = np.random.default_rng(7).integers(0, 15, size=(300, 15))
    scores = []
    for row in draws:
        idx = np.concatenate([np.flatnonzero(s.dialogue == k) for k in row])
        scores.append(f1_score(s.y_true[idx], s.y_pred[idx], labels=range(len(LABELS)), average="weighted"))
    assert got["weighted_f1"] == pytest.approx(list(np.quantile(scores, [0.025, 0.975])))


def test_errors_in_one_dialogue_widen_the_interval_beyond_an_utterance_bootstrap():
    n_dialogues, length = 20, 10
    y = np.zeros(n_dialogues * length, dtype=np.int64)
    pred = y.copy()
    pred[:length] = 1  # every error in dialogue 0
    s = Scored("classification", y, pred, np.repeat(np.arange(n_dialogues), length), ("a", "b"))
    low, high = bootstrap_intervals(s, n_resamples=2000, seed=0)["accuracy"]
    index = np.random.default_rng(0).integers(0, len(y), size=(2000, len(y)))
    u_low, u_high = np.quantile((y[index] == pred[index]).mean(1), [0.025, 0.975])
    assert high - low > 1.5 * (u_high - u_low)
    assert low <= 0.9 <= high


def test_intervals_contain_the_estimate_and_repeat_with_the_seed():
    s = _classification()
    point = {k: v[0] for k, v in weighted_scores(s, np.ones((1, len(s.y_true)))).items()}
    first = bootstrap_intervals(s)
    for name, (low, high) in first.items():
        assert low <= point[name] <= high, name
    assert bootstrap_intervals(s) == first
    assert bootstrap_intervals(s, seed=1) != first


def test_half_width_shrinks_with_more_dialogues():
    s = _classification(n_dialogues=60)
    rows = half_width_by_size(s, (5, 20, 60, 100), draws=10, n_resamples=300)
    assert [r["dialogues"] for r in rows] == [5, 20, 60]  # 100 is more than there are
    widths = [r["half_width"] for r in rows]
    assert widths[0] > widths[1] > widths[2] > 0
    assert rows[2]["utterances"] == len(s.y_true)
