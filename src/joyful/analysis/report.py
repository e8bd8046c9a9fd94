"""``joyful report``: one HTML page that says what a run is and how well it does, with figures.

A model directory already holds everything needed to reproduce its numbers (config,
seed, data hashes, history); the report puts them on one page next to fresh scores on
labelled data (by default the run's own validation data) and the figures a reader wants
first: confusion matrix and per-class F1 (classification), per-emotion F1 (multilabel: a
confusion matrix does not apply when an utterance may show several emotions), or
predicted-against-gold scores and their residuals (regression); for models that serve
probabilities, the reliability diagram of the (calibrated) probabilities and the
risk–coverage curve of selective prediction; then training curves and t-SNE maps of the
utterance representations at input, after fusion and after the graph encoder (the
paper's Figure 10).

The page is plain HTML with inline CSS and PNGs referenced by relative path, so the
report directory can be copied or served as it is. Every file is written atomically.
"""

from __future__ import annotations

import csv
import html
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from joyful.api import Joyful, as_dialogue_set, integer_label_names
from joyful.atomic import atomic_write_text
from joyful.data.tasks import get_task
from joyful.errors import JoyfulError
from joyful.io.readers import parse_spec
from joyful.analysis.plots import (
    plot_confusion_matrix, plot_per_class_f1, plot_per_emotion_f1, plot_regression_scatter, plot_reliability,
    plot_residuals, plot_risk_coverage, plot_training_curves, plot_tsne, plot_tsne_scores,
)
from joyful.analysis.tsne import MAX_POINTS, MIN_POINTS, embed, labelled_subsample

#: The t-SNE subsample and layout seed: fixed, so a report is a function of the run and the data.
TSNE_SEED = 0

#: Columns of history.csv that the training curves need (written by :func:`joyful.training.members.train_members`).
HISTORY_COLUMNS = ("epoch", "loss_all", "loss_ce", "loss_mf", "loss_ct")


@dataclass(frozen=True)
class Figure:
    """A PNG of the report: where it is written, how the page refers to it, its caption."""

    path: Path
    href: str
    title: str
    caption: str


def write_report(
    run_dir: str | os.PathLike, data: str | None = None, out: str | os.PathLike | None = None, progress: bool = True,
    groups: str | None = None, group_map: str | os.PathLike | None = None,
) -> Path:
    """Write the HTML report of the model in ``run_dir`` and return its path.

    ``data`` (a path, ``file#split`` allowed) is the labelled data to score and map; by
    default the run's validation data as recorded in ``meta.json``. The page goes to
    ``out`` (default ``run_dir/report.html``); its PNGs go to ``run_dir/report/``, or,
    with ``out``, beside it, prefixed with its stem so several reports can share a folder.
    ``groups``/``group_map``: a per-group table as ``evaluate --groups`` gives (KEY, and a
    CSV of speakers to groups; see :mod:`joyful.analysis.fairness`).
    """
    run_dir = Path(run_dir)
    clf = Joyful.load(run_dir)
    meta = clf.info.extra
    spec = data if data is not None else _recorded_validation_data(run_dir, meta)
    html_path = Path(out) if out is not None else run_dir / "report.html"
    fig_dir, prefix = (run_dir / "report", "") if out is None else (html_path.parent, f"{html_path.stem}-")

    raw = as_dialogue_set(spec, role="test", int_label_names=integer_label_names(clf.config.label_set), task=clf.task)
    dataset = clf.prepare(raw, role="test", label_set=clf.info.label_set, progress=progress)
    metrics = clf.evaluate(dataset, with_predictions=True)
    fairness = _group_table(dataset, metrics, groups, group_map) if groups is not None else None
    y_true, y_pred = metrics.pop("y_true"), metrics.pop("y_pred")
    y_prob = metrics.pop("y_prob", None)
    metrics.pop("y_uncalibrated")
    task = metrics.get("task", "classification")

    def figure(name: str, title: str, caption: str) -> Figure:
        path = fig_dir / f"{prefix}{name}.png"
        return Figure(path, quote(Path(os.path.relpath(path, html_path.parent)).as_posix()), title, caption)

    figures: list[Figure] = []
    notes: list[str] = []

    if task == "multilabel":
        bars = figure("per_emotion_f1", "Per-emotion F1",
                      "F1 of each emotion (bars) and its weighted accuracy (diamonds), with the number of gold "
                      "utterances that show it; dashed and dotted lines mark the weighted and macro F1.")
        plot_per_emotion_f1(metrics, bars.path)
        figures.append(bars)
    elif task == "regression":
        scatter = figure("regression_scatter", "Predicted against gold score",
                         "One point per utterance; the dashed line is perfect prediction.")
        plot_regression_scatter(y_true, y_pred, metrics, scatter.path)
        residuals = figure("residuals", "Residuals",
                           "Predicted minus gold score against the gold score, with the median residual per "
                           "rounded gold score (a line falling from left to right: predictions shrunk towards the "
                           "mean), and the residuals' distribution.")
        plot_residuals(y_true, y_pred, residuals.path)
        figures += [scatter, residuals]
    else:
        cm = figure("confusion_matrix", "Confusion matrix",
                    "Rows are gold labels, columns predictions; cells count utterances, shading is the share of the gold class.")
        plot_confusion_matrix(metrics, cm.path)
        bars = figure("per_class_f1", "Per-class F1",
                      "F1 of each class with its number of gold utterances; "
                      "dashed and dotted lines mark the weighted and macro averages.")
        plot_per_class_f1(metrics, bars.path)
        figures += [cm, bars]
    if task != "regression":
        figures += _confidence_figures(figure, clf, task, y_true, y_pred, y_prob, metrics)

    curves = figure("training_curves", "Training curves",
                    "Mean training losses per epoch (L_all, L_ce, L_mf, L_ct; log scale) and validation scores; "
                    "the dotted line marks the best epoch.")
    rows, problem = read_history(run_dir / "history.csv")
    members = {r["member"] for r in rows if "member" in r}
    if len(members) > 1:  # an ensemble: one member's curves, since each restarts at epoch 1
        rows = [r for r in rows if r.get("member") == min(members)]
        notes.append(f"Training curves show the first of the ensemble's {len(members)} members.")
    if rows:
        plot_training_curves(rows, curves.path, best_epoch=meta.get("best_epoch") or None)
        figures.append(curves)
    else:
        curves.path.unlink(missing_ok=True)
        notes.append(f"Training curves omitted: {problem}.")

    coloured_by = {"multilabel": "gold emotion (or none, or several)", "regression": "gold score"}.get(task, "gold label")
    tsne = figure("tsne", "t-SNE of utterance representations",
                  "Utterances at the input (concatenated features), after the fusion module and after the graph "
                  f"encoder, coloured by {coloured_by} (the paper's Figure 10); "
                  + ("a gradient from negative to positive means the score is readable from the representation."
                     if task == "regression" else "separated colours mean separable classes."))
    stages, labels = labelled_subsample(clf.representations(dataset), ("input", "fused", "encoded"), MAX_POINTS, TSNE_SEED)
    if len(labels) >= MIN_POINTS:
        titles = {"input": "input (concatenated features)", "fused": "after fusion", "encoded": "after graph encoder"}
        maps = embed({f"{titles[s]}, d={x.shape[1]}": x for s, x in stages.items()}, seed=TSNE_SEED, progress=progress)
        if task == "regression":
            plot_tsne_scores(maps, labels, tsne.path)
        elif task == "multilabel":
            plot_tsne(maps, *emotion_groups(labels, metrics["labels"]), tsne.path)
        else:
            plot_tsne(maps, labels, metrics["labels"], tsne.path)
        figures.append(tsne)
        if metrics["n_utterances"] > len(labels):
            notes.append(f"The t-SNE maps show a fixed random subsample of {len(labels)} labelled utterances.")
    else:
        tsne.path.unlink(missing_ok=True)
        notes.append(f"t-SNE maps omitted: only {len(labels)} labelled utterances (at least {MIN_POINTS} needed).")

    page = render_html(
        run_dir=run_dir,
        meta=meta,
        config=clf.config.to_dict(),
        label_set=clf.info.label_set.to_dict(),
        data_spec=spec,
        data_is_default=data is None,
        data_hash=dataset.data_hash(),
        metrics=metrics,
        constant_mae=float(np.abs(np.asarray(y_true) - np.median(y_true)).mean()) if task == "regression" else None,
        figures=figures,
        notes=notes,
        fairness=fairness,
    )
    atomic_write_text(html_path, page)
    return html_path


def _confidence_figures(figure, clf: Joyful, task: str, y_true: list, y_pred: list, y_prob: list, metrics: dict) -> list[Figure]:
    """Reliability diagram and risk–coverage curve of the probabilities the model serves on the analysed data."""
    reliability = figure(
        "reliability", "Reliability diagram",
        "Observed " + ("accuracy per bin of the top class's probability" if task == "classification" else
                       "fraction present per bin of each emotion's probability")
        + " (15 equal-width bins; the dashed diagonal is perfect calibration), with the points per bin below; the "
        "title gives the expected calibration error before (T = 1) and after temperature scaling.",
    )
    plot_reliability(task, y_true, y_prob, metrics["ece"], metrics["ece_uncalibrated"], clf.model.temperature,
                     reliability.path)
    right = np.asarray(y_pred) == np.asarray(y_true)
    if task == "multilabel":
        right = right.all(axis=-1)
    risk = figure(
        "risk_coverage", "Risk against coverage",
        "Utterances sorted by the model's confidence in its decision (the top class's probability, or for multilabel "
        "the mean over emotions of p or 1 − p); the error rate of those kept as the least confident are set aside "
        "for review. Multilabel: an utterance is an error unless every emotion is right.",
    )
    plot_risk_coverage(get_task(task).confidence(np.asarray(y_prob), clf.thresholds), right, risk.path)
    return [reliability, risk]


def emotion_groups(labels: list[tuple[str, ...]], emotions: list[str]) -> tuple[list[str], list[str]]:
    """Each utterance's colour group for a multilabel t-SNE, and the groups in colour order.

    The group is the emotion when exactly one is present, else ``none`` or ``several``:
    one colour per emotion set would spread the points over dozens of rare combinations.
    Emotions come first so each keeps its colour from the per-emotion F1 bars.
    """
    names = [lab[0] if len(lab) == 1 else "none" if not lab else "several" for lab in labels]
    return names, [*emotions, "none", "several"]


def _group_table(dataset, metrics: dict, key: str, group_map) -> tuple[str, list[str], list[list[str]], str]:
    """The ``evaluate --groups`` result for the analysed data, as (key, header, rows, closing line)."""
    from joyful.analysis import fairness

    members = fairness.utterance_groups(dataset, key, None if group_map is None else fairness.read_group_map(group_map, key))
    return (key, *fairness.table_rows(fairness.evaluated_groups(dataset, metrics, members, key)))


def _fairness_html(table: tuple[str, list[str], list[list[str]], str] | None) -> str:
    if table is None:
        return ""
    key, header, rows, line = table
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<h2>Per group ({_e(key)})</h2>\n<table><tr>{head}</tr>{body}</table>\n<p>{_e(line)}</p>"


def _recorded_validation_data(run_dir: Path, meta: dict[str, Any]) -> str:
    """The validation data ``meta.json`` names, checked to exist so the error can say what to do."""
    spec = (meta.get("data_source") or {}).get("valid")
    if not spec:
        raise JoyfulError(f"{run_dir}: the run records no validation data; pass --data PATH to name labelled data")
    path, _ = parse_spec(spec)
    if not os.path.exists(path):  # a file, or a CMU-SDK directory of .csd files
        raise JoyfulError(
            f"{run_dir}: the run's validation data {spec!r} is not found (paths are relative to where training ran); "
            "pass --data PATH"
        )
    return spec


def read_history(path: Path) -> tuple[list[dict[str, float | int]], str | None]:
    """The per-epoch rows of ``history.csv`` as numbers, or no rows and why.

    A report is still useful without curves, so a missing or malformed history is a note
    on the page rather than an error.
    """
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in HISTORY_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                return [], f"{path} lacks the column(s) {', '.join(missing)}"
            rows = [
                {k: int(v) if k == "epoch" else float(v) for k, v in row.items() if k is not None and v not in (None, "")}
                for row in reader
            ]
    except FileNotFoundError:
        return [], f"{path} not found (the run was trained without an output directory, or the file was not copied)"
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as e:
        return [], f"{path} is unreadable ({e})"
    if not rows:
        return [], f"{path} holds no epoch"
    return rows, None


# ---------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.9em; } .note { color: #8a5a00; } figure { margin: 1.5em 0; }
img { max-width: 100%; border: 1px solid #eee; } figcaption { color: #555; font-size: 0.95em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _kv_table(rows: list[tuple[str, str]]) -> str:
    """A two-column table; values are already-escaped HTML."""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _score(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


#: How the summary names each task's primary metric (the one early stopping used).
_PRIMARY = {"classification": "weighted F1", "multilabel": "weighted F1 over emotions", "regression": "MAE"}


#: The calibration rows of the headline scores (classification and multilabel).
_CALIBRATION_SCORES = (
    ("ece", "expected calibration error (15 bins), as served"), ("ece_uncalibrated", "expected calibration error at T = 1"),
)


def _scores(metrics: dict, constant_mae: float | None) -> tuple[list[tuple[str, str]], str]:
    """The headline scores of the task and its detail table (per class or per emotion) as HTML."""
    task = metrics.get("task", "classification")
    scored = ("utterances scored", _e(metrics["n_utterances"]))
    if task == "regression":
        headline = [scored, ("MAE", _score(metrics["mae"])), ("MAE of a constant (the gold median)", _score(constant_mae))]
        headline += [(name, _score(metrics[key])) for key, name in (
            ("corr", "correlation (Pearson)"), ("acc2", "Acc-2 (negative / non-negative)"), ("f1", "F1 (negative / non-negative)"),
            ("acc2_non0", "Acc-2 (negative / positive, zeros left out)"), ("f1_non0", "F1 (negative / positive, zeros left out)"),
            ("acc5", "Acc-5"), ("acc7", "Acc-7"),
        )]
        return headline, ""
    if task == "multilabel":
        headline = [scored] + [(name, _score(metrics[key])) for key, name in (
            ("weighted_f1", "weighted F1"), ("micro_f1", "micro F1"), ("macro_f1", "macro F1"),
            ("subset_accuracy", "subset accuracy (every emotion right)"), *_CALIBRATION_SCORES,
        )]
        rows = ""
        for name in metrics["labels"]:
            one = metrics["per_emotion"][name]
            cells = "".join(f"<td class='num'>{_score(one[k])}</td>" for k in ("f1", "weighted_accuracy", "accuracy", "threshold"))
            rows += f"<tr><td>{_e(name)}</td><td class='num'>{_e(one.get('positives', '–'))}</td>{cells}</tr>"
        head = "<tr><th>emotion</th><th>gold utterances</th><th>F1</th><th>weighted accuracy</th><th>accuracy</th><th>threshold</th></tr>"
        return headline, f"<table>{head}{rows}</table>"
    headline = [scored] + [(name, _score(metrics[key])) for key, name in (
        ("accuracy", "accuracy"), ("weighted_f1", "weighted F1"), ("macro_f1", "macro F1"), *_CALIBRATION_SCORES,
    )]
    support = [sum(row) for row in metrics["confusion_matrix"]]
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td class='num'>{n}</td><td class='num'>{_score(metrics['per_class_f1'][name])}</td></tr>"
        for name, n in zip(metrics["labels"], support, strict=True)
    )
    return headline, f"<table><tr><th>class</th><th>gold utterances</th><th>F1</th></tr>{rows}</table>"


def render_html(
    *,
    run_dir: Path,
    meta: dict[str, Any],
    config: dict[str, Any],
    label_set: dict[str, Any],
    data_spec: str,
    data_is_default: bool,
    data_hash: str,
    metrics: dict,
    figures: list[Figure],
    notes: list[str],
    constant_mae: float | None = None,
    fairness: tuple[str, list[str], list[list[str]], str] | None = None,
) -> str:
    """The report page as one string (no external resources besides the figures).

    ``constant_mae`` (regression): the MAE of always predicting the gold median, the bar a
    model must clear for its MAE to mean anything.
    """
    hashes = meta.get("data_hash") or {}
    sources = meta.get("data_source") or {}
    sizes = meta.get("n_utterances") or {}
    best_valid = meta.get("valid_metrics") or {}
    task = metrics.get("task", "classification")
    analysed = f"<code>{_e(data_spec)}</code>"
    if data_is_default:
        analysed += " (the run's validation data, used for early stopping: scores are optimistic)"
    elif data_hash == hashes.get("valid"):
        analysed += " (same content as the run's validation data)"
    summary = [
        ("model directory", f"<code>{_e(run_dir)}</code>"),
        ("joyful version", _e(meta.get("joyful_version", "unknown"))),
        ("seed", _e(meta.get("seed", config.get("seed")))),
        ("best epoch", _e(meta.get("best_epoch", "–"))),
        (f"validation {_PRIMARY[task]} at best epoch", _score(best_valid.get(get_task(task).primary_metric))),
        ("label set", _e(f"{label_set['name']}: {' '.join(label_set['labels'])}")
         + (_e(f" (dropped: {' '.join(label_set['dropped'])})") if label_set.get("dropped") else "")),
        ("modalities", _e(config.get("modalities"))),
        ("text encoder", _e(meta.get("text_encoder") or "–")),
    ]
    if task != "regression":
        calibration = meta.get("calibration")
        summary.append(("calibration", _e(
            f"temperature {calibration['temperature']:.3f} fitted on the validation data "
            f"(validation ECE {calibration['ece_uncalibrated']:.4f} → {calibration['ece']:.4f})"
            if calibration else "none (temperature 1)"
        )))
    for role in ("train", "valid"):
        if sources.get(role) or hashes.get(role):
            summary.append((
                f"{role} data",
                f"<code>{_e(sources.get(role, '–'))}</code>, {_e(sizes.get(role, '?'))} utterances, "
                f"hash <code>{_e(hashes.get(role, '–'))}</code>",
            ))
    summary += [
        ("analysed data", analysed),
        ("analysed data hash", f"<code>{_e(data_hash)}</code>"),
    ]
    headline, details = _scores(metrics, constant_mae)
    config_rows = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in config.items())
    figure_html = "".join(
        f"<figure><h3>{_e(f.title)}</h3><img src=\"{_e(f.href)}\" alt=\"{_e(f.title)}\">"
        f"<figcaption>{_e(f.caption)}</figcaption></figure>"
        for f in figures
    )
    notes_html = "".join(f"<p class='note'>{_e(n)}</p>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>joyful report: {_e(run_dir.name or run_dir)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>joyful report: <code>{_e(run_dir)}</code></h1>
<h2>Run</h2>
{_kv_table(summary)}
<h2>Configuration</h2>
<table>{config_rows}</table>
<h2>Scores on the analysed data</h2>
{_kv_table(headline)}
{details}
{_fairness_html(fairness)}
<h2>Figures</h2>
{notes_html}{figure_html}
</body>
</html>
"""
