"""Issue 13's checks end to end, through the CLI: CMU-MOSI sentiment from `.csd` files, MOSEI emotions from an MMSA pickle.

Sentiment: feature sequences are generated against the intervals of the real CMU-MOSI
labels file (frames inside each opinion segment carry a planted function of its score),
the directory is read as the CMU-SDK layout (roles guessed from the names, standard
folds), and a ``mosi-sentiment`` model must report the regression metrics with an MAE
well under the best constant predictor's.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from csd_fixtures import MOSI_LABELS, read_intervals, write_csd

from joyful.data.label_forms import MOSEI_EMOTIONS

SMALL = {"global_attention_dim": 16, "global_ff": 32, "specific_dim": 32, "n_bases": 8, "gnn_hidden": 32,
         "classifier_hidden": 32, "patience": 8, "batch_size": 4}


def joyful(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "joyful.cli", *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def _mosi_scores() -> dict[str, np.ndarray]:
    with h5py.File(MOSI_LABELS, "r") as f:
        data = f[next(iter(f))]["data"]
        return {vid: data[vid]["features"][()][:, 0].astype(np.float64) for vid in data}


@pytest.fixture(scope="module")
def mosi_dir(tmp_path_factory) -> Path:
    if not MOSI_LABELS.is_file():
        pytest.skip(f"the real CMU-MOSI labels are not here ({MOSI_LABELS})")
    out = tmp_path_factory.mktemp("mosi")
    (out / "CMU_MOSI_Opinion_Labels.csd").symlink_to(MOSI_LABELS)
    rng = np.random.default_rng(0)
    audio_dir, visual_dir = rng.standard_normal(8), rng.standard_normal(6)
    scores = _mosi_scores()
    audio, visual = {}, {}
    for k, (vid, intervals) in enumerate(read_intervals(MOSI_LABELS).items()):
        s = scores[vid]
        # two audio frames per segment, each half of it; one visual frame per segment (weaker signal)
        mid = intervals.mean(1)
        frames = np.concatenate([np.stack([intervals[:, 0], mid], 1), np.stack([mid, intervals[:, 1]], 1)])
        values = np.concatenate([s, s])[:, None] * audio_dir + 0.7 * rng.standard_normal((len(frames), 8))
        audio[vid] = (frames, values.astype(np.float32))
        if k % 10:  # every tenth video has no visual track: that modality is missing there, not an error
            visual[vid] = (intervals, (0.3 * s[:, None] * visual_dir + rng.standard_normal((len(s), 6))).astype(np.float32))
    write_csd(out / "CMU_MOSI_COVAREP.csd", "COVAREP", audio)
    write_csd(out / "CMU_MOSI_Visual_Facet_41.csd", "FACET_4.1", visual)
    return out


def test_mosi_sentiment_from_csd_files(mosi_dir, tmp_path):
    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL))
    model = tmp_path / "model"
    joyful("train", "--train", f"{mosi_dir}#train", "--valid", f"{mosi_dir}#valid", "--out", str(model),
           "--preset", "mosi-sentiment", "--modalities", "av", "--epochs", "20", "--config", str(config), "--quiet")
    meta = json.loads((model / "meta.json").read_text())
    assert meta["task"] == "regression" and meta["config"]["beta"] == 0.1
    plot = tmp_path / "scatter.png"
    metrics = json.loads(joyful("evaluate", "--model", str(model), "--data", f"{mosi_dir}#test", "--json",
                                "--plot", str(plot)).stdout)
    assert plot.read_bytes()[:4] == b"\x89PNG" and "y_pred" not in metrics
    assert {"mae", "corr", "acc2", "f1", "acc7", "acc2_non0", "f1_non0", "acc5"} <= metrics.keys()
    # the standard CMU-MOSI test fold: 31 videos, 686 segments
    assert metrics["n_utterances"] == 686
    from joyful.io.csd_folds import STANDARD_FOLDS

    scores = _mosi_scores()
    fold = next(f for f in STANDARD_FOLDS.values() if "test" in f and set(f["test"]) <= scores.keys())
    train = np.concatenate([scores[v] for v in fold["train"]])
    test = np.concatenate([scores[v] for v in fold["test"]])
    constant = np.abs(test - np.median(train)).mean()
    assert metrics["mae"] < 0.6 * constant, (metrics["mae"], constant)
    assert metrics["corr"] > 0.6 and metrics["acc2"] > 0.75


def _mmsa_split(rng: np.random.Generator, n_videos: int, proj: dict[str, np.ndarray]) -> dict:
    ids, audio, vision, text, a_len, v_len, emotions, sentiment = [], [], [], [], [], [], [], []
    for v in range(n_videos):
        mood = rng.uniform(0, 2, 6) * (rng.random(6) < 0.4)
        for c in range(int(rng.integers(3, 8))):
            score = np.where(rng.random(6) < 0.8, mood, rng.uniform(0, 2, 6) * (rng.random(6) < 0.4))
            ids.append(f"vid{v}$_${c}")
            steps = int(rng.integers(2, 10))
            frames = np.zeros((10, 74), np.float32)
            frames[:steps] = score @ proj["a"] + 0.5 * rng.standard_normal((steps, 74))
            audio.append(frames)
            a_len.append(steps)
            frames = np.zeros((10, 35), np.float32)
            frames[:steps] = score @ proj["v"] + rng.standard_normal((steps, 35))
            vision.append(frames)
            v_len.append(steps)
            words = np.zeros((10, 16), np.float32)
            words[:4] = score @ proj["t"] + 0.5 * rng.standard_normal((4, 16))
            text.append(words)
            emotions.append(score)
            sentiment.append(float(rng.uniform(-3, 3)))
    return {"id": ids, "raw_text": ["so"] * len(ids), "text": np.stack(text), "audio": np.stack(audio),
            "vision": np.stack(vision), "audio_lengths": a_len, "vision_lengths": v_len,
            "regression_labels": np.array(sentiment, np.float32), "emotion_labels": np.stack(emotions).astype(np.float32)}


def test_mosei_emotions_from_an_mmsa_pickle(tmp_path):
    rng = np.random.default_rng(1)
    proj = {m: rng.standard_normal((6, w)).astype(np.float32) for m, w in (("a", 74), ("v", 35), ("t", 16))}
    path = tmp_path / "aligned_50.pkl"
    path.write_bytes(pickle.dumps({name: _mmsa_split(rng, n, proj) for name, n in (("train", 40), ("valid", 10),
                                                                                     ("test", 12))}))
    config = tmp_path / "small.json"
    config.write_text(json.dumps({**SMALL, "thresholds": "validation"}))
    model = tmp_path / "model"
    joyful("train", "--train", str(path), "--valid", f"{path}#valid", "--out", str(model), "--preset", "mosei-emotion",
           "--modalities", "atv", "--epochs", "15", "--config", str(config), "--quiet")
    plot = tmp_path / "per_emotion.png"
    metrics = json.loads(joyful("evaluate", "--model", str(model), "--data", f"{path}#test", "--json",
                                "--plot", str(plot)).stdout)
    assert plot.read_bytes()[:4] == b"\x89PNG" and "y_prob" not in metrics
    assert metrics["task"] == "multilabel" and set(metrics["per_emotion"]) == set(MOSEI_EMOTIONS)
    assert all(0 <= e["f1"] <= 1 and 0 <= e["weighted_accuracy"] <= 1 for e in metrics["per_emotion"].values())
    assert metrics["weighted_f1"] > 0.6  # "always absent" scores 0; the planted emotions are learnable
    rows = [json.loads(line) for line in joyful("predict", "--model", str(model), "--data", f"{path}#test").stdout.splitlines()]
    assert {r["dialogue"] for r in rows} == {f"vid{v}" for v in range(12)}
    assert all(set(r["label"]) <= set(MOSEI_EMOTIONS) and set(r["probabilities"]) == set(MOSEI_EMOTIONS) for r in rows)
