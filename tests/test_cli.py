"""The CLI contract, through a real subprocess: train → evaluate --json → predict --out."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from joyful.synthetic import DEFAULT_LABELS


def joyful(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "joyful.cli", *args], capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def model_dir(data_dir, tiny_config_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "model"
    proc = joyful(
        "train", "--train", str(data_dir / "train.jsonl"), "--valid", str(data_dir / "valid.jsonl"), "--out", str(out),
        "--config", str(tiny_config_file), "--modalities", "atv", "--seed", "3", "--epochs", "4", "--quiet",
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["epochs_run"] == 4 and 0 <= summary["weighted_f1"] <= 1
    return out


def test_train_writes_a_complete_model_directory(model_dir):
    meta = json.loads((model_dir / "meta.json").read_text())
    assert meta["config"]["seed"] == 3 and meta["config"]["epochs"] == 4 and meta["config"]["modalities"] == "atv"
    assert meta["config"]["global_attention_dim"] == 16  # from --config
    assert (model_dir / "model.pt").stat().st_size > 0 and (model_dir / "history.csv").exists()
    assert (model_dir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in model_dir.iterdir() if p.name.endswith(".tmp")]


def test_evaluate_json(model_dir, data_dir):
    out = json.loads(joyful("evaluate", "--model", str(model_dir), "--data", str(data_dir / "test.jsonl"), "--json").stdout)
    for key in ("accuracy", "weighted_f1", "macro_f1"):
        assert 0.0 <= out[key] <= 1.0
    assert set(out["per_class_f1"]) == set(DEFAULT_LABELS)
    assert out["n_utterances"] == sum(len(json.loads(line)["utterances"]) for line in (data_dir / "test.jsonl").open())


def test_evaluate_table_and_plot(model_dir, data_dir, tmp_path):
    plot = tmp_path / "cm.png"
    out = joyful("evaluate", "--model", str(model_dir), "--data", str(data_dir / "test.jsonl"), "--plot", str(plot)).stdout
    assert "weighted F1" in out and "confusion matrix" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_jsonl(model_dir, data_dir, tmp_path):
    target = tmp_path / "pred.jsonl"
    joyful("predict", "--model", str(model_dir), "--data", str(data_dir / "test.jsonl"), "--out", str(target))
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    dialogues = [json.loads(line) for line in (data_dir / "test.jsonl").open()]
    assert len(rows) == sum(len(d["utterances"]) for d in dialogues)
    first = dialogues[0]
    assert [r["index"] for r in rows[: len(first["utterances"])]] == list(range(len(first["utterances"])))
    assert rows[0]["dialogue"] == first["dialogue"] and rows[0]["speaker"] == first["utterances"][0]["speaker"]
    assert rows[0]["label"] in DEFAULT_LABELS
    assert rows[0]["label"] == max(rows[0]["probabilities"], key=rows[0]["probabilities"].get)


def test_predict_to_stdout(model_dir, data_dir):
    lines = joyful("predict", "--model", str(model_dir), "--data", str(data_dir / "valid.jsonl")).stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert all(set(r) == {"dialogue", "index", "speaker", "label", "probabilities", "confidence"} for r in rows)
    assert all(r["confidence"] == max(r["probabilities"].values()) for r in rows)


def test_help_explains_every_command():
    out = joyful("--help").stdout
    for command in ("train", "evaluate", "predict", "demo"):
        assert command in out
    train_help = joyful("train", "--help").stdout
    for option in ("--train", "--valid", "--out", "--preset", "--modalities", "--seed", "--epochs", "--text-encoder"):
        assert option in train_help


def test_demo_runs_end_to_end(tmp_path):
    proc = joyful("demo", "--out", str(tmp_path / "demo"), "--epochs", "2", "--quiet")
    assert "test: accuracy" in proc.stdout
    assert (tmp_path / "demo" / "predictions.jsonl").stat().st_size > 0


def test_predict_explain_and_missing_modality_warning(model_dir, data_dir, tmp_path):
    no_video = []
    for line in (data_dir / "test.jsonl").read_text().splitlines()[:2]:
        d = json.loads(line)
        for u in d["utterances"]:
            del u["visual"]
        no_video.append(json.dumps(d))
    (tmp_path / "novideo.jsonl").write_text("\n".join(no_video) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "joyful.cli", "predict", "--model", str(model_dir), "--data", str(tmp_path / "novideo.jsonl"),
         "--explain", "--top-k", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "joyful: warning:" in proc.stderr and "visual" in proc.stderr and "Warning" not in proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == sum(len(json.loads(x)["utterances"]) for x in no_video)
    assert all(len(r["explanation"]["context"]) == 2 and set(r["explanation"]["modalities"]) == {"text", "audio", "visual"}
               for r in rows)
    assert all(r["explanation"]["modalities"]["visual"] == 0 for r in rows)  # nothing to leave out


def test_predict_needs_data_or_manifest(model_dir):
    proc = joyful("predict", "--model", str(model_dir), check=False)
    assert proc.returncode == 2 and "--data" in proc.stderr and "--manifest" in proc.stderr
