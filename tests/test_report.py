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
from joyful.analysis.report import write_report
from joyful.analysis.tsne import labelled_subsample, subsample_indices
from joyful.cli import app
from joyful.training.loop import EpochRecord
from joyful.training.tensorboard_log import TensorBoardLogger

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = ("confusion_matrix", "per_class_f1", "reliability", "risk_coverage", "training_curves", "tsne")


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
    assert f"{metrics['ece']:.4f}" in page and f"{metrics['ece_uncalibrated']:.4f}" in page
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


# ---------------------------------------------------------------------- multilabel and regression

from joyful.analysis import plots  # noqa: E402
from joyful.analysis.report import emotion_groups  # noqa: E402
from joyful.io.jsonl import write_jsonl  # noqa: E402
from joyful.synthetic_mosei import generate_mosei  # noqa: E402

EMOTIONS = ("happy", "sad", "anger", "surprise", "disgust", "fear")
MOSEI_WIDTHS = {"t": 16, "a": 8, "v": 6}


@pytest.fixture
def drawn(monkeypatch) -> list:
    """Every figure the plot functions save, kept open for inspection (the files are still written)."""
    figures = []
    save = plots._save

    def keep(fig, path):
        figures.append(fig)
        save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def multilabel_metrics_example() -> dict:
    f1 = dict(zip(EMOTIONS, (0.81, 0.62, 0.55, 0.0, 0.47, 0.33), strict=True))
    return {
        "task": "multilabel",
        "labels": list(EMOTIONS),
        "per_emotion": {
            e: {"f1": v, "weighted_accuracy": 0.5 + v / 3, "accuracy": 0.9, "threshold": 0.5, "positives": 10 + k}
            for k, (e, v) in enumerate(f1.items())
        },
        "micro_f1": 0.6, "macro_f1": 0.4633, "weighted_f1": 0.58, "subset_accuracy": 0.3, "n_utterances": 120,
    }


def test_per_emotion_f1_bars_are_the_given_scores(drawn, tmp_path):
    metrics = multilabel_metrics_example()
    plots.plot_per_emotion_f1(metrics, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").read_bytes()[:8] == PNG
    (ax,) = drawn[0].axes
    heights = [bar.get_height() for bar in ax.containers[0]]
    assert heights == pytest.approx([0.81, 0.62, 0.55, 0.0, 0.47, 0.33])
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == list(EMOTIONS)
    assert "n=13" in ax.get_xticklabels()[3].get_text()  # surprise: 10 + 3 positives
    markers = [line for line in ax.lines if line.get_marker() == "D"][0]
    assert markers.get_ydata() == pytest.approx([0.5 + v / 3 for v in heights])


def test_regression_scatter_holds_the_pairs_and_the_identity_line(drawn, tmp_path):
    y_true, y_pred = [-3.0, -1 / 3, 0.0, 2 / 3, 3.0], [-2.5, 0.1, 0.0, 1.2, 2.0]
    plots.plot_regression_scatter(y_true, y_pred, {"mae": 0.4, "corr": None}, tmp_path / "scatter.png")
    assert (tmp_path / "scatter.png").read_bytes()[:8] == PNG
    (ax,) = drawn[0].axes
    assert np.allclose(ax.collections[0].get_offsets(), np.column_stack([y_true, y_pred]))
    (identity,) = ax.lines
    xs, ys = identity.get_data()
    assert list(xs) == list(ys) and min(xs) <= -3 and max(xs) >= 3
    assert "MAE 0.400" in ax.get_title() and "r –" in ax.get_title()


def test_residuals_are_prediction_minus_gold_with_a_median_per_gold_unit(drawn, tmp_path):
    y_true = np.array([-2.0, -2.0, -2.0, 0.0, 0.0, 1.0 / 3, 2.0])
    y_pred = np.array([-1.0, -1.5, 0.0, 0.5, -0.5, 1.0, 1.0])
    plots.plot_residuals(y_true, y_pred, tmp_path / "residuals.png")
    assert (tmp_path / "residuals.png").read_bytes()[:8] == PNG
    ax, hist = drawn[0].axes
    points = np.array(ax.collections[0].get_offsets())
    assert points[:, 0].tolist() == y_true.tolist() and points[:, 1] == pytest.approx(y_pred - y_true)
    (median,) = [line for line in ax.lines if line.get_marker() == "o"]
    # gold rounded to -2, 0 (0 and 1/3) and 2: residuals {1, .5, 2}, {.5, -.5, 2/3}, {-1}
    assert list(median.get_xdata()) == [-2.0, 0.0, 2.0] and list(median.get_ydata()) == pytest.approx([1.0, 0.5, -1.0])
    assert sum(p.get_width() for p in hist.patches) == len(y_true)  # the histogram counts every utterance


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_training_curves_draw_each_tasks_validation_scores(task, drawn, tmp_path):
    losses = {"loss_all": 1.0, "loss_ce": 0.5, "loss_mf": 0.3, "loss_ct": 0.2}
    if task == "regression":  # MAE lowest at epoch 2; r undefined (constant prediction) at epoch 1
        valid = [{"valid_mae": 0.9, "valid_acc2": 0.5}, {"valid_mae": 0.5, "valid_corr": 0.6, "valid_acc2": 0.7},
                 {"valid_mae": 0.6, "valid_corr": 0.65, "valid_acc2": 0.72}]
    else:  # no accuracy in a multilabel history; weighted F1 highest at epoch 3
        valid = [{"valid_weighted_f1": f, "valid_macro_f1": f - 0.1, "valid_micro_f1": f + 0.05} for f in (0.3, 0.5, 0.6)]
    rows = [{"epoch": e, **losses, **v} for e, v in enumerate(valid, start=1)]
    plots.plot_training_curves(rows, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG
    right = drawn[0].axes[1]
    names = [line.get_label() for line in right.lines]
    expected = ["MAE", "corr", "Acc-2"] if task == "regression" else ["weighted F1", "macro F1", "micro F1"]
    assert names[:3] == expected and names[3] == f"best epoch {2 if task == 'regression' else 3}"
    if task == "regression":
        assert np.isnan(right.lines[1].get_ydata()[0]) and right.lines[1].get_ydata()[1] == 0.6


def test_training_curves_mark_the_epoch_training_kept_and_draw_the_validation_loss(tmp_path, drawn):
    # select_by = "loss" kept epoch 2 (lowest validation loss) although weighted F1 peaks at epoch 3:
    # the marker follows the kept epoch, and the validation loss is drawn beside the training losses
    losses = {"loss_all": 1.0, "loss_ce": 0.5, "loss_mf": 0.3, "loss_ct": 0.2}
    rows = [{"epoch": e, **losses, "valid_loss": v, "valid_weighted_f1": f}
            for e, v, f in ((1, 1.4, 0.3), (2, 1.1, 0.5), (3, 1.3, 0.6))]
    plots.plot_training_curves(rows, tmp_path / "curves.png", best_epoch=2)
    left, right = drawn[0].axes
    assert [line.get_label() for line in left.lines][-1] == "validation L_ce"
    assert list(left.lines[-1].get_ydata()) == [1.4, 1.1, 1.3]
    assert right.lines[-1].get_label() == "best epoch 2" and right.lines[-1].get_xdata()[0] == 2


def test_emotion_groups_are_the_single_emotion_or_none_or_several():
    labels = [("sad",), (), ("happy", "fear"), ("fear",), ("happy", "sad", "anger")]
    names, order = emotion_groups(labels, list(EMOTIONS))
    assert names == ["sad", "none", "several", "fear", "several"]
    assert order == [*EMOTIONS, "none", "several"]


@pytest.fixture(scope="module")
def mosei_runs(tmp_path_factory) -> dict:
    """A two-epoch TINY run per MOSEI task on generated videos, with its data directory."""
    runs = {}
    for task in ("multilabel", "regression"):
        root = tmp_path_factory.mktemp(f"report-{task}")
        for name, n, seed in (("train", 24, 1), ("valid", 8, 2)):
            write_jsonl(generate_mosei(n, task=task, widths=MOSEI_WIDTHS, seed=seed, prefix=f"{name}-").dialogues,
                        root / f"{name}.jsonl")
        Joyful(JoyfulConfig(**{**TINY, "epochs": 2, "task": task})).fit(
            root / "train.jsonl", root / "valid.jsonl", out_dir=root / "run", progress=False
        )
        runs[task] = root
    return runs


def test_multilabel_report_draws_per_emotion_f1_instead_of_a_confusion_matrix(mosei_runs):
    root = mosei_runs["multilabel"]
    result = report("--run", str(root / "run"))
    assert result.exit_code == 0, result.output
    page = (root / "run" / "report.html").read_text()
    figures = ("per_emotion_f1", "reliability", "risk_coverage", "training_curves", "tsne")
    assert {p.name for p in (root / "run" / "report").glob("*.png")} == {f"{n}.png" for n in figures}
    for name in figures:
        assert (root / "run" / "report" / f"{name}.png").read_bytes()[:8] == PNG and f'src="report/{name}.png"' in page
    metrics = Joyful.load(root / "run").evaluate(root / "valid.jsonl")
    for key in ("weighted_f1", "micro_f1", "macro_f1", "subset_accuracy"):
        assert f"{metrics[key]:.4f}" in page
    gold = [lab for d in generate_mosei(8, task="multilabel", widths=MOSEI_WIDTHS, seed=2) for lab in d.labels]
    for e in EMOTIONS:
        positives = sum(e in lab for lab in gold)
        assert f"<td>{e}</td><td class='num'>{positives}</td><td class='num'>{metrics['per_emotion'][e]['f1']:.4f}</td>" in page
    assert "validation weighted F1 over emotions at best epoch" in page and "confusion" not in page.lower()


def test_regression_report_draws_scatter_and_residuals(mosei_runs):
    root = mosei_runs["regression"]
    page = write_report(root / "run", progress=False).read_text()
    figures = ("regression_scatter", "residuals", "training_curves", "tsne")
    assert {p.name for p in (root / "run" / "report").glob("*.png")} == {f"{n}.png" for n in figures}
    for name in figures:
        assert (root / "run" / "report" / f"{name}.png").read_bytes()[:8] == PNG and f'src="report/{name}.png"' in page
    metrics = Joyful.load(root / "run").evaluate(root / "valid.jsonl")
    for key in ("mae", "acc2", "f1", "acc2_non0", "f1_non0", "acc5", "acc7"):
        assert f"{metrics[key]:.4f}" in page
    gold = np.array([lab for d in generate_mosei(8, task="regression", widths=MOSEI_WIDTHS, seed=2) for lab in d.labels])
    assert f"<td>{np.abs(gold - np.median(gold)).mean():.4f}</td>" in page  # the constant predictor's MAE
    assert "validation MAE at best epoch" in page and "per_class_f1" not in page


def test_report_shows_the_per_group_table_of_evaluate_groups(run_dir, data_dir, tmp_path):
    """The per-speaker weighted F1 on the page equals scikit-learn's on that speaker's utterances."""
    from sklearn.metrics import f1_score

    from joyful.io.jsonl import read_jsonl

    out = tmp_path / "groups.html"
    result = report("--run", str(run_dir), "--data", str(data_dir / "test.jsonl"), "--out", str(out), "--groups", "speaker")
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "<h2>Per group (speaker)</h2>" in page and "permutation p =" in page
    clf = Joyful.load(run_dir)
    m = clf.evaluate(data_dir / "test.jsonl", with_predictions=True)
    speakers = [s for d in read_jsonl(data_dir / "test.jsonl") for s, lab in zip(d.speakers, d.labels, strict=True)
                if lab is not None]
    ids = list(range(len(m["labels"])))
    for speaker in sorted(set(speakers)):
        keep = [i for i, s in enumerate(speakers) if s == speaker]
        want = f1_score([m["y_true"][i] for i in keep], [m["y_pred"][i] for i in keep], labels=ids, average="weighted",
                        zero_division=0)
        assert f"<td>{speaker}</td><td>{len(keep)}</td>" in page and f"<td>{want:.4f}</td>" in page
