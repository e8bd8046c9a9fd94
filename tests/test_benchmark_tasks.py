"""Grids, significance and tuning on the multilabel and regression tasks: the primary metric ranks, the others are listed.

Every expected value is worked out here from the stored labels and predictions (NumPy,
scikit-learn) or by hand, and directions come from constructed cases whose answer is
known: a model shown the true sentiment must have the lower MAE and win.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from conftest import TINY
from joyful.benchmark.gridfile import Cell, load_grid
from joyful.benchmark.scores import scores_of
from joyful.benchmark.significance import write_significance
from joyful.benchmark.stats import paired_bootstrap
from joyful.cli import app
from joyful.errors import JoyfulError
from joyful.io.jsonl import write_jsonl
from joyful.synthetic_mosei import generate_mosei

WIDTHS = {"t": 8, "a": 4, "v": 4}
LINEAR = 'architecture = "context-lr", fusion = "concat", use_gcl = false'
EMOTIONS = ["happy", "sad", "anger", "surprise", "disgust", "fear"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def benchmark(grid: Path, out: Path) -> str:
    result = CliRunner().invoke(app, ["benchmark", "--config", str(grid), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return result.output


def result(out: Path, cell: str, seed: int = 1) -> dict:
    return json.loads((out / "runs" / cell / f"seed-{seed}" / "result.json").read_text())


def tiny_fields(epochs: int = 2) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in {**TINY, "epochs": epochs, "patience": epochs}.items())


# ---------------------------------------------------------------- regression: a grid ranked by MAE


def oracle_and_noise(n: int, seed: int, prefix: str) -> list:
    """MOSEI-shaped sentiment videos whose visual features are the true score and whose audio is pure noise."""
    rng = np.random.default_rng(100 + seed)
    out = []
    for d in generate_mosei(n, task="regression", widths=WIDTHS, seed=seed, prefix=prefix):
        y = np.asarray(d.labels, dtype=np.float32)[:, None]
        visual = np.hstack([y, 0.01 * rng.standard_normal((len(y), 3))]).astype(np.float32)
        audio = rng.standard_normal((len(y), 4)).astype(np.float32)
        out.append(dataclasses.replace(d, features={**d.features, "v": visual, "a": audio}))
    return out


@pytest.fixture(scope="module")
def regression_grid(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("regression")
    for role, n, seed in (("train", 24, 0), ("valid", 8, 1), ("test", 8, 2)):
        write_jsonl(oracle_and_noise(n, seed, f"{role}-"), root / f"{role}.jsonl")
    (root / "grid.toml").write_text(f"""
seeds = [1]
reference = "noise"
threads = 1
presets = ["mosi-sentiment"]

[data]
train = "train.jsonl"
valid = "valid.jsonl"
test = "test.jsonl"

[ablations]
oracle = {{ {LINEAR}, modalities = "v" }}
noise = {{ {LINEAR}, modalities = "a" }}
joyful = {{ modalities = "atv", {tiny_fields()} }}
""")
    output = benchmark(root / "grid.toml", root / "out")
    return root / "out", output


def test_regression_tables_show_mae_first_then_the_others(regression_grid):
    out, output = regression_grid
    rows = {r["cell"]: r for r in read_csv(out / "results.csv")}
    assert list(rows) == ["oracle", "noise", "joyful"]
    for cell, row in rows.items():
        run = result(out, cell)
        y, p = np.asarray(run["y_true"]), np.asarray(run["y_pred"])
        assert float(row["mae_mean"]) == pytest.approx(np.abs(y - p).mean())
        assert float(row["acc2_mean"]) == pytest.approx(((y >= 0) == (p >= 0)).mean())
        assert float(row["acc7_mean"]) == pytest.approx((np.round(y) == np.round(p)).mean())  # scores lie in [-3, 3]
        assert row["mae_std"] == ""  # one seed: no spread to show
    md = (out / "results.md").read_text()
    assert "| cell | seeds | MAE | corr | Acc-2 | F1 | Acc-7 |" in md and "lower MAE is better" in md
    assert f"| oracle | 1 | {float(rows['oracle']['mae_mean']):.3f} |" in md  # MAE as it is, not in percent
    assert "weighted F1" not in md and "accuracy" not in md
    assert "oracle seed 1: MAE " in output and ", corr " in output
    # the planted cases: the true score as a feature is near perfect, noise is not
    assert float(rows["oracle"]["mae_mean"]) < 0.2 < 0.6 < float(rows["noise"]["mae_mean"])
    runs = read_csv(out / "runs.csv")
    assert {"mae", "corr", "acc2", "f1", "acc7"} <= set(runs[0]) and not any(k.startswith("f1_") for k in runs[0])


def test_regression_bootstrap_says_the_lower_mae_wins(regression_grid):
    out, _ = regression_grid
    rows = {r["variant"]: r for r in read_csv(out / "bootstrap.csv")}
    oracle, noise = result(out, "oracle"), result(out, "noise")
    y = np.asarray(noise["y_true"])
    expected = np.abs(y - oracle["y_pred"]).mean() - np.abs(y - noise["y_pred"]).mean()
    assert expected < 0  # the oracle's MAE is lower: it is the better one
    row = rows["oracle"]
    assert float(row["difference"]) == pytest.approx(expected)
    assert float(row["ci_low"]) < float(row["ci_high"]) < 0 and float(row["p_value"]) < 0.01
    assert row["better"] == "variant"
    md = (out / "bootstrap.md").read_text()
    assert "MAE (lower is better)" in md and "| variant | seed | MAE | Δ vs reference | better |" in md
    assert f"| oracle | 1 | {float(row['score_variant']):.3f} | {expected:+.3f} | variant |" in md


# ---------------------------------------------------------------- significance on hand-built MAE scores


def fake(cell: str, seed: int, mae: float, fold: int | None = None) -> dict:
    """A finished run scored on one utterance whose error is ``mae`` (so the bootstrap has predictions to pair)."""
    return {"cell": cell, "fold": fold, "seed": seed, "metrics": {"task": "regression", "mae": mae},
            "y_true": [0.0], "y_pred": [mae]}


def test_seed_t_tests_on_mae_read_a_negative_difference_as_a_gain(tmp_path):
    # Student, 5 + 5 seeds, ν = 8: each group's variance 0.025, pooled standard error √(0.025 · 2/5) = 0.1.
    #   lower (MAE 0.1..0.5, mean 0.3): Δ = −0.2, t = −2, p = 1 − 43/(27√3) = 0.080516 (A&S 26.7.3, as in test_stats)
    #   higher (0.7..1.1, mean 0.9):    Δ = +0.4, t = 4,  p = 1 − √(2/3)·527/432 = 0.003950
    ref = [0.3, 0.4, 0.5, 0.6, 0.7]
    groups = {"ref": ref, "lower": [x - 0.2 for x in ref], "higher": [x + 0.4 for x in ref]}
    records = [fake(name, seed, v) for name, values in groups.items() for seed, v in enumerate(values, start=1)]
    cells = [Cell(n, "mosi-sentiment", None, None, {}, 0.0) for n in groups]
    write_significance(records, cells, "ref", tmp_path)
    rows = {r["variant"]: r for r in read_csv(tmp_path / "significance.csv")}
    assert float(rows["lower"]["mean_diff"]) == pytest.approx(-0.2) and rows["lower"]["better"] == "variant"
    assert float(rows["lower"]["t_statistic"]) == pytest.approx(-2.0)
    assert float(rows["lower"]["p_value"]) == pytest.approx(1 - 43 / (27 * math.sqrt(3)), abs=1e-6)
    assert float(rows["higher"]["mean_diff"]) == pytest.approx(0.4) and rows["higher"]["better"] == "reference"
    assert float(rows["higher"]["p_value"]) == pytest.approx(1 - math.sqrt(2 / 3) * 527 / 432, abs=1e-6)
    md = (tmp_path / "significance.md").read_text()
    assert md.count("MAE (lower is better) on the grid's test data over seeds (reference: 0.500, n = 5)") == 1
    assert "| lower | 5 | 0.300 | -0.200 | variant | -2.000 |" in md
    # bootstrap of the first seeds over their single utterance: MAE 0.1 against 0.3 on every resample
    boot = {r["variant"]: r for r in read_csv(tmp_path / "bootstrap.csv")}
    assert float(boot["lower"]["difference"]) == pytest.approx(0.1 - 0.3) and boot["lower"]["better"] == "variant"


def test_cross_validated_mae_pairs_have_the_right_sign(tmp_path):
    # paired over 5 folds: d = variant − reference = −1, −2, −3, −4, −5 hundredths of MAE (a gain each time):
    #   mean −0.03, t = −3√2, two-sided p_t = 0.013236 (as for +3√2); Wilcoxon W = 0, exact p = 2/2⁵ = 0.0625.
    reference = [0.50, 0.51, 0.52, 0.53, 0.54]
    records = [fake("ref", 1, r, fold) for fold, r in enumerate(reference, start=1)]
    records += [fake("better", 1, r - fold / 100, fold) for fold, r in enumerate(reference, start=1)]
    cells = [Cell(n, "mosi-sentiment", None, None, {}, 0.0) for n in ("ref", "better")]
    write_significance(records, cells, "ref", tmp_path)
    (row,) = read_csv(tmp_path / "significance.csv")
    assert float(row["mean_diff"]) == pytest.approx(-0.03) and row["better"] == "variant"
    assert float(row["t"]) == pytest.approx(-3 * math.sqrt(2), rel=1e-6)
    assert float(row["p_t"]) == pytest.approx(0.013236, abs=1e-6) and float(row["p_w"]) == pytest.approx(0.0625)
    assert "| better | 5 | 0.490 | -0.030 | variant |" in (tmp_path / "significance.md").read_text()


def test_cross_validated_regression_grid_over_generated_videos(tmp_path):
    (tmp_path / "grid.toml").write_text(f"""
seeds = [1]
threads = 1
cv = 3
presets = ["mosei-sentiment"]
reference = "text"

[data.synthetic]
task = "regression"
n_train = 12
n_valid = 6
widths = {{ t = 8, a = 4, v = 4 }}

[ablations]
text = {{ {LINEAR}, modalities = "t" }}
visual = {{ {LINEAR}, modalities = "v" }}
""")
    out = tmp_path / "out"
    benchmark(tmp_path / "grid.toml", out)
    folds = json.loads((out / "folds" / "folds.json").read_text())["folds"]
    tests = [video for f in folds for video in f["test"]]
    assert len(tests) == len(set(tests)) == 18  # every video held out exactly once, whole
    maes = {}
    for cell in ("text", "visual"):
        for k in (1, 2, 3):
            run = json.loads((out / "runs" / cell / f"fold-{k}" / "seed-1" / "result.json").read_text())
            maes[cell, k] = np.abs(np.subtract(run["y_true"], run["y_pred"])).mean()
    by_fold = {(r["cell"], r["fold"]): r for r in read_csv(out / "results_by_fold.csv")}
    assert all(float(by_fold[cell, str(k)]["mae_mean"]) == pytest.approx(v) for (cell, k), v in maes.items())
    assert "MAE (lower is better) on each fold's held-out dialogues," in (out / "results_by_fold.md").read_text()
    (row,) = read_csv(out / "significance.csv")
    diff = np.mean([maes["visual", k] - maes["text", k] for k in (1, 2, 3)])
    assert float(row["mean_diff"]) == pytest.approx(diff)
    assert row["better"] == ("variant" if diff < 0 else "reference")  # the lower MAE wins


# ---------------------------------------------------------------- the bootstrap recomputes each task's metric


def test_bootstrap_scores_multilabel_rows_and_regression_scores():
    rng = np.random.default_rng(0)
    y = (rng.random((120, 6)) < 0.3).astype(int)
    good = np.where(rng.random(y.shape) < 0.1, 1 - y, y)
    bad = np.where(rng.random(y.shape) < 0.4, 1 - y, y)
    for metric, average in (("weighted_f1", "weighted"), ("micro_f1", "micro"), ("macro_f1", "macro")):
        r = paired_bootstrap(y, good, bad, metric, n_resamples=300, seed=1, task="multilabel")
        want = [f1_score(y, p, average=average, zero_division=0) for p in (good, bad)]
        assert (r.score_a, r.score_b) == pytest.approx(want)
        assert 0 < r.ci_low < r.difference < r.ci_high and r.p_value < 0.01
    subset = paired_bootstrap(y, good, bad, "subset_accuracy", n_resamples=50, task="multilabel")
    assert subset.score_a == pytest.approx((good == y).all(1).mean())
    # regression: MAE of each side; the better side (closer scores) has the lower MAE, so a − b < 0
    truth = rng.uniform(-3, 3, 200)
    close, far = truth + rng.normal(0, 0.2, 200), truth + rng.normal(0, 1.0, 200)
    r = paired_bootstrap(truth, close, far, "mae", n_resamples=300, task="regression")
    assert (r.score_a, r.score_b) == pytest.approx((np.abs(truth - close).mean(), np.abs(truth - far).mean()))
    assert r.ci_low < r.ci_high < 0 and r.p_value < 0.01
    same = paired_bootstrap(truth, close, close.copy(), "mae", n_resamples=50, task="regression")
    assert same.difference == 0 and same.p_value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="metric"):
        paired_bootstrap(truth, close, far, "weighted_f1", task="regression")


# ---------------------------------------------------------------- multilabel: weighted F1 over the emotions


def test_multilabel_grid_reports_weighted_f1_over_the_emotions(tmp_path):
    (tmp_path / "grid.toml").write_text(f"""
seeds = [1]
threads = 1
presets = ["mosei-emotion"]
reference = "all"

[data.synthetic]
task = "multilabel"
n_train = 20
n_valid = 8
widths = {{ t = 8, a = 4, v = 4 }}
signal = 2.0

[base]
architecture = "context-lr"
fusion = "concat"
use_gcl = false

[ablations]
all = {{}}
text = {{ modalities = "t" }}
""")
    output = benchmark(tmp_path / "grid.toml", tmp_path / "out")
    first = json.loads((tmp_path / "out" / "data" / "train.jsonl").read_text().splitlines()[0])
    assert all(isinstance(u["label"], list) for u in first["utterances"])  # generated MOSEI-shaped, multi-label
    run = result(tmp_path / "out", "all")
    y, p = np.asarray(run["y_true"]), np.asarray(run["y_pred"])
    assert y.shape[1] == p.shape[1] == 6 and set(np.unique(p)) <= {0, 1}
    row = read_csv(tmp_path / "out" / "results.csv")[0]
    assert float(row["weighted_f1_mean"]) == pytest.approx(f1_score(y, p, average="weighted", zero_division=0))
    assert float(row["micro_f1_mean"]) == pytest.approx(f1_score(y, p, average="micro", zero_division=0))
    assert float(row["subset_accuracy_mean"]) == pytest.approx((y == p).all(1).mean())
    for k, emotion in enumerate(EMOTIONS):
        assert float(row[f"f1_{emotion}_mean"]) == pytest.approx(f1_score(y[:, k], p[:, k], zero_division=0))
    md = (tmp_path / "out" / "results.md").read_text()
    header = "| cell | seeds | weighted F1 | micro F1 | macro F1 | subset accuracy | " + " | ".join(
        f"F1 {e}" for e in EMOTIONS) + " |"
    assert header in md
    assert "all seed 1: weighted F1 " in output and ", micro F1 " in output
    # the bootstrap pairs the 0/1 rows; higher is better, so Δ reads as it is and needs no "better" column
    (boot,) = read_csv(tmp_path / "out" / "bootstrap.csv")
    text = result(tmp_path / "out", "text")
    want = (f1_score(y, text["y_pred"], average="weighted", zero_division=0)
            - f1_score(y, p, average="weighted", zero_division=0))
    assert float(boot["difference"]) == pytest.approx(want) and "better" not in boot
    assert "Weighted F1 over the emotions of each cell's first seed" in (tmp_path / "out" / "bootstrap.md").read_text()


# ---------------------------------------------------------------- one task per grid


def test_a_grid_of_several_tasks_is_refused_before_training(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('seeds = [1]\npresets = ["mosei-emotion", "mosei-sentiment"]\n'
                    "[data.synthetic]\nn_train = 4\nn_valid = 2\n")
    with pytest.raises(JoyfulError, match=r"one grid holds one task.*multilabel.*regression"):
        load_grid(grid)
    generated = '[data.synthetic]\ntask = "regression"\nn_train = 4\nn_valid = 2\n'
    grid.write_text('seeds = [1]\npresets = ["mosei-emotion"]\n' + generated)
    with pytest.raises(JoyfulError, match="one grid holds one task"):
        load_grid(grid)
    grid.write_text('seeds = [1]\npresets = ["mosi-sentiment"]\n' + generated)
    assert load_grid(grid).task == "regression"
    mixed = [fake("a", 1, 0.5), {"cell": "b", "seed": 1, "metrics": {"weighted_f1": 0.5}}]  # b: from before tasks
    with pytest.raises(JoyfulError, match="different tasks"):
        scores_of(mixed)


# ---------------------------------------------------------------- tuning a regression model minimises MAE


def test_tune_on_regression_minimises_mae(tmp_path):
    optuna = pytest.importorskip("optuna")
    from joyful.api import Joyful
    from joyful.benchmark.tune import tune
    from joyful.config import JoyfulConfig

    for role, n, seed in (("train", 16, 0), ("valid", 6, 1)):
        write_jsonl(generate_mosei(n, task="regression", widths=WIDTHS, seed=seed, prefix=f"{role}-"),
                    tmp_path / f"{role}.jsonl")
    base = JoyfulConfig(**{**TINY, "epochs": 2, "patience": 2, "task": "regression", "label_set": "sentiment"})
    summary = tune(tmp_path / "train.jsonl", tmp_path / "valid.jsonl", tmp_path / "study", base=base, trials=2,
                   progress=False)
    study = optuna.load_study(study_name="joyful", storage=f"sqlite:///{tmp_path / 'study' / 'study.sqlite'}")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    trials = json.loads((tmp_path / "study" / "trials.json").read_text())
    assert summary["trials"] == 2 and all("valid_mae" in t and "valid_weighted_f1" not in t for t in trials)
    assert summary["best_valid_mae"] == min(t["valid_mae"] for t in trials)
    assert trials[summary["best_trial"]]["valid_mae"] == summary["best_valid_mae"]
    # the best value is an MAE: retrain its config and measure it by hand on the predictions
    best = Joyful(JoyfulConfig.from_json(tmp_path / "study" / "best_config.json"))
    best.fit(str(tmp_path / "train.jsonl"), str(tmp_path / "valid.jsonl"), progress=False)
    truth = [lab for line in (tmp_path / "valid.jsonl").read_text().splitlines()
             for lab in (u["label"] for u in json.loads(line)["utterances"])]
    predicted = [row["label"] for row in best.predict(str(tmp_path / "valid.jsonl"))]
    assert summary["best_valid_mae"] == pytest.approx(np.abs(np.subtract(truth, predicted)).mean(), abs=1e-5)


def test_a_csd_directory_is_fingerprinted_by_its_files(tmp_path):
    from joyful.benchmark.inputs import fingerprint

    (tmp_path / "a.csd").write_bytes(b"one")
    (tmp_path / "b.csd").write_bytes(b"two")
    first = fingerprint({"train": f"{tmp_path}#train"})["train"]["sha256"]
    assert fingerprint({"valid": f"{tmp_path}#valid"})["valid"]["sha256"] == first  # one digest for the directory
    (tmp_path / "b.csd").write_bytes(b"three")
    assert fingerprint({"train": f"{tmp_path}#train"})["train"]["sha256"] != first
