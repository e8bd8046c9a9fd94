"""Significance tests against values worked out by hand, and properties of the paired bootstrap.

Nothing here calls the libraries the code uses (scipy.stats, statsmodels). The t-test
p-values come from the closed form of Student's t distribution for an even number of
degrees of freedom ν (Abramowitz & Stegun 26.7.3): with θ = atan(|t| / √ν),

    P(|T| > |t|) = 1 − sin θ · (1 + ½cos²θ + (1·3)/(2·4)cos⁴θ + … + (1·3···(ν−3))/(2·4···(ν−2))cos^(ν−2)θ),

so every example below has even ν; the literal values are that formula done by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from joyful.benchmark.stats import _benjamini_hochberg, compare_to_reference, paired_bootstrap


def t_p_value(t: float, df: int) -> float:
    """Two-sided p of Student's t with even ``df``, from the finite series above."""
    assert df % 2 == 0
    cos2 = df / (df + t * t)
    sin = abs(t) / math.sqrt(df + t * t)
    term = total = 1.0
    for k in range(1, df // 2):
        term *= (2 * k - 1) / (2 * k) * cos2
        total += term
    return 1.0 - sin * total


def test_the_reference_formula_reproduces_printed_t_tables():
    # Two-sided 5% critical values from any t table: t(0.975; 2) = 4.303, t(0.975; 4) = 2.776,
    # t(0.975; 10) = 2.228 (1% for 8 degrees: 3.355).
    assert t_p_value(4.303, 2) == pytest.approx(0.05, abs=1e-4)
    assert t_p_value(2.776, 4) == pytest.approx(0.05, abs=1e-4)
    assert t_p_value(2.228, 10) == pytest.approx(0.05, abs=1e-4)
    assert t_p_value(3.355, 8) == pytest.approx(0.01, abs=1e-4)


#: Shifted copies of one sample, so every number below is a small fraction.
SHIFTED = {
    "ref": [3, 4, 5, 6, 7],  # mean 5, variance 2.5
    "lower": [1, 2, 3, 4, 5],  # mean 3
    "same": [3, 4, 5, 6, 7],
    "higher": [7, 8, 9, 10, 11],  # mean 9
}
# Student, n = 5 + 5, ν = 8: pooled variance 2.5, standard error √(2.5·(1/5 + 1/5)) = 1, so t = Δmean.
#   lower:  t = −2, cos²θ = 8/12 = 2/3, sin θ = 1/√3: p = 1 − (1/√3)(1 + 1/3 + 1/6 + 5/54) = 1 − 43/(27√3)
#   higher: t = 4,  cos²θ = 8/24 = 1/3, sin θ = √(2/3): p = 1 − √(2/3)(1 + 1/6 + 1/24 + 5/432) = 1 − √(2/3)·527/432
#   same:   t = 0, p = 1
P_LOWER = 1 - 43 / (27 * math.sqrt(3))  # 0.080516
P_HIGHER = 1 - math.sqrt(2 / 3) * 527 / 432  # 0.003950
# Benjamini–Hochberg over m = 3: ranks higher (1), lower (2), same (3); p·m/rank = 0.01185, 0.12077, 1;
# the running minimum from the top changes nothing here.
ADJ_HIGHER, ADJ_LOWER = 3 * P_HIGHER, 1.5 * P_LOWER


@pytest.mark.parametrize("welch", [False, True])
def test_t_test_and_bh_against_hand_computed_values(welch):
    # With equal sizes and equal variances Welch's test is Student's (same t, ν = 8), so both agree.
    rows = compare_to_reference(SHIFTED, "ref", alpha=0.05, welch=welch)
    assert [r.variant for r in rows] == ["lower", "same", "higher"]
    lower, same, higher = rows
    assert [r.mean_diff for r in rows] == pytest.approx([-2.0, 0.0, 4.0])
    assert [r.t_statistic for r in rows] == pytest.approx([-2.0, 0.0, 4.0])
    assert lower.p_value == pytest.approx(0.080516, abs=1e-6) and lower.p_value == pytest.approx(P_LOWER, rel=1e-9)
    assert higher.p_value == pytest.approx(0.003950, abs=1e-6) and higher.p_value == pytest.approx(P_HIGHER, rel=1e-9)
    assert same.p_value == pytest.approx(1.0)
    assert [r.p_adjusted for r in rows] == pytest.approx([ADJ_LOWER, 1.0, ADJ_HIGHER], rel=1e-9)
    assert [r.reject for r in rows] == [False, False, True]
    # Levene (median-centred): absolute deviations from the median are [2, 1, 0, 1, 2] in every
    # group, so the groups' spreads are identical: F = 0, p = 1.
    assert [r.levene_p for r in rows] == pytest.approx([1.0, 1.0, 1.0])
    # Shapiro–Wilk does not see a shift: every shifted copy has the reference's p.
    assert all(r.shapiro_p_variant == pytest.approx(r.shapiro_p_reference) for r in rows)
    assert all(r.n_variant == 5 and r.n_reference == 5 and r.mean_reference == 5.0 for r in rows)


def test_welch_and_student_differ_when_the_variances_do():
    # variant [0, 3, 6]: mean 3, variance 9; reference [3, 5, 9, 11, 17]: mean 9, deviations
    # [−6, −4, 0, 2, 8], variance 120/4 = 30.
    scores = {"ref": [3, 5, 9, 11, 17], "narrow": [0, 3, 6]}
    # Welch: s² = 9/3 + 30/5 = 3 + 6 = 9, t = (3 − 9)/3 = −2; Welch–Satterthwaite
    # ν = 9² / (3²/2 + 6²/4) = 81/13.5 = 6; cos²θ = 6/10, sin θ = 2/√10:
    # p = 1 − (2/√10)(1 + 3/10 + 27/200) = 1 − 287/(100√10) = 0.092426.
    (welch,) = compare_to_reference(scores, "ref", welch=True)
    assert welch.t_statistic == pytest.approx(-2.0)
    assert welch.p_value == pytest.approx(0.092426, abs=1e-6)
    assert welch.p_value == pytest.approx(1 - 287 / (100 * math.sqrt(10)), rel=1e-9)
    # Student: pooled variance (2·9 + 4·30)/6 = 23, t = −6/√(23·(1/3 + 1/5)) = −6/√(184/15) = −1.713121, ν = 6.
    (student,) = compare_to_reference(scores, "ref", welch=False)
    t = -6 / math.sqrt(184 / 15)
    assert student.t_statistic == pytest.approx(-1.713121, abs=1e-6) and student.t_statistic == pytest.approx(t)
    assert student.p_value == pytest.approx(0.137525, abs=1e-6) and student.p_value == pytest.approx(t_p_value(t, 6))
    # A single test: BH leaves its p-value alone.
    assert student.p_adjusted == pytest.approx(student.p_value) and student.reject is False
    # Levene with two groups is a Student t-test on the absolute deviations from each group's
    # median (F = t²): z = [3, 0, 3] (mean 2, variance 3) and [6, 4, 0, 2, 8] (mean 4, variance 10);
    # pooled variance (2·3 + 4·10)/6 = 23/3, t = −2/√(23/3·8/15) = −0.989071, ν = 6: p = 0.360822.
    tz = -2 / math.sqrt(23 / 3 * 8 / 15)
    assert student.levene_p == pytest.approx(0.360822, abs=1e-6) and student.levene_p == pytest.approx(t_p_value(tz, 6))
    assert welch.levene_p == pytest.approx(student.levene_p)


def test_shapiro_wilk_for_three_values_has_an_exact_p():
    # For n = 3, W = (x₃ − x₁)² / (2·SS), and P(W ≤ w) = (6/π)(asin √w − asin √(3/4)) exactly
    # (Shapiro & Wilk 1965). [0, 1, 3]: SS = 14/3, W = 9/(28/3) = 27/28, p = 0.636887.
    # Equally spaced values are as normal as three values can be: W = 1, p = 1.
    rows = compare_to_reference({"ref": [0, 1, 3], "shifted": [10, 11, 13], "even": [0, 3, 6]}, "ref")
    exact = 6 / math.pi * (math.asin(math.sqrt(27 / 28)) - math.pi / 3)
    assert exact == pytest.approx(0.636887, abs=1e-6)
    shifted, even = rows
    assert shifted.shapiro_p_reference == pytest.approx(exact, abs=1e-6)
    assert shifted.shapiro_p_variant == pytest.approx(exact, abs=1e-6)
    assert even.shapiro_p_variant == pytest.approx(1.0, abs=1e-6)
    # and the t-test: equal variances 7/3, t = 10/√(7/3·2/3) = 30/√14 = 8.017837, ν = 4
    assert shifted.t_statistic == pytest.approx(30 / math.sqrt(14))
    assert shifted.p_value == pytest.approx(t_p_value(30 / math.sqrt(14), 4)) and shifted.p_value == pytest.approx(0.001313, abs=1e-6)


def test_benjamini_hochberg_worked_by_hand():
    # m = 4 known p-values (None: not computable, left out and kept None).
    # sorted: 0.01 (rank 1), 0.03 (2), 0.04 (3), 0.20 (4); p·m/rank = 0.04, 0.06, 0.0533…, 0.20;
    # running minimum from the largest rank down: 0.20, 0.0533…, min(0.06, 0.0533…) = 0.0533…, 0.04.
    # Step-up at α = 0.05: p(k) ≤ k·α/m holds only for k = 1 (0.01 ≤ 0.0125; 0.03 > 0.025, 0.04 > 0.0375).
    adjusted, reject = _benjamini_hochberg([0.01, 0.04, None, 0.03, 0.20], 0.05)
    assert adjusted[2] is None and reject[2] is None
    assert [adjusted[i] for i in (0, 1, 3, 4)] == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])
    assert [reject[i] for i in (0, 1, 3, 4)] == [True, False, False, False]
    # At α = 0.06, k = 3 passes (0.04 ≤ 3·0.06/4 = 0.045), so ranks 1–3 are rejected.
    _, reject = _benjamini_hochberg([0.01, 0.04, None, 0.03, 0.20], 0.06)
    assert reject == [True, True, None, True, False]
    assert _benjamini_hochberg([None, None], 0.05) == ([None, None], [None, None])


def test_too_few_seeds_give_none_and_stay_out_of_the_correction():
    rows = compare_to_reference({"ref": [0.70, 0.71], "two": [0.60, 0.61], "one": [0.5], "same": [0.70, 0.71]}, "ref")
    two, one, same = rows
    assert two.shapiro_p_variant is None and two.shapiro_p_reference is None  # Shapiro–Wilk needs 3 samples
    assert one.p_value is None and one.p_adjusted is None and one.reject is None and one.levene_p is None
    # two: variances 0.00005 each, standard error √(0.00005·(1/2 + 1/2)) = 0.0070711, t = −0.1/0.0070711 = −10√2,
    # ν = 2 (the series is just 1): p = 1 − |t|/√(2 + t²) = 1 − √200/√202 = 0.004963.
    assert two.t_statistic == pytest.approx(-10 * math.sqrt(2), rel=1e-6)
    assert two.p_value == pytest.approx(1 - math.sqrt(200 / 202), rel=1e-5)
    assert same.t_statistic == pytest.approx(0.0, abs=1e-9) and same.p_value == pytest.approx(1.0)
    # BH over the two computable ones only (m = 2, not 3): 2·p for rank 1, 1 for rank 2.
    assert two.p_adjusted == pytest.approx(2 * two.p_value) and same.p_adjusted == pytest.approx(1.0)


def test_unknown_reference_is_an_error():
    with pytest.raises(KeyError, match="nope"):
        compare_to_reference(SHIFTED, "nope")


# ---------------------------------------------------------------------- paired bootstrap
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
    # every resample's difference is 0, so both tails count all n: min(1, 2·(n + 1)/(n + 1)) = 1
    assert result.p_value == pytest.approx(1.0)


def test_scores_of_a_tiny_case_worked_by_hand():
    y = [0, 0, 1, 1]
    a = [0, 0, 1, 1]  # perfect
    b = [0, 1, 1, 1]  # class 0: 1 hit of 2, 1 predicted, F1 = 2/3; class 1: 2 hits, 3 predicted, F1 = 4/5
    acc = paired_bootstrap(y, a, b, metric="accuracy", n_resamples=20)
    assert (acc.score_a, acc.score_b, acc.difference) == pytest.approx((1.0, 0.75, 0.25))
    weighted = paired_bootstrap(y, a, b, metric="weighted_f1", n_resamples=20)
    assert weighted.score_b == pytest.approx((2 * 2 / 3 + 2 * 4 / 5) / 4)  # 11/15
    macro = paired_bootstrap(y, a, b, metric="macro_f1", n_resamples=20)
    assert macro.score_b == pytest.approx((2 / 3 + 4 / 5) / 2)  # 11/15
    # With a third class that neither labels nor predictions use, macro F1 averages over it (F1 0):
    macro3 = paired_bootstrap(y, a, b, metric="macro_f1", n_resamples=20, n_classes=3)
    assert (macro3.score_a, macro3.score_b) == pytest.approx((2 / 3, 22 / 45))


def test_ci_of_a_constructed_case_covers_the_true_difference_and_is_paired():
    # 200 utterances: both systems right on the first 100, only A on the next 50, both wrong on the
    # last 50. Accuracy difference 150/200 − 100/200 = 0.25; per utterance d = 1 on 50, else 0,
    # so the paired standard error is √(0.25·0.75/200) = 0.03062 and a 95% CI ≈ 0.25 ± 0.060.
    # Resampling A and B independently would give √((0.1875 + 0.25)/200) = 0.04677, ± 0.092.
    y = np.zeros(200, dtype=int)
    a = np.where(np.arange(200) < 150, 0, 1)
    b = np.where(np.arange(200) < 100, 0, 1)
    result = paired_bootstrap(y, a, b, metric="accuracy", n_resamples=2000, seed=5)
    assert result.difference == pytest.approx(0.25)
    assert result.ci_low < 0.25 < result.ci_high
    assert (result.ci_high - result.ci_low) / 2 == pytest.approx(1.96 * 0.03062, rel=0.15)
    # No resample can have A ≤ B unless it drew none of the 50 (probability 0.75²⁰⁰): p = 2·1/(n + 1).
    assert result.p_value == pytest.approx(2 / 2001)
    # Resampling b - a gives the mirror image.
    flipped = paired_bootstrap(y, b, a, metric="accuracy", n_resamples=2000, seed=5)
    assert (flipped.ci_low, flipped.ci_high) == pytest.approx((-result.ci_high, -result.ci_low))


@pytest.mark.parametrize("metric", ["weighted_f1", "macro_f1", "accuracy"])
def test_clearly_better_predictions_have_a_ci_above_zero(labels, metric):
    good, bad = corrupt(labels, 0.15, 1), corrupt(labels, 0.5, 2)
    result = paired_bootstrap(labels, good, bad, metric=metric, n_resamples=500, seed=3)
    assert 0.0 < result.ci_low <= result.difference <= result.ci_high and result.p_value < 0.01
    score = {  # scikit-learn, which the batched confusion counts of the code do not use
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


def test_paired_comparison_pairs_runs_by_key_and_matches_hand_values():
    from joyful.benchmark.stats import paired_compare_to_reference

    # Differences d = [1, 2, 3, 4, 5] points (ν = 4): mean 3, sd √2.5, t = 3 / √(2.5 / 5) = 3√2.
    # Wilcoxon: every rank positive, W = 0, exact p = 2 · 1/2⁵ = 0.0625. A run without a partner is left out.
    reference = {(fold, 1): 0.5 + fold / 100 for fold in range(1, 6)}
    better = {key: value + key[0] / 100 for key, value in reversed(reference.items())} | {(9, 9): 0.9}
    same = dict(reference)
    better_cmp, same_cmp = paired_compare_to_reference({"ref": reference, "better": better, "same": same}, "ref")
    assert better_cmp.n_pairs == 5 and better_cmp.mean_diff == pytest.approx(0.03)
    assert better_cmp.t_statistic == pytest.approx(3 * math.sqrt(2))
    assert better_cmp.p_t == pytest.approx(t_p_value(3 * math.sqrt(2), 4))
    assert better_cmp.w_statistic == 0 and better_cmp.p_w == pytest.approx(0.0625)
    # BH over W: p = [0.0625, 1] → [0.125, 1]; the t-test of identical runs is undefined and not corrected.
    assert better_cmp.p_w_adjusted == pytest.approx(0.125) and better_cmp.p_t_adjusted == pytest.approx(better_cmp.p_t)
    assert (same_cmp.t_statistic, same_cmp.p_t, same_cmp.w_statistic, same_cmp.p_w) == (None, None, 0.0, 1.0)
