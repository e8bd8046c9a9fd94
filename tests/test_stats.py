"""Significance tests against scipy/statsmodels computed independently, and the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score
from statsmodels.stats.multitest import multipletests

from joyful.benchmark.stats import compare_to_reference, paired_bootstrap

SCORES = {
    "joyful": [0.710, 0.702, 0.715, 0.698, 0.707],
    "wo_gcl": [0.665, 0.671, 0.659, 0.668, 0.662],
    "wo_mf": [0.701, 0.699, 0.712, 0.690, 0.705],
    "noisy": [0.640, 0.690, 0.600, 0.700, 0.655],
}


@pytest.mark.parametrize("welch", [False, True])
def test_t_test_bh_shapiro_levene_match_the_libraries(welch):
    rows = compare_to_reference(SCORES, "joyful", alpha=0.05, welch=welch)
    variants = ["wo_gcl", "wo_mf", "noisy"]
    assert [r.variant for r in rows] == variants
    ref = SCORES["joyful"]
    tests = [stats.ttest_ind(SCORES[v], ref, equal_var=not welch) for v in variants]
    reject, corrected, _, _ = multipletests([t.pvalue for t in tests], alpha=0.05, method="fdr_bh")
    for row, name, t, p_adj, rej in zip(rows, variants, tests, corrected, reject):
        assert row.mean_diff == pytest.approx(np.mean(SCORES[name]) - np.mean(ref))
        assert row.t_statistic == pytest.approx(t.statistic) and row.p_value == pytest.approx(t.pvalue)
        assert row.p_adjusted == pytest.approx(p_adj) and row.reject == bool(rej)
        assert row.shapiro_p_variant == pytest.approx(stats.shapiro(SCORES[name]).pvalue)
        assert row.shapiro_p_reference == pytest.approx(stats.shapiro(ref).pvalue)
        assert row.levene_p == pytest.approx(stats.levene(SCORES[name], ref).pvalue)
    assert rows[0].reject and rows[0].mean_diff < 0  # w/o GCL is clearly worse
    assert not rows[1].reject  # w/o MF is within noise


def test_too_few_seeds_give_none_and_stay_out_of_the_correction():
    rows = compare_to_reference({"ref": [0.70, 0.71], "two": [0.60, 0.61], "one": [0.5], "same": [0.70, 0.71]}, "ref")
    two, one, same = rows
    assert two.shapiro_p_variant is None and two.shapiro_p_reference is None  # Shapiro–Wilk needs 3 samples
    assert one.p_value is None and one.p_adjusted is None and one.reject is None and one.levene_p is None
    _, corrected, _, _ = multipletests([two.p_value, same.p_value], method="fdr_bh")
    assert [two.p_adjusted, same.p_adjusted] == pytest.approx(list(corrected))


def test_unknown_reference_is_an_error():
    with pytest.raises(KeyError, match="nope"):
        compare_to_reference(SCORES, "nope")


@pytest.fixture
def labels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 6, size=400)


def corrupt(y: np.ndarray, share: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(y)) < share
    return np.where(wrong, (y + rng.integers(1, 6, size=len(y))) % 6, y)


def test_identical_predictions_differ_by_nothing(labels):
    pred = corrupt(labels, 0.4, 1)
    result = paired_bootstrap(labels, pred, pred.copy())
    assert result.difference == 0.0 and result.ci_low == 0.0 and result.ci_high == 0.0
    assert result.p_value == pytest.approx(1.0)


@pytest.mark.parametrize("metric", ["weighted_f1", "macro_f1", "accuracy"])
def test_clearly_better_predictions_have_a_ci_above_zero(labels, metric):
    good, bad = corrupt(labels, 0.15, 1), corrupt(labels, 0.5, 2)
    result = paired_bootstrap(labels, good, bad, metric=metric, n_resamples=500, seed=3)
    assert 0.0 < result.ci_low <= result.difference <= result.ci_high and result.p_value < 0.01
    score = {
        "weighted_f1": lambda p: f1_score(labels, p, average="weighted"),
        "macro_f1": lambda p: f1_score(labels, p, average="macro"),
        "accuracy": lambda p: accuracy_score(labels, p),
    }[metric]
    assert result.score_a == pytest.approx(score(good)) and result.difference == pytest.approx(score(good) - score(bad))
    assert paired_bootstrap(labels, good, bad, metric=metric, n_resamples=500, seed=3) == result  # seeded
    flipped = paired_bootstrap(labels, bad, good, metric=metric, n_resamples=500, seed=3)
    assert flipped.ci_high < 0 and flipped.p_value == pytest.approx(result.p_value)


def test_bootstrap_checks_its_input(labels):
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap(labels, labels[:-1], labels)
    with pytest.raises(ValueError, match="metric"):
        paired_bootstrap(labels, labels, labels, metric="auc")
