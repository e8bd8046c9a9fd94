"""`joyful report` end to end on a tiny run, and the optional TensorBoard logger."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY
from joyful import Joyful, JoyfulConfig
from joyful.cli import app
from joyful.analysis.report import write_report
from joyful.training.tensorboard_log import TensorBoardLogger
from joyful.training.loop import EpochRecord
from joyful.analysis.tsne import labelled_subsample, subsample_indices

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = ("confusion_matrix", "per_class_f1", "training_curves", "tsne")


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    """A two-epoch TINY run; tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("report") / "run"
    clf = Joyful(JoyfulConfig(**{**TINY, "epochs": 2}))
    clf.fit(data_dir / "train.jsonl", data_dir / "valid.jsonl", out_dir=out, progress=False)
    return out


def copy_run(run_dir, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("report", "report.html"))
    return target


def report(*args: str):
    return runner.invoke(app, ["report", *args, "--quiet"])


def test_report_writes_html_and_every_figure(run_dir, data_dir):
    result = report("--run", str(run_dir))
    assert result.exit_code == 0, result.output
    page = (run_dir / "report.html").read_text()
    assert {p.name for p in (run_dir / "report").glob("*.png")} == {f"{name}.png" for name in FIGURES}
    for name in FIGURES:
        assert (run_dir / "report" / f"{name}.png").read_bytes()[:8] == PNG
        assert f'src="report/{name}.png"' in page
    metrics = Joyful.load(run_dir).evaluate(data_dir / "valid.jsonl")
    assert f"{metrics['weighted_f1']:.4f}" in page and f"{metrics['macro_f1']:.4f}" in page
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["data_hash"]["train"] in page and meta["data_hash"]["valid"] in page
    assert "the run's validation data" in page and "omitted" not in page
    assert not [p for p in run_dir.rglob("*.tmp")]


def test_data_and_out_override(run_dir, data_dir, tmp_path):
    out = tmp_path / "test-report.html"
    result = report("--run", str(run_dir), "--data", str(data_dir / "test.jsonl"), "--out", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    for name in FIGURES:
        assert (tmp_path / f"test-report-{name}.png").read_bytes()[:8] == PNG
        assert f'src="test-report-{name}.png"' in page
    metrics = Joyful.load(run_dir).evaluate(data_dir / "test.jsonl")
    assert f"{metrics['weighted_f1']:.4f}" in page and str(data_dir / "test.jsonl") in page
    assert "early stopping" not in page


def test_run_without_history_gets_a_report_without_curves(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    (run / "history.csv").unlink()
    page = write_report(run, progress=False).read_text()
    assert "Training curves omitted" in page and "history.csv not found" in page
    assert {p.name for p in (run / "report").glob("*.png")} == {f"{n}.png" for n in FIGURES if n != "training_curves"}
    assert "training_curves.png" not in page and 'src="report/tsne.png"' in page


def test_missing_model_directory_is_a_one_line_error(tmp_path):
    result = report("--run", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert result.stderr.startswith("joyful: error:") and "no such model directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nowhere").exists()


def test_run_without_validation_data_needs_data(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    meta = json.loads((run / "meta.json").read_text())
    meta["data_source"]["valid"] = None
    (run / "meta.json").write_text(json.dumps(meta))
    result = report("--run", str(run))
    assert result.exit_code == 2 and "pass --data" in result.stderr
    assert not (run / "report.html").exists()


def test_tsne_subsample_is_deterministic_and_labelled_only():
    idx = subsample_indices(5000, 2000, seed=0)
    assert len(idx) == 2000 and len(set(idx)) == 2000 and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, subsample_indices(5000, 2000, seed=0))
    assert np.array_equal(subsample_indices(30, 2000), np.arange(30))
    reps = {"input": np.arange(8.0).reshape(4, 2), "labels": ["a", None, "b", "a"]}
    stages, labels = labelled_subsample(reps, ("input",))
    assert labels == ["a", "b", "a"] and stages["input"][:, 0].tolist() == [0.0, 4.0, 6.0]


def records() -> list[EpochRecord]:
    valid = {"accuracy": 0.5, "weighted_f1": 0.4, "macro_f1": 0.3}
    return [
        EpochRecord(epoch, {"all": 3.0 / epoch, "ce": 2.0 / epoch, "mf": 0.5, "ct": 0.5}, valid, 1.0) for epoch in (1, 2)
    ]


def test_tensorboard_logger_is_a_no_op_without_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    logger = TensorBoardLogger(tmp_path / "tb")
    assert not logger.enabled
    for record in records():
        logger.log_epoch(record)
    logger.close()
    assert not (tmp_path / "tb").exists()
    assert not TensorBoardLogger(None).enabled


def test_tensorboard_logger_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    logger = TensorBoardLogger(tmp_path / "tb")
    assert logger.enabled
    for record in records():
        logger.log_epoch(record)
    logger.close()
    logger.close()
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert {"loss/L_all", "loss/L_ct", "valid/weighted_f1"} <= set(scalars.Tags()["scalars"])
    assert [e.step for e in scalars.Scalars("loss/L_ce")] == [1, 2]
