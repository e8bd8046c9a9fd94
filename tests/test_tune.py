"""Hyperparameter search: runs on validation only, resumes, and writes a config `joyful train` takes."""

from __future__ import annotations

import json

import pytest

from conftest import TINY
from joyful.benchmark.tune import tune
from joyful.config import JoyfulConfig
from joyful.errors import JoyfulError

pytest.importorskip("optuna")


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
