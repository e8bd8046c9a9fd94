"""From recordings to emotions through the command line: extract → train → predict --manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from media_fixtures import shared_corpus, write_manifest


def joyful(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "joyful.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Four dialogues; the British voice is "sad", the American one "happy"; the face video speaks British."""
    corpus = shared_corpus(tmp_path_factory)
    rows = []
    for k in range(4):
        shift = 0.1 * k
        rows += [
            {
                "dialogue": f"e{k}",
                "index": 0,
                "speaker": "A",
                "text": "What a lovely day this is!",
                "media": "us.wav",
                "start": shift,
                "end": shift + 1.5,
                "label": "happy",
            },
            {
                "dialogue": f"e{k}",
                "index": 1,
                "speaker": "B",
                "text": "I lost my keys again.",
                "media": "gb.wav",
                "start": shift,
                "end": shift + 2.0,
                "label": "sad",
            },
            {
                "dialogue": f"e{k}",
                "index": 2,
                "speaker": "B",
                "text": "Nothing ever works.",
                "media": "face.mp4",
                "start": shift,
                "end": shift + 1.5,
                "label": "sad",
            },
        ]
    return write_manifest(corpus["us"].parent / "e2e.csv", rows)


def test_extract_train_predict(manifest, tiny_config_file, tmp_path):
    user_cache = tmp_path / "user-cache"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "JOYFUL_CACHE_DIR": str(user_cache)}
    data = tmp_path / "data.jsonl"
    # The user cache's extraction results are the ones predict --manifest looks up, so predict computes nothing.
    extract = ["extract", "--manifest", str(manifest), "--out", str(data), "--cache", str(user_cache / "extract")]
    summary = json.loads(joyful(*extract, "--workers", "1", "--quiet", env=env).stdout.strip().splitlines()[-1])
    assert summary["utterances"] == 12 and summary["failed"] == 0 and summary["present"] == {"t": 12, "a": 12, "v": 4}

    model = tmp_path / "model"
    joyful(
        "train",
        "--train",
        str(data),
        "--valid",
        str(data),
        "--out",
        str(model),
        "--config",
        str(tiny_config_file),
        "--modalities",
        "atv",
        "--epochs",
        "3",
        "--seed",
        "1",
        "--quiet",
        env=env,
    )
    meta = json.loads((model / "meta.json").read_text())
    assert meta["extraction"]["audio_features"] == "librosa" and meta["extraction"]["visual_features"] == "face"

    predictions = tmp_path / "predictions.jsonl"
    joyful(
        "predict",
        "--model",
        str(model),
        "--manifest",
        str(manifest),
        "--out",
        str(predictions),
        "--workers",
        "1",
        env=env,
    )
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [(r["dialogue"], r["index"]) for r in rows] == [(f"e{k}", i) for k in range(4) for i in range(3)]
    assert all(r["label"] in ("happy", "sad") and abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)
