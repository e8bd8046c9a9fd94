"""Hyperparameter search: runs on validation only, resumes, and writes a config `joyful train` takes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import TINY
from joyful.benchmark.tune import tune
from joyful.config import JoyfulConfig
from joyful.errors import JoyfulError

optuna = pytest.importorskip("optuna")


def test_search_writes_a_usable_best_config_and_resumes(data_dir, tmp_path):
    base = JoyfulConfig(**{**TINY, "epochs": 2})
    first = tune(data_dir / "train.jsonl", data_dir / "valid.jsonl", tmp_path, base=base, trials=2, progress=False)
    assert first["trials"] == 2 and 0 <= first["best_valid_weighted_f1"] <= 1
    best = JoyfulConfig.from_json(tmp_path / "best_config.json")
    assert best.window_past == best.window_future == first["params"]["window"]
    assert best.epochs == 2 and best.specific_dim == TINY["specific_dim"]  # the base is kept
    second = tune(data_dir / "train.jsonl", data_dir / "valid.jsonl", tmp_path, base=base, trials=1, progress=False)
    assert second["trials"] == 3
    assert len(json.loads((tmp_path / "trials.json").read_text())) == 3
    with pytest.raises(JoyfulError, match="another base config"):
        tune(data_dir / "train.jsonl", data_dir / "valid.jsonl", tmp_path, base=base.replace(seed=1), trials=1, progress=False)


def test_parallel_folds_need_cross_validation(data_dir, tmp_path):
    with pytest.raises(JoyfulError, match="needs --cv"):
        tune(data_dir / "train.jsonl", data_dir / "valid.jsonl", tmp_path, base=JoyfulConfig(), trials=1, jobs=2)


def test_two_workers_share_one_study(data_dir, tmp_path):
    """Two `joyful tune` processes on one SQLite study: the trials of both count, the settings must agree."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY, "epochs": 2}))
    storage = f"sqlite:///{tmp_path / 'shared.db'}"

    def worker(name: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "joyful", "tune", "--train", str(data_dir / "train.jsonl"),
             "--valid", str(data_dir / "valid.jsonl"), "--out", str(tmp_path / name), "--config", str(config),
             "--trials", "2", "--storage", storage, "--quiet", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    runs = [worker("a"), worker("b")]
    outputs = [r.communicate(timeout=300) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [err[-1500:] for _, err in outputs]
    study = optuna.load_study(study_name="joyful", storage=storage)
    assert len(study.trials) == 4
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both workers ran trials
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4  # and none twice
    last = max(json.loads(out.strip().splitlines()[-1])["trials"] for out, _ in outputs)
    assert last == 4  # the later worker reports the whole study
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TINY, "epochs": 3}))
    refused = subprocess.run(
        [sys.executable, "-m", "joyful", "tune", "--train", str(data_dir / "train.jsonl"), "--valid",
         str(data_dir / "valid.jsonl"), "--out", str(tmp_path / "c"), "--config", str(other), "--trials", "1",
         "--storage", storage, "--quiet"], capture_output=True, text=True, timeout=300,
    )
    assert refused.returncode == 2 and "holds a study of another base config" in refused.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "joyful", "tune", "--train", str(data_dir / "train.jsonl"), "--valid",
         str(data_dir / "valid.jsonl"), "--out", str(tmp_path / "d"), "--trials", "1",
         "--storage", "postgresql://me:hunter2@127.0.0.1:1/none", "--quiet"], capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode == 2 and "hunter2" not in bad.stderr and "--storage postgresql://me:***@" in bad.stderr


def test_workers_starting_together_on_a_new_database_all_get_in(tmp_path):
    """Six workers opening one new SQLite study at once race to create its tables; none may fail.

    (Before the retry, 5 of 30 such openings failed with "table alembic_version already exists".)
    """
    code = ("import sys, optuna; from joyful.benchmark.tune import _open_storage; "
            "optuna.create_study(study_name='joyful', storage=_open_storage(sys.argv[1], optuna), load_if_exists=True)")
    url = f"sqlite:///{tmp_path / 'new.db'}"
    runs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True) for _ in range(6)]
    errors = [r.communicate(timeout=120)[1] for r in runs]
    assert [r.returncode for r in runs] == [0] * 6, [e[-300:] for e in errors if e]
