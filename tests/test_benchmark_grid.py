"""The benchmark grid: end to end through the CLI, resuming, and the rules of the grid file."""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from conftest import TINY, grid_text
from joyful.api import Joyful
from joyful.benchmark.gridfile import load_grid
from joyful.cli import app
from joyful.config import OFFICIAL_AUGMENTATION, PRESETS
from joyful.errors import JoyfulError
from joyful.synthetic import DEFAULT_LABELS

STUDIES = Path(__file__).resolve().parents[1] / "benchmarks" / "studies"


def benchmark(grid: Path, out: Path) -> Result:
    return CliRunner().invoke(app, ["benchmark", "--config", str(grid), "--out", str(out), "--quiet"])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("grid")
    grid = root / "grid.toml"
    grid.write_text(grid_text())
    result = benchmark(grid, root / "out")
    assert result.exit_code == 0, result.output
    return grid, root / "out", result.output


def test_grid_writes_every_table(finished):
    _, out, output = finished
    assert "skipped 0 finished, 4 to run" in output
    results = read_csv(out / "results.csv")
    assert [r["cell"] for r in results] == ["joyful", "noisy"]
    for row in results:
        assert row["n_seeds"] == "2" and row["seeds"] == "1 2"
        for name in ("accuracy", "weighted_f1", "macro_f1", *(f"f1_{label}" for label in DEFAULT_LABELS)):
            assert 0.0 <= float(row[f"{name}_mean"]) <= 1.0 and float(row[f"{name}_std"]) >= 0.0
    markdown = (out / "results.md").read_text()
    assert "| joyful | 2 |" in markdown and "±" in markdown and "F1 fru" in markdown

    runs = read_csv(out / "runs.csv")
    assert [(r["cell"], r["seed"]) for r in runs] == [("joyful", "1"), ("joyful", "2"), ("noisy", "1"), ("noisy", "2")]
    for r in runs:
        assert json.loads(r["config"])["seed"] == int(r["seed"]) and float(r["wall_seconds"]) > 0
        assert len(r["data_hash_test"]) == 16 and r["data_hash_train"] != r["data_hash_test"]

    (significance,) = read_csv(out / "significance.csv")
    assert significance["variant"] == "noisy" and significance["reference"] == "joyful"
    assert 0.0 <= float(significance["p_adjusted"]) <= 1.0 and significance["shapiro_p_variant"] == ""  # 2 seeds
    (boot,) = read_csv(out / "bootstrap.csv")
    assert float(boot["ci_low"]) <= float(boot["difference"]) <= float(boot["ci_high"])
    assert "Benjamini" in (out / "significance.md").read_text() and "noisy" in (out / "bootstrap.md").read_text()
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("model"))  # atomic writes; no models kept


def test_result_json_holds_what_the_tables_and_tests_need(finished):
    _, out, _ = finished
    clean = json.loads((out / "runs/joyful/seed-1/result.json").read_text())
    noisy = json.loads((out / "runs/noisy/seed-1/result.json").read_text())
    metrics = clean["metrics"]
    assert set(metrics) >= {"accuracy", "weighted_f1", "macro_f1", "per_class_f1", "confusion_matrix", "n_utterances"}
    assert len(clean["y_true"]) == len(clean["y_pred"]) == metrics["n_utterances"]
    assert set(clean["data_hash"]) == {"train", "valid", "test"} and clean["joyful_version"]
    assert clean["best_epoch"] >= 1 and clean["wall_seconds"] > 0 and clean["config"]["seed"] == 1
    # Edge noise acts at test time only: same config, same training, same test utterances.
    assert noisy["eval_edge_noise"] == 0.5 and clean["eval_edge_noise"] == 0.0
    losses = [[{k: v for k, v in row.items() if k != "seconds"} for row in r["history"]] for r in (clean, noisy)]
    assert noisy["config"] == clean["config"] and losses[0] == losses[1]
    assert noisy["y_true"] == clean["y_true"]


def test_rerun_of_a_finished_grid_trains_nothing(finished, monkeypatch):
    grid, out, _ = finished

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(Joyful, "fit", no_training)
    result = benchmark(grid, out)
    assert result.exit_code == 0, result.output
    assert "skipped 4 finished, 0 to run" in result.output
    assert len(read_csv(out / "runs.csv")) == 4


def test_a_deleted_result_reruns_exactly_that_run(finished, fit_seeds):
    grid, out, _ = finished
    target = out / "runs/noisy/seed-2/result.json"
    before = json.loads(target.read_text())
    target.unlink()
    result = benchmark(grid, out)
    assert result.exit_code == 0, result.output
    assert fit_seeds == [2] and "skipped 3 finished, 1 to run" in result.output
    assert json.loads(target.read_text())["metrics"] == before["metrics"]  # same seed, same result on CPU


def test_an_edited_grid_refuses_to_mix_old_runs(finished, tmp_path, monkeypatch):
    _, out, _ = finished
    edited = tmp_path / "edited.toml"
    edited.write_text(grid_text(epochs=3))
    monkeypatch.setattr(Joyful, "fit", lambda *a, **k: pytest.fail("trained despite a mismatch"))
    result = benchmark(edited, out)
    assert result.exit_code == 2
    assert "differs from the grid file in epochs, patience" in result.output


def test_an_interrupted_grid_keeps_its_finished_runs(tmp_path, monkeypatch):
    grid = write(tmp_path / "grid.toml", grid_text(epochs=1, keep_models=True))
    original = Joyful.fit
    calls = []

    def interrupted_on_the_third_run(self, *args, **kwargs):
        calls.append((self.config.seed, kwargs.get("out_dir")))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Joyful, "fit", interrupted_on_the_third_run)
    assert benchmark(grid, tmp_path / "out").exit_code == 130
    finished = sorted(p.parent.relative_to(tmp_path / "out/runs") for p in (tmp_path / "out").rglob("result.json"))
    assert finished == [Path("joyful/seed-1"), Path("noisy/seed-1")]  # seed by seed: a first pass over every cell
    assert (tmp_path / "out/runs/joyful/seed-1/model/model.pt").exists()  # keep_models = true
    result = benchmark(grid, tmp_path / "out")
    assert result.exit_code == 0 and "skipped 2 finished, 2 to run" in result.output and len(calls) == 5
    assert calls[-1] == (2, tmp_path / "out/runs/noisy/seed-2/model")


# ---------------------------------------------------------------- the grid file


def test_cells_are_the_cross_product_with_layered_fields(tmp_path):
    (tmp_path / "d").mkdir()
    grid = load_grid(write(tmp_path / "g.toml", """
        seeds = [3]
        presets = ["default", "cogmen"]
        modalities = ["t", "at"]
        [data]
        train = "d/train.jsonl"
        valid = "d/valid.jsonl"
        [base]
        window_past = 3
        fusion = "joint"
        [ablations]
        near = { window_past = 1, eval_edge_noise = 0.2 }
        official = { official_augmentation = true, edge_perturb_ratio = 0.3 }
    """))
    names = [c.name for c in grid.cells]
    assert names == [f"{p}-{m}-{a}" for p in ("default", "cogmen") for m in ("t", "at") for a in ("near", "official")]
    cells = {c.name: c for c in grid.cells}
    near = cells["cogmen-at-near"].config(3)
    assert (near.window_past, near.modalities, near.fusion, near.use_gcl, near.seed) == (1, "at", "concat", False, 3)
    assert cells["cogmen-at-near"].eval_edge_noise == 0.2 and cells["default-t-official"].eval_edge_noise == 0.0
    official = cells["default-t-official"].config(3)
    assert official.window_past == 3 and official.edge_perturb_ratio == 0.3
    assert official.view2 == OFFICIAL_AUGMENTATION["view2"]
    assert official.feature_mask_ratio == OFFICIAL_AUGMENTATION["feature_mask_ratio"]
    assert grid.data.paths["train"] == str(tmp_path / "d" / "train.jsonl")
    assert grid.data.paths["test"] == grid.data.paths["valid"]  # test defaults to valid


def test_json_grid_with_no_varying_axis_names_its_cell_after_the_preset(tmp_path):
    grid = load_grid(write(tmp_path / "g.json", json.dumps({
        "seeds": [1, 2], "presets": ["mlp"], "reference": "mlp",
        "data": {"train": "/x/a.pkl#train", "valid": "/x/a.pkl#dev", "test": "/x/a.pkl#test"},
    })))
    assert [c.name for c in grid.cells] == ["mlp"] and grid.reference == "mlp"
    assert grid.data.paths == {"train": "/x/a.pkl#train", "valid": "/x/a.pkl#dev", "test": "/x/a.pkl#test"}
    assert grid.default_out_dir() == tmp_path / "g.results"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seeds = [1]\nbogus = 1", "unknown key(s) bogus"),
        ("seeds = []", "'seeds' must be"),
        ("seeds = [1]\nreference = 'nope'", "reference 'nope' is not a cell"),
        ("seeds = [1]\npresets = ['nope']", "unknown preset 'nope'"),
        ("seeds = [1]\n[base]\nseed = 4", "'seed' is set by the grid's 'seeds'"),
        ("seeds = [1]\n[ablations]\nbad = { not_a_field = 1 }", "cell 'bad': unknown config field(s): not_a_field"),
        ("seeds = [1]\n[ablations]\nbad = { window_past = -3 }", "cell 'bad': config field 'window_past'"),
        ("seeds = [1]\n[ablations]\n'w/o gcl' = { use_gcl = false }", "cell name 'w/o gcl'"),
        ("seeds = [1]\n[ablations]\nx = { eval_edge_noise = 2.0 }", "eval_edge_noise must be a number in [0, 1]"),
    ],
)
def test_grid_file_mistakes_fail_before_any_training(tmp_path, text, message):
    path = write(tmp_path / "g.toml", text + "\n[data.synthetic]\nn_train = 2\nn_valid = 2\n")
    with pytest.raises(JoyfulError) as info:
        load_grid(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_missing_data_is_reported_before_training(tmp_path):
    write(tmp_path / "g.toml", "seeds = [1]\n[data]\ntrain = 'missing.jsonl'\nvalid = 'missing.jsonl'\n")
    result = benchmark(tmp_path / "g.toml", tmp_path / "out")
    assert result.exit_code == 2 and "cannot read the train data" in result.output


def test_ready_studies_load():
    studies = sorted(STUDIES.glob("*.toml"))
    assert {p.stem for p in studies} >= {
        "modality", "gcl_mf", "window", "augmentation", "depth", "noisy_edges", "baselines", "ci_smoke",
        "cv_iemocap6", "cv_iemocap4", "cv_meld",
    }
    for path in studies:
        if path.stem.startswith("cv_"):
            continue  # cross-validation studies: below
        grid = load_grid(path)
        assert grid.reference in [c.name for c in grid.cells], path
        if path.stem != "ci_smoke":
            assert grid.seeds == [1, 2, 3, 4, 5] and grid.data.paths["train"].endswith("iemocap-text/train.jsonl")
    window = {c.name: c.config(1) for c in load_grid(STUDIES / "window.toml").cells}
    assert window["w6"].window_past == 6 and window["all"].window_future == -1 and len(window) == 11
    noisy = {c.name: c.eval_edge_noise for c in load_grid(STUDIES / "noisy_edges.toml").cells}
    assert noisy == {"iemocap6-clean": 0.0, "iemocap6-noisy": 0.2, "cogmen-clean": 0.0, "cogmen-noisy": 0.2}


@pytest.mark.parametrize(("study", "scheme", "data"), [
    ("cv_iemocap6", "session", "iemocap-text/train.jsonl"),
    ("cv_iemocap4", "session", "iemocap-text/train.jsonl"),
    ("cv_meld", 5, "meld/train_sent_emo.csv"),
])
def test_the_cross_validation_studies_pool_train_and_valid_against_context_lr(study, scheme, data):
    path = STUDIES / f"{study}.toml"
    raw = tomllib.loads(path.read_text())
    assert raw["cv"] == scheme and raw["reference"] == "context-lr" and raw["seeds"] == [1, 2, 3]
    assert "test" not in raw["data"] and {"cogmen", "mlp", "context-lr"} <= set(raw["presets"])
    grid = load_grid(path)
    assert grid.cv is not None and grid.cv.scheme == scheme and set(grid.data.paths) == {"train", "valid"}
    assert grid.data.paths["train"].endswith(data)
    assert [c.name for c in grid.cells] == raw["presets"]
