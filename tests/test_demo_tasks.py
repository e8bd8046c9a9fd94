"""`joyful demo --task multilabel|regression` end to end, through a real subprocess.

The printed scores are checked against the files the demo wrote: its predictions scored
against the gold labels of its test data, and the constant baseline recomputed from its
training data.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
from sklearn.metrics import f1_score

EMOTIONS = ("happy", "sad", "anger", "surprise", "disgust", "fear")


def demo(out, task: str) -> str:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "joyful.cli", "demo", "--task", task, "--out", str(out), "--epochs", "3", "--quiet"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def gold(path) -> dict[tuple[str, int], object]:
    return {(d["dialogue"], i): u["label"] for d in read_jsonl(path) for i, u in enumerate(d["utterances"])}


def test_demo_regression(tmp_path):
    out = demo(tmp_path, "regression")
    rows = read_jsonl(tmp_path / "predictions.jsonl")
    truth = gold(tmp_path / "data" / "test.jsonl")
    assert {(r["dialogue"], r["index"]) for r in rows} == set(truth)
    assert all(r["speaker"] == r["dialogue"] for r in rows)  # one speaker per video
    scores = np.array([r["label"] for r in rows], dtype=float)
    assert np.all((scores >= -3) & (scores <= 3))
    errors = np.abs(scores - np.array([truth[r["dialogue"], r["index"]] for r in rows]))
    train = [lab for lab in gold(tmp_path / "data" / "train.jsonl").values()]
    constant_mae = np.abs(np.array(list(truth.values())) - np.median(train)).mean()
    printed = re.search(r"test: MAE ([\d.]+) \(constant [-+][\d.]+, the training median: MAE ([\d.]+)\), corr", out)
    assert printed, out
    # printed to 3 decimals; the predictions file holds scores rounded to 6, hence the tolerance
    assert abs(float(printed[1]) - errors.mean()) < 6e-4 and abs(float(printed[2]) - constant_mae) < 5e-4 + 1e-9
    assert "acc2" in out and "acc7" in out and "feature widths t 768, a 74, v 35" in out


def test_demo_multilabel(tmp_path):
    out = demo(tmp_path, "multilabel")
    rows = read_jsonl(tmp_path / "predictions.jsonl")
    truth = gold(tmp_path / "data" / "test.jsonl")
    assert {(r["dialogue"], r["index"]) for r in rows} == set(truth)
    for r in rows:
        assert set(r["probabilities"]) == set(EMOTIONS) and set(r["label"]) <= set(EMOTIONS)
    y_true = np.array([[e in truth[r["dialogue"], r["index"]] for e in EMOTIONS] for r in rows], dtype=int)
    y_pred = np.array([[e in r["label"] for e in EMOTIONS] for r in rows], dtype=int)
    printed = dict(re.findall(r"(\w+) ([\d.]+)", out.split("per-emotion F1:")[1].splitlines()[0]))
    assert set(printed) == set(EMOTIONS), out
    for k, e in enumerate(EMOTIONS):
        assert float(printed[e]) == round(f1_score(y_true[:, k], y_pred[:, k], zero_division=0), 2)
    weighted = re.search(r"weighted F1 over emotions ([\d.]+) \(every emotion always predicted: ([\d.]+)\)", out)
    assert weighted, out
    assert float(weighted[1]) == round(f1_score(y_true, y_pred, average="weighted", zero_division=0), 3)
    assert float(weighted[2]) == round(f1_score(y_true, np.ones_like(y_true), average="weighted"), 3)
