"""Bad input: one line naming file, dialogue and field, a non-zero exit, and no partial output."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY, WIDTHS
from joyful import Joyful, JoyfulConfig
from joyful.cli import app
from joyful.io.jsonl import write_jsonl
from joyful.synthetic import generate_dialogues

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bad") / "model"
    Joyful(JoyfulConfig(**{**TINY, "epochs": 1})).fit(data_dir / "train.jsonl", data_dir / "valid.jsonl", out_dir=out, progress=False)
    return out


def dialogues(n: int = 3, widths=WIDTHS):
    return generate_dialogues(n, widths=widths, seed=11, prefix="bad-").dialogues


def write_lines(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def as_records(ds) -> list[dict]:
    path_records = []
    for d in ds:
        utts = []
        for i, s in enumerate(d.speakers):
            u = {"speaker": s, "text": d.texts[i], "label": d.labels[i]}
            u.update({"text_features": d.features["t"][i].tolist(), "audio": d.features["a"][i].tolist(), "visual": d.features["v"][i].tolist()})
            utts.append(u)
        path_records.append({"dialogue": d.id, "utterances": utts})
    return path_records


def assert_clean_failure(result, *fragments: str) -> None:
    assert result.exit_code != 0
    message = result.stderr.strip()
    assert message.count("\n") == 0, message  # one line, no traceback
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def predict_fails(model_dir, data, tmp_path, *fragments):
    target = tmp_path / "pred.jsonl"
    result = runner.invoke(app, ["predict", "--model", str(model_dir), "--data", str(data), "--out", str(target)])
    assert_clean_failure(result, str(data), *fragments)
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_widths_that_differ_between_dialogues(model_dir, tmp_path):
    records = as_records(dialogues())
    for u in records[2]["utterances"]:
        u["audio"] = u["audio"][:-1]
    write_lines(tmp_path / "d.jsonl", records)
    predict_fails(model_dir, tmp_path / "d.jsonl", tmp_path, "bad-0002", "'audio'", "width")


def test_width_the_model_does_not_expect(model_dir, tmp_path):
    write_jsonl(dialogues(widths={**WIDTHS, "v": 9}), tmp_path / "d.jsonl")
    predict_fails(model_dir, tmp_path / "d.jsonl", tmp_path, "bad-0000", "'visual'", "expects 8")


def test_mismatched_widths_inside_a_dialogue(model_dir, tmp_path):
    records = as_records(dialogues())
    records[1]["utterances"][2]["text_features"] = [0.0, 1.0]
    write_lines(tmp_path / "d.jsonl", records)
    predict_fails(model_dir, tmp_path / "d.jsonl", tmp_path, "bad-0001", "'text_features'")


def test_empty_dialogue(model_dir, tmp_path):
    records = as_records(dialogues())
    records[1]["utterances"] = []
    write_lines(tmp_path / "d.jsonl", records)
    predict_fails(model_dir, tmp_path / "d.jsonl", tmp_path, "bad-0001", "utterances")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_infinite_features(model_dir, tmp_path, value):
    ds = dialogues()
    ds[2].features["a"][1, 0] = value
    write_jsonl(ds, tmp_path / "d.jsonl")
    predict_fails(model_dir, tmp_path / "d.jsonl", tmp_path, "bad-0002", "'audio'", "NaN or infinite")


def test_unknown_label(model_dir, tmp_path):
    ds = dialogues()
    ds[0].labels[2] = "bored"
    write_jsonl(ds, tmp_path / "d.jsonl")
    result = runner.invoke(app, ["evaluate", "--model", str(model_dir), "--data", str(tmp_path / "d.jsonl"), "--json"])
    assert_clean_failure(result, str(tmp_path / "d.jsonl"), "bad-0000", "'label'", "'bored'")
    assert result.stdout == ""


def test_missing_speaker(model_dir, tmp_path):
    records = as_records(dialogues())
    del records[1]["utterances"][0]["speaker"]
    write_lines(tmp_path / "d.jsonl", records)
    predict_fails(model_dir, tmp_path / "d.jsonl", tmp_path, "bad-0001", "'speaker'")


def test_unreadable_file(model_dir, tmp_path):
    predict_fails(model_dir, tmp_path / "missing.jsonl", tmp_path, "not found")


def test_truncated_file(model_dir, tmp_path):
    write_jsonl(dialogues(), tmp_path / "d.jsonl")
    text = (tmp_path / "d.jsonl").read_text()
    (tmp_path / "d.jsonl").write_text(text[: len(text) - 300])
    predict_fails(model_dir, tmp_path / "d.jsonl", tmp_path, "line 3")


def test_truncated_checkpoint(model_dir, data_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_bytes((model_dir / "meta.json").read_bytes())
    weights = (model_dir / "model.pt").read_bytes()
    (broken / "model.pt").write_bytes(weights[: len(weights) // 2])
    result = runner.invoke(app, ["evaluate", "--model", str(broken), "--data", str(data_dir / "test.jsonl"), "--json"])
    assert_clean_failure(result, str(broken / "model.pt"), "truncated")
    (broken / "meta.json").write_text("{\"format\": \"joyful-mo")
    result = runner.invoke(app, ["evaluate", "--model", str(broken), "--data", str(data_dir / "test.jsonl"), "--json"])
    assert_clean_failure(result, str(broken / "meta.json"), "truncated")


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_with_a_class_outside_the_allowed_set(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pkl", "wb") as fh:
        pickle.dump({"train": [Exploit()], "dev": [], "test": [Exploit()]}, fh)
    predict_fails(model_dir, tmp_path / "evil.pkl", tmp_path, "system", "not allowed")
    assert not (tmp_path / "pwned").exists()


def test_train_with_bad_validation_data_writes_nothing(data_dir, tiny_config_file, tmp_path):
    ds = dialogues()
    ds[1].features["v"][0, 0] = np.nan
    write_jsonl(ds, tmp_path / "bad.jsonl")
    out = tmp_path / "model"
    result = runner.invoke(app, [
        "train", "--train", str(data_dir / "train.jsonl"), "--valid", str(tmp_path / "bad.jsonl"), "--out", str(out),
        "--config", str(tiny_config_file), "--quiet",
    ])
    assert_clean_failure(result, "bad-0001", "'visual'")
    assert not out.exists()


def test_unknown_preset_and_bad_modalities(data_dir, tmp_path):
    base = ["train", "--train", str(data_dir / "train.jsonl"), "--out", str(tmp_path / "m"), "--quiet"]
    assert_clean_failure(runner.invoke(app, [*base, "--preset", "nope"]), "preset", "nope")
    assert_clean_failure(runner.invoke(app, [*base, "--modalities", "tx"]), "modalities")
