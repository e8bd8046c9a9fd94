"""Cross-validation in the benchmark grid and in `joyful tune`: folds, tables, paired tests, parallel runs."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from click.testing import Result
from scipy import stats
from typer.testing import CliRunner

from conftest import TINY
from joyful.api import Joyful
from joyful.benchmark.ensembles import ensemble_metrics
from joyful.benchmark.folds import CVSpec, make_folds, materialise_folds, session_of
from joyful.benchmark.gridfile import Cell, load_grid
from joyful.benchmark.significance import write_significance
from joyful.cli import app
from joyful.errors import JoyfulError
from joyful.io.jsonl import write_jsonl
from joyful.synthetic import generate_dialogues

WIDTHS = {"t": 12, "a": 6, "v": 8}
SESSIONS = ("Ses01", "Ses02", "Ses03")
CELLS = ("default", "mlp")
SEEDS = (1, 2)


def grid_text(data: Path, *, epochs: int = 2, fraction: float = 0.25, seeds: tuple[int, ...] = SEEDS) -> str:
    """Joyful against the context-free MLP, leave-one-session-out over three sessions, two seeds."""
    base = "\n".join(f"{k} = {v!r}" for k, v in {**TINY, "epochs": epochs, "patience": epochs}.items())
    return f"""
seeds = {list(seeds)}
presets = ["default", "mlp"]
reference = "default"
threads = 1
cv = "session"
cv_valid_fraction = {fraction}

[data]
train = "{data / 'train.jsonl'}"
valid = "{data / 'valid.jsonl'}"

[base]
modalities = "atv"
{base}
"""


def benchmark(grid: Path, out: Path, *extra: str) -> Result:
    return CliRunner().invoke(app, ["benchmark", "--config", str(grid), "--out", str(out), "--quiet", *extra])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def results(out: Path) -> dict[tuple[str, int, int], dict]:
    """(cell, fold, seed) → result.json, read straight from the run directories."""
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*/fold-*/seed-*/result.json")]
    return {(r["cell"], r["fold"], r["seed"]): r for r in records}


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> Path:
    """Three IEMOCAP-like sessions of four short dialogues: three in train.jsonl, one in valid.jsonl each."""
    root = tmp_path_factory.mktemp("sessions")
    train, valid = [], []
    for k, session in enumerate(SESSIONS):
        for gender, seed in (("F", 10 * k), ("M", 10 * k + 1)):
            ds = generate_dialogues(2, widths=WIDTHS, seed=seed, signal=2.5, min_length=4, max_length=10,
                                    speakers=(2, 2), prefix=f"{session}{gender}_impro")
            train += ds.dialogues if gender == "F" else ds.dialogues[:1]
            valid += [] if gender == "F" else ds.dialogues[1:]
    write_jsonl(train, root / "train.jsonl")
    write_jsonl(valid, root / "valid.jsonl")
    return root


@pytest.fixture(scope="module")
def finished(sessions, tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("cv")
    grid = root / "grid.toml"
    grid.write_text(grid_text(sessions))
    result = benchmark(grid, root / "out")
    assert result.exit_code == 0, result.output
    return grid, root / "out", result.output


# ---------------------------------------------------------------- folds


def test_session_folds_hold_out_one_session_and_validate_inside_training(finished):
    _, out, output = finished
    assert "12 runs (2 cells × 3 folds × 2 seeds): skipped 0 finished, 12 to run" in output
    folds = json.loads((out / "folds/folds.json").read_text())
    assert folds["cv"] == "session" and folds["cv_valid_fraction"] == 0.25
    every = {d for f in folds["folds"] for d in f["test"]}
    assert len(every) == 12 and sum(len(f["test"]) for f in folds["folds"]) == 12  # disjoint, cover all
    for fold, session in zip(folds["folds"], SESSIONS, strict=True):
        assert fold["held_out"] == session and {session_of(d) for d in fold["test"]} == {int(session[3:])}
        train, valid, test = set(fold["train"]), set(fold["valid"]), set(fold["test"])
        assert train | valid == every - test and not (train & valid) and not (valid & test)
        assert len(valid) == 2  # round(0.25 × 8)
        for role, ids in (("train", train), ("valid", valid), ("test", test)):  # the files hold exactly that
            lines = (out / f"folds/fold-{fold['fold']}/{role}.jsonl").read_text().splitlines()
            assert {json.loads(line)["dialogue"] for line in lines} == ids
    rows = read_csv(out / "folds/folds.csv")
    assert len(rows) == 12 and {r["source"] for r in rows} == {"train", "valid"}
    assert all(r["dialogue"].startswith(SESSIONS[int(r["test_fold"]) - 1]) for r in rows)


def test_folds_do_not_depend_on_the_seed(finished, sessions, tmp_path):
    _, out, _ = finished
    by_fold: dict[int, set] = {}
    for (cell, fold, seed), r in results(out).items():
        by_fold.setdefault(fold, set()).add(json.dumps(r["inputs"], sort_keys=True))
    assert sorted(by_fold) == [1, 2, 3] and all(len(v) == 1 for v in by_fold.values())  # same files, every cell/seed
    other = load_grid(_write(tmp_path / "g.toml", grid_text(sessions, seeds=(7,))))
    again = materialise_folds(other.cv, other.data.paths, tmp_path / "folds")
    for fd in again:
        for role, path in fd.paths.items():
            assert Path(path).read_bytes() == (out / f"folds/fold-{fd.fold.index}/{role}.jsonl").read_bytes()


def test_k_folds_are_a_seeded_partition_by_dialogue():
    ids = [f"meld-{i:03d}" for i in range(10)]
    folds = make_folds(list(reversed(ids)), CVSpec(3, valid_fraction=0.2, seed=5))
    assert sorted(len(f.test) for f in folds) == [3, 3, 4]
    assert sorted(d for f in folds for d in f.test) == ids
    for f in folds:
        assert set(f.train) | set(f.valid) == set(ids) - set(f.test) and not set(f.valid) & set(f.test)
        assert len(f.valid) == 1 and f.held_out is None  # round(0.2 × 6 or 7) = 1
    assert make_folds(ids, CVSpec(3, 0.2, 5)) == folds  # the input order does not matter
    assert make_folds(ids, CVSpec(3, 0.2, 6)) != folds  # cv_seed chooses the shuffle


def test_ids_numbered_per_file_are_told_apart_when_pooled_and_a_dialogue_given_twice_is_refused():
    """MELD numbers dialogues from 0 in train and in dev: pooled, "0" of each file must stay two dialogues."""
    from joyful.benchmark.folds import origins, pool

    train = generate_dialogues(3, widths={"t": 4}, seed=1, prefix="")
    dev = generate_dialogues(2, widths={"t": 4}, seed=2, prefix="")
    assert {d.id for d in dev} <= {d.id for d in train}  # the shared ids, as in MELD's CSVs
    pooled = pool(train, dev)
    assert [d.id for d in pooled] == [f"train:{d.id}" for d in train] + [f"valid:{d.id}" for d in dev]
    assert [d.speakers for d in pooled] == [d.speakers for d in (*train, *dev)]
    assert origins(train, dev, pooled) == {**{f"train:{d.id}": "train" for d in train},
                                           **{f"valid:{d.id}": "valid" for d in dev}}
    assert len({i for f in make_folds([d.id for d in pooled], CVSpec(5)) for i in f.test}) == 5
    unique = generate_dialogues(2, widths={"t": 4}, seed=2, prefix="dev-")
    assert [d.id for d in pool(train, unique)] == [d.id for d in (*train, *unique)]  # IEMOCAP-like ids stay
    with pytest.raises(JoyfulError, match="in both"):
        pool(train, generate_dialogues(1, widths={"t": 4}, seed=1, prefix=""))  # train's first dialogue again


def test_session_cv_names_a_dialogue_without_a_session(tmp_path):
    grid = _write(tmp_path / "g.toml", 'seeds = [1]\ncv = "session"\n[data.synthetic]\nn_train = 4\nn_valid = 2\n')
    result = benchmark(grid, tmp_path / "out")
    assert result.exit_code == 2 and "'train-0000'" in result.output and "cv = K" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('cv = "session"\n[data]\ntrain = "a"\nvalid = "b"\ntest = "c"', "with 'cv' the folds are cut from train"),
        ("cv = 3\n[data.synthetic]\nn_train = 4\nn_valid = 2\nn_test = 2", "'n_test' would"),
        ("cv = 1\n[data.synthetic]\nn_train = 4\nn_valid = 2", "number of folds ≥ 2"),
        ("cv_valid_fraction = 0.2\n[data.synthetic]\nn_train = 4\nn_valid = 2", "apply only with 'cv'"),
        ("cv = 2\ncv_valid_fraction = 1.5\n[data.synthetic]\nn_train = 4\nn_valid = 2", "strictly between 0 and 1"),
    ],
)
def test_cv_mistakes_fail_when_the_grid_is_read(tmp_path, text, message):
    with pytest.raises(JoyfulError, match=message.replace("(", r"\(")):
        load_grid(_write(tmp_path / "g.toml", "seeds = [1]\n" + text + "\n"))


# ---------------------------------------------------------------- tables and tests


def test_tables_are_mean_and_std_over_folds_and_seeds(finished):
    _, out, _ = finished
    runs = results(out)
    assert set(runs) == {(c, f, s) for c in CELLS for f in (1, 2, 3) for s in SEEDS}
    summary = {r["cell"]: r for r in read_csv(out / "results.csv")}
    for cell in CELLS:
        values = [runs[cell, f, s]["metrics"]["weighted_f1"] for f in (1, 2, 3) for s in SEEDS]
        row = summary[cell]
        assert (row["n_runs"], row["n_folds"], row["n_seeds"], row["folds"]) == ("6", "3", "2", "1 2 3")
        assert float(row["weighted_f1_mean"]) == pytest.approx(statistics.mean(values), abs=1e-12)
        assert float(row["weighted_f1_std"]) == pytest.approx(statistics.stdev(values), abs=1e-12)
    by_fold = read_csv(out / "results_by_fold.csv")
    assert len(by_fold) == 6
    for row in by_fold:
        values = [runs[row["cell"], int(row["fold"]), s]["metrics"]["accuracy"] for s in SEEDS]
        assert row["held_out"] == SESSIONS[int(row["fold"]) - 1]
        assert float(row["accuracy_mean"]) == pytest.approx(statistics.mean(values), abs=1e-12)
    assert "fold 2 (Ses02)" in (out / "results_by_fold.md").read_text()
    assert "3 folds × 2 seeds" in (out / "results.md").read_text()
    assert [(r["cell"], r["fold"], r["seed"]) for r in read_csv(out / "runs.csv")][:3] == [
        ("default", "1", "1"), ("default", "1", "2"), ("default", "2", "1")]
    (sig,) = read_csv(out / "significance.csv")
    pairs = [(runs["mlp", f, s]["metrics"]["weighted_f1"], runs["default", f, s]["metrics"]["weighted_f1"])
             for f in (1, 2, 3) for s in SEEDS]
    expected = stats.ttest_rel(*zip(*pairs, strict=True))
    assert sig["variant"] == "mlp" and sig["n_pairs"] == "6"
    assert float(sig["p_t"]) == pytest.approx(expected.pvalue) and float(sig["p_t_BH"]) == pytest.approx(expected.pvalue)
    assert float(sig["mean_diff"]) == pytest.approx(statistics.mean(a - b for a, b in pairs))
    assert not (out / "bootstrap.csv").exists()


def fake(cell: str, fold: int, seed: int, wf1: float) -> dict:
    return {"cell": cell, "fold": fold, "seed": seed, "metrics": {"weighted_f1": wf1}}


def test_paired_tests_match_hand_computed_values(tmp_path):
    # (fold, seed) pairs: folds 1..5 with seed 1; reference scores 50..54 (in points, as fractions).
    keys = [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]
    reference = [0.50, 0.51, 0.52, 0.53, 0.54]
    # better: differences d = [1, 2, 3, 4, 5] points. mean 3, sample sd √2.5, t = 3 / (√2.5 / √5) = 3√2 = 4.2426;
    #   df 4: F(t) = 1/2 + t(t² + 6) / (2 (t² + 4)^1.5) = 0.993382, p_t = 2 (1 − F) = 0.013236.
    #   Wilcoxon: all ranks positive, W = min(W+, W−) = 0; exact p = 2 · 1/2⁵ = 0.0625.
    # mixed: d = [−1, 2, −3, 4, 5]. mean 1.4, sd √11.3, t = 1.4 / √(11.3 / 5) = 0.931266, p_t = 0.404433.
    #   Wilcoxon: W+ = 2 + 4 + 5 = 11, W− = 1 + 3 = 4, W = 4; subsets of {1..5} summing to ≤ 4:
    #   {}, {1}, {2}, {3}, {4}, {1,2}, {1,3} → 7, p = 2 · 7/32 = 0.4375.
    # same: d = 0 everywhere. t undefined (None); Wilcoxon W = 0, p = 1.
    # BH over t (same has none): [0.013236, 0.404433] → [0.026471, 0.404433].
    # BH over W: [0.0625, 0.4375, 1] (better, mixed, same) → [0.1875, 0.65625, 1].
    diffs = {"better": [1, 2, 3, 4, 5], "mixed": [-1, 2, -3, 4, 5], "same": [0, 0, 0, 0, 0]}
    records = [fake("ref", f, s, r) for (f, s), r in zip(keys, reference, strict=True)]
    for name, d in diffs.items():
        records += [fake(name, f, s, r + x / 100) for (f, s), r, x in zip(keys, reference, d, strict=True)]
    cells = [Cell(n, "default", None, None, {}, 0.0) for n in ("ref", *diffs)]
    write_significance(list(reversed(records)), cells, "ref", tmp_path)  # any order: pairs are by (fold, seed)
    rows = {r["variant"]: r for r in read_csv(tmp_path / "significance.csv")}

    def num(name: str, column: str) -> float:
        return float(rows[name][column])

    assert num("better", "t") == pytest.approx(4.242641, rel=1e-6) and num("better", "p_t") == pytest.approx(0.013236, abs=1e-6)
    assert num("better", "W") == 0 and num("better", "p_w") == pytest.approx(0.0625)
    assert num("mixed", "t") == pytest.approx(0.931266, rel=1e-5) and num("mixed", "p_t") == pytest.approx(0.404433, abs=1e-5)
    assert num("mixed", "W") == 4 and num("mixed", "p_w") == pytest.approx(0.4375)
    assert rows["same"]["t"] == rows["same"]["p_t"] == rows["same"]["p_t_BH"] == ""
    assert num("same", "W") == 0 and num("same", "p_w") == 1
    assert num("better", "p_t_BH") == pytest.approx(0.026471, abs=1e-6) and num("mixed", "p_t_BH") == pytest.approx(0.404433, abs=1e-5)
    assert [num(n, "p_w_BH") for n in diffs] == pytest.approx([0.1875, 0.65625, 1.0])
    assert num("better", "mean_diff") == pytest.approx(0.03) and all(rows[n]["n_pairs"] == "5" for n in diffs)
    assert "Wilcoxon" in (tmp_path / "significance.md").read_text()


def test_seed_ensembles_from_the_runs_score_what_an_ensemble_model_scores(finished):
    """The table averages the seeds' stored outputs; a real ``ensemble = 2`` model trained on the fold must agree."""
    grid, out, _ = finished
    rows = {r["cell"]: r for r in read_csv(out / "ensembles.csv")}
    assert set(rows) == set(CELLS) and rows["default"]["seeds"] == "1 2"
    cell = next(c for c in load_grid(grid).cells if c.name == "default")
    fold = out / "folds" / "fold-2"
    clf = Joyful(cell.config(1).replace(ensemble=2)).fit(fold / "train.jsonl", fold / "valid.jsonl", progress=False)
    assert float(rows["default"]["weighted_f1_fold_2"]) == pytest.approx(clf.evaluate(fold / "test.jsonl")["weighted_f1"])
    runs = results(out)
    assert float(rows["mlp"]["weighted_f1_single_mean"]) == pytest.approx(
        statistics.mean(runs["mlp", f, s]["metrics"]["weighted_f1"] for f in (1, 2, 3) for s in SEEDS))
    folds = [float(rows["default"][f"weighted_f1_fold_{f}"]) for f in (1, 2, 3)]
    assert float(rows["default"]["weighted_f1_mean"]) == pytest.approx(statistics.mean(folds))
    assert rows["mlp"]["p_t"] != "" and rows["default"]["p_t"] == ""  # the reference is not tested against itself


def test_ensemble_metrics_average_probabilities_before_the_decision():
    # Mean of the two members: [.4 .6], [.45 .55], [.55 .45] → predictions 1, 1, 0 against truth 0, 1, 1.
    # Class 0: no true positive → F1 0 (support 1); class 1: tp 1, precision 1/2, recall 1/2 → F1 1/2 (support 2).
    # Weighted F1 = (0·1 + 0.5·2) / 3 = 1/3; accuracy 1/3. Majority of the members' own votes would differ on row 0.
    a = {"cell": "c", "fold": 1, "seed": 1, "y_true": [0, 1, 1], "metrics": {"labels": ["x", "y"]},
         "y_uncalibrated": [[0.6, 0.4], [0.45, 0.55], [0.9, 0.1]]}
    b = {**a, "seed": 2, "y_uncalibrated": [[0.2, 0.8], [0.45, 0.55], [0.2, 0.8]]}
    metrics = ensemble_metrics([a, b], "classification")
    assert metrics["weighted_f1"] == pytest.approx(1 / 3) and metrics["accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(JoyfulError, match="seed 2 scored other test utterances than seed 1"):
        ensemble_metrics([a, {**b, "y_true": [0, 1, 0]}], "classification")


# ---------------------------------------------------------------- resuming and parallel runs


def test_rerun_skips_finished_runs_and_retrains_only_a_deleted_one(finished, fit_seeds):
    grid, out, _ = finished
    target = out / "runs/mlp/fold-2/seed-1/result.json"
    before = json.loads(target.read_text())
    target.unlink()
    result = benchmark(grid, out)
    assert result.exit_code == 0, result.output
    assert "skipped 11 finished, 1 to run" in result.output and fit_seeds == [1]
    assert json.loads(target.read_text())["metrics"] == before["metrics"]


def test_an_edited_grid_is_refused_per_fold(finished, sessions, tmp_path, monkeypatch):
    _, out, _ = finished
    monkeypatch.setattr(Joyful, "fit", lambda *a, **k: pytest.fail("trained despite a mismatch"))
    result = benchmark(_write(tmp_path / "epochs.toml", grid_text(sessions, epochs=3)), out)
    assert result.exit_code == 2 and "fold-1/seed-1/result.json" in result.output
    assert "differs from the grid file in epochs, patience" in result.output
    result = benchmark(_write(tmp_path / "slice.toml", grid_text(sessions, fraction=0.5)), out)
    assert result.exit_code == 2 and "another cv_valid_fraction" in result.output
    assert json.loads((out / "folds/folds.json").read_text())["cv_valid_fraction"] == 0.25  # folds left alone


def test_parallel_jobs_give_the_same_results_and_keep_them_when_one_fails(finished, tmp_path):
    grid, out, _ = finished
    blocker = tmp_path / "parallel/runs/mlp/fold-3"  # a file where a run directory goes: that run cannot finish
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")
    result = benchmark(grid, tmp_path / "parallel", "--jobs", "2")
    assert result.exit_code == 2
    assert "2 of 12 runs failed (mlp fold 3 seed" in result.output and "NotADirectoryError" in result.output
    assert len(results(tmp_path / "parallel")) == 10  # the others are finished and kept
    blocker.unlink()
    result = benchmark(grid, tmp_path / "parallel")  # the failed ones, in this process
    assert result.exit_code == 0 and "skipped 10 finished, 2 to run" in result.output
    serial, parallel = results(out), results(tmp_path / "parallel")
    assert set(parallel) == set(serial)
    for key, record in serial.items():
        assert parallel[key]["metrics"] == record["metrics"], key
        assert parallel[key]["best_epoch"] == record["best_epoch"] and parallel[key]["fold"] == key[1]
    assert (tmp_path / "parallel/results.csv").read_text() == (out / "results.csv").read_text()


# ---------------------------------------------------------------- tune


def test_tune_scores_trials_by_cross_validation(sessions, tmp_path):
    pytest.importorskip("optuna")
    config = _write(tmp_path / "tiny.json", json.dumps({**TINY, "epochs": 2, "patience": 2}))
    out = tmp_path / "study"

    def run(*extra: str) -> Result:
        return CliRunner().invoke(app, [
            "tune", "--train", str(sessions / "train.jsonl"), "--valid", str(sessions / "valid.jsonl"),
            "--out", str(out), "--config", str(config), "--quiet", *extra,
        ])

    first = run("--trials", "2", "--cv", "session", "--cv-valid-fraction", "0.25", "--jobs", "2")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output.strip().splitlines()[-1])
    assert summary["trials"] == 2 and summary["cv"] == "session" and len(summary["fold_weighted_f1"]) == 3
    assert summary["best_cv_weighted_f1"] == pytest.approx(statistics.mean(summary["fold_weighted_f1"]))
    trials = json.loads((out / "trials.json").read_text())
    assert [len(t["fold_weighted_f1"]) for t in trials] == [3, 3]
    assert all(t["cv_weighted_f1"] == pytest.approx(statistics.mean(t["fold_weighted_f1"])) for t in trials)
    assert (out / "best_config.json").exists() and json.loads((out / "cv.json").read_text())["cv"] == "session"
    assert [f["held_out"] for f in json.loads((out / "folds.json").read_text())["folds"]] == list(SESSIONS)
    second = run("--trials", "1", "--cv", "session", "--cv-valid-fraction", "0.25")  # resumes, one fold at a time
    assert second.exit_code == 0, second.output
    assert json.loads(second.output.strip().splitlines()[-1])["trials"] == 3
    for extra in (("--cv", "2"), ("--cv", "session"), ()):  # another K, another slice, no CV at all
        refused = run("--trials", "1", *extra)
        assert refused.exit_code == 2 and "holds a study made with cv = session" in refused.output


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
