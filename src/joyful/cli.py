"""The ``joyful`` command line: train, evaluate, predict and a self-contained demo.

Heavy libraries (PyTorch, sentence-transformers) are imported inside the commands, so
``joyful --help`` answers at once. Every error the user can fix is printed as one line
naming the file, dialogue and field, with exit status 2, and nothing half-written is
left behind.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="Multimodal emotion recognition in conversation with the Joyful model (EMNLP 2023).\n\n"
    "Data: JSONL dialogues, COGMEN/official Joyful pickles, DialogueGCN/MMGCN pickles or MELD CSVs; "
    "add #train, #dev or #test to pick a split of a multi-split file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataPath = Annotated[str, typer.Option(help="Data file, optionally with #split (e.g. features.pkl#test).")]
ModelDir = Annotated[Path, typer.Option("--model", help="Model directory written by `joyful train`.")]
DeviceOption = Annotated[Optional[str], typer.Option("--device", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps.")]
PrecisionOption = Annotated[Optional[str], typer.Option("--precision", help="fp32, or mixed precision: bf16 (CUDA or CPU), fp16 (CUDA).")]


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"joyful: error: {message}", err=True)
    raise typer.Exit(code)


def _guard(fn):
    """Turn the errors a user can act on into one line and a non-zero exit."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from joyful.errors import JoyfulError

        try:
            return fn(*args, **kwargs)
        except JoyfulError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            _fail("interrupted; the last checkpoint written (if any) is complete", 130)
        except MemoryError:
            _fail("out of memory; try a smaller --batch-size", 3)

    return wrapper


@app.command()
@_guard
def train(
    train: DataPath,
    out: Annotated[Path, typer.Option(help="Directory for the model, its config, metrics and history.")],
    valid: Annotated[Optional[str], typer.Option(help="Validation data for early stopping; a multi-split file gives its dev split.")] = None,
    preset: Annotated[str, typer.Option(help="iemocap6, iemocap4, meld, mosei-emotion, mosei-sentiment, mosi-sentiment, iemocap6-text, … or default.")] = "default",
    task: Annotated[Optional[str], typer.Option(help="classification, multilabel (CMU-MOSEI emotions), regression (sentiment) or auto (from the labels).")] = None,
    thresholds: Annotated[Optional[str], typer.Option(help="Multilabel: 'fixed' (0.5) or 'validation' (per emotion, best validation F1).")] = None,
    modalities: Annotated[Optional[str], typer.Option(help="Any of a, t, v, e.g. atv, at, t.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (same seed, same result on CPU).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs.")] = None,
    text_encoder: Annotated[Optional[str], typer.Option(help="sentence-transformers model name or directory for texts without features.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="JSON file of config fields, applied after the preset.")] = None,
    label_set: Annotated[Optional[str], typer.Option(help="iemocap6, iemocap4, meld7, mosei6, sentiment or auto.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Dialogues per mini-batch.")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Early-stopping patience in epochs.")] = None,
    window: Annotated[Optional[int], typer.Option(help="Past and future window of the graph; -1 = all.")] = None,
    gnn_layers: Annotated[Optional[int], typer.Option(help="Layers of the graph encoder.")] = None,
    views: Annotated[Optional[str], typer.Option(help="Augmentation pair, e.g. 'FM+EP,FM+GP'.")] = None,
    no_gcl: Annotated[bool, typer.Option("--no-gcl", help="Ablation: no graph contrastive learning.")] = False,
    no_fusion: Annotated[bool, typer.Option("--no-fusion", help="Ablation: plain concatenation instead of the fusion module.")] = False,
    official_augmentation: Annotated[bool, typer.Option(help="The public code's augmentations: 25% masking, 10% edge perturbation, no GP.")] = False,
    class_weights: Annotated[bool, typer.Option(help="Weight the loss by inverse class frequency.")] = False,
    text_context: Annotated[Optional[int], typer.Option(help="Earlier turns encoded with each utterance's text.")] = None,
    finetune_text_encoder: Annotated[bool, typer.Option(help="Fine-tune the text encoder on the training dialogues (with --text-context) first; the graph model trains on cross-fitted features (config finetune_folds).")] = False,
    causal: Annotated[bool, typer.Option(help="Past context only (future window 0, causal attention), for streaming with `joyful serve`.")] = False,
    modality_dropout: Annotated[Optional[float], typer.Option(help="Chance of hiding a present modality of an utterance while training, so missing modalities are handled well (e.g. 0.1).")] = None,
    ensemble: Annotated[Optional[int], typer.Option(help="Train N models with consecutive seeds that predict together (mean probability).")] = None,
    teacher: Annotated[Optional[list[Path]], typer.Option(help="A trained model (e.g. an --ensemble one) whose probabilities on the training dialogues the new model also learns (distillation: one model at inference); repeat for several.")] = None,
    teacher_ensemble: Annotated[Optional[int], typer.Option(help="Train an ensemble of N seeds first (kept in OUT/teacher), then the model distilled from it: the ensemble's gain in one model at inference.")] = None,
    distill_weight: Annotated[Optional[float], typer.Option(help="With --teacher or --teacher-ensemble: weight of the distillation term (default 1).")] = None,
    distill_temperature: Annotated[Optional[float], typer.Option(help="With --teacher or --teacher-ensemble: softmax temperature of teacher and student (default 1).")] = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train a Joyful model and write the best checkpoint (by validation weighted F1, or MAE for sentiment) to --out."""
    from joyful.api import Joyful
    from joyful.config import OFFICIAL_AUGMENTATION

    cfg = _base_config(preset, config)
    changes: dict = {}
    for name, value in {
        "modalities": modalities, "seed": seed, "epochs": epochs, "text_encoder": text_encoder, "label_set": label_set,
        "lr": lr, "batch_size": batch_size, "patience": patience, "gnn_layers": gnn_layers, "text_context": text_context,
        "ensemble": ensemble, "device": device, "precision": precision, "task": task, "thresholds": thresholds,
        "distill_weight": distill_weight, "distill_temperature": distill_temperature, "teacher_ensemble": teacher_ensemble,
    }.items():
        if value is not None:
            changes[name] = value
    if window is not None:
        changes.update(window_past=window, window_future=window)
    if views is not None:
        first, _, second = views.partition(",")
        changes.update(view1=first.strip(), view2=(second or first).strip())
    if no_gcl:
        changes["use_gcl"] = False
    if no_fusion:
        changes["fusion"] = "concat"
    if official_augmentation:
        changes.update(OFFICIAL_AUGMENTATION)
    if class_weights:
        changes["class_weights"] = True
    if finetune_text_encoder:
        changes["finetune_text_encoder"] = True
    if causal:
        changes.update(causal=True, window_future=0)
    if modality_dropout is not None:
        changes["modality_dropout"] = modality_dropout
    cfg = cfg.replace(**changes)
    from joyful.training import distributed

    if not distributed.launched_by_torchrun():
        clf = Joyful(cfg).fit(train, valid, out_dir=out, progress=not quiet, teacher=teacher or None)
    else:
        import torch.distributed

        from joyful.training.device import resolve_device

        ranks, device = distributed.start(resolve_device(cfg.device))
        try:
            clf = Joyful(cfg.replace(device=str(device))).fit(
                train, valid, out_dir=out, progress=not quiet, teacher=teacher or None
            )
        except torch.distributed.DistError as e:
            raise distributed.lost_peer(e) from None
        finally:
            distributed.stop()
        if not ranks.is_main:
            return
    best = clf.result.best_valid
    summary = {"model": str(out), "task": clf.task, "best_epoch": clf.result.best_epoch, "epochs_run": len(clf.result.history)}
    if best:
        summary.update({k: round(best[k], 4) for k in SUMMARY_METRICS if isinstance(best.get(k), float)})
    typer.echo(json.dumps(summary))


#: Validation scores the train command prints, whichever of them the task reports.
SUMMARY_METRICS = ("accuracy", "weighted_f1", "macro_f1", "micro_f1", "subset_accuracy", "mae", "corr", "acc2", "acc7")


def _load(model: Path, device: str | None, precision: str | None):
    """A saved model on the device and in the precision asked for (default: auto, fp32)."""
    from joyful.api import Joyful

    return Joyful.load(model, device=device or "auto", precision=precision or "fp32")


def _base_config(preset: str, config: Path | None):
    """The preset, with the fields of a ``--config`` JSON file applied over it."""
    from joyful.config import JoyfulConfig

    cfg = JoyfulConfig.preset(preset)
    if config is not None:
        cfg = JoyfulConfig.from_dict({**cfg.to_dict(), **_read_config_fields(config)})
    return cfg


def _read_config_fields(path: Path) -> dict:
    from joyful.errors import JoyfulError

    try:
        fields = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise JoyfulError(f"{path}: cannot read config ({e})") from None
    if not isinstance(fields, dict):
        raise JoyfulError(f"{path}: a config file holds one JSON object of config fields")
    return fields


@app.command()
@_guard
def evaluate(
    model: ModelDir,
    data: DataPath,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="Also draw the confusion matrix (per-emotion F1 bars; predicted against true scores) into this PNG file.")] = None,
    ci: Annotated[bool, typer.Option("--ci", help="95% intervals of every metric by a bootstrap over dialogues (JSON key `ci`).")] = False,
    resamples: Annotated[int, typer.Option(help="With --ci: bootstrap resamples.")] = 1000,
    groups: Annotated[Optional[str], typer.Option(help="Scores per group: 'speaker' (the speaker field), an attribute of the JSONL utterances or dialogues, or a column of --group-map; with the largest gap and its permutation p-value (JSON key `groups`).")] = None,
    group_map: Annotated[Optional[Path], typer.Option(help="With --groups KEY: a CSV with columns speaker,KEY or dialogue,speaker,KEY.")] = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
) -> None:
    """Score a model on labelled data with its task's metrics.

    Classification: accuracy, weighted/macro F1, per-class F1, confusion matrix. Multilabel:
    per-emotion F1, weighted accuracy and accuracy, micro/macro/weighted F1, subset
    accuracy. Regression: MAE, correlation, Acc-2 and F1 (with and without zeros), Acc-5, Acc-7.
    """
    from joyful.errors import JoyfulError
    from joyful.training.inference import PREDICTION_KEYS

    if group_map is not None and groups is None:
        raise JoyfulError("--group-map needs --groups KEY (the column of the map that holds the groups)")
    if resamples < 1:
        raise JoyfulError("--resamples must be at least 1")
    clf = _load(model, device, precision)
    pilot = ci or groups is not None
    seen = clf.prepare(data, role="test", label_set=clf.info.label_set, progress=False, encode_texts=False) if pilot else None
    if groups is not None:  # an unknown KEY or a bad map is refused before the model runs
        from joyful.analysis.fairness import read_group_map, utterance_groups

        members = utterance_groups(seen, groups, None if group_map is None else read_group_map(group_map, groups))
    # the data read above, not the file again (``seen`` keeps its texts unencoded; evaluate encodes them)
    metrics = clf.evaluate(seen if pilot else data, progress=not as_json, with_predictions=plot is not None or pilot)
    if plot is not None:
        from joyful.analysis import plots

        task = metrics.get("task", "classification")
        if task == "multilabel":
            plots.plot_per_emotion_f1(metrics, plot)
        elif task == "regression":
            plots.plot_regression_scatter(metrics["y_true"], metrics["y_pred"], metrics, plot)
        else:
            plots.plot_confusion_matrix(metrics, plot)
    if pilot:
        from joyful.analysis import fairness, intervals

        if ci:
            metrics["ci"] = intervals.bootstrap_intervals(intervals.scored(metrics, seen), n_resamples=resamples)
        if groups is not None:
            metrics["groups"] = fairness.evaluated_groups(seen, metrics, members, groups)
    for key in PREDICTION_KEYS:
        metrics.pop(key, None)
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    _print_metrics(metrics)
    if pilot:
        from rich.console import Console
        from rich.table import Table

        console = Console()
        if "ci" in metrics:
            table = Table(title=f"95% intervals (bootstrap over dialogues, {resamples} resamples)")
            for column in ("metric", "low", "high"):
                table.add_column(column, justify="left" if column == "metric" else "right")
            for name, interval in metrics["ci"].items():
                table.add_row(name, *(("n/a", "n/a") if interval is None else (f"{x:.4f}" for x in interval)))
            console.print(table)
        if "groups" in metrics:
            header, rows, line = fairness.table_rows(metrics["groups"])
            table = Table(title=f"per group ({groups})")
            for i, column in enumerate(header):
                table.add_column(column, justify="left" if i == 0 else "right")
            for row in rows:
                table.add_row(*row)
            console.print(table)
            console.print(line)


def _print_metrics(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    task = metrics.get("task", "classification")
    if task == "regression":
        corr = "n/a" if metrics["corr"] is None else f"{metrics['corr']:.4f}"
        console.print(
            f"utterances {metrics['n_utterances']}   MAE {metrics['mae']:.4f}   corr {corr}   "
            f"Acc-2 {metrics['acc2']:.4f}   F1 {metrics['f1']:.4f}   Acc-2 (non-0) {metrics['acc2_non0']:.4f}   "
            f"F1 (non-0) {metrics['f1_non0']:.4f}   Acc-5 {metrics['acc5']:.4f}   Acc-7 {metrics['acc7']:.4f}"
        )
        return
    if task == "multilabel":
        console.print(
            f"utterances {metrics['n_utterances']}   weighted F1 {metrics['weighted_f1']:.4f}   "
            f"micro F1 {metrics['micro_f1']:.4f}   macro F1 {metrics['macro_f1']:.4f}   "
            f"subset accuracy {metrics['subset_accuracy']:.4f}"
        )
        table = Table(title="per emotion")
        for column in ("emotion", "present", "threshold", "weighted accuracy", "accuracy", "F1"):
            table.add_column(column, justify="left" if column == "emotion" else "right")
        for name, e in metrics["per_emotion"].items():
            table.add_row(
                name, str(e["positives"]), f"{e['threshold']:.2f}", f"{e['weighted_accuracy']:.3f}",
                f"{e['accuracy']:.3f}", f"{e['f1']:.3f}",
            )
        console.print(table)
        return
    console.print(
        f"utterances {metrics['n_utterances']}   accuracy {metrics['accuracy']:.4f}   "
        f"weighted F1 {metrics['weighted_f1']:.4f}   macro F1 {metrics['macro_f1']:.4f}"
    )
    table = Table(title="confusion matrix (rows: true, columns: predicted) and per-class F1")
    table.add_column("true \\ pred")
    for name in metrics["labels"]:
        table.add_column(name, justify="right")
    table.add_column("F1", justify="right")
    for name, row in zip(metrics["labels"], metrics["confusion_matrix"], strict=True):
        table.add_row(name, *map(str, row), f"{metrics['per_class_f1'][name]:.3f}")
    console.print(table)


@app.command()
@_guard
def predict(
    model: ModelDir,
    data: Annotated[Optional[str], typer.Option(help="Dialogues to label (any data format), optionally with #split.")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="Or a manifest of recordings (see `joyful extract`): features are extracted as the model's training data was, then labelled.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="JSONL file to write (standard output if omitted).")] = None,
    explain: Annotated[bool, typer.Option(help="Add per utterance the contribution of each modality and the most influential context utterances.")] = False,
    top_k: Annotated[int, typer.Option(help="Context utterances listed per explanation.")] = 3,
    workers: Annotated[int, typer.Option(help="Worker processes for feature extraction (--manifest).")] = 2,
    abstain_below: Annotated[Optional[float], typer.Option(help="Mark predictions whose confidence is below this \"uncertain\": true (classification, multilabel).")] = None,
    target_accuracy: Annotated[Optional[float], typer.Option(help="Or: choose that threshold on the model's validation outputs so the predictions kept are this accurate.")] = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
) -> None:
    """Label every utterance: one JSON line each with dialogue, index, speaker, label, probabilities, confidence."""
    from joyful.analysis.selective import abstention_threshold
    from joyful.api import write_predictions
    from joyful.errors import JoyfulError

    if (data is None) == (manifest is None):
        raise JoyfulError("give either --data (dialogues) or --manifest (recordings)")
    clf = _load(model, device, precision)
    # refuses options the model cannot honour before any extraction or encoding
    threshold = abstention_threshold(clf.task, clf.info.extra.get("validation_outputs"), abstain_below, target_accuracy)
    failed = 0
    if manifest is not None:
        from joyful.extract.predict import extract_for_model

        dialogues, failed = extract_for_model(clf, manifest, workers=workers, progress=True)
        data = dialogues
    rows = clf.predict(data, progress=out is not None, explain=explain, top_k=top_k, abstain_below=threshold)
    if out is None:
        sys.stdout.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    else:
        write_predictions(rows, out)
        typer.echo(f"wrote {len(rows)} predictions to {out}", err=True)
    if failed:
        typer.echo(f"joyful: {failed} media file(s) could not be read; their utterances were labelled without them", err=True)
        raise typer.Exit(1)


@app.command()
@_guard
def monitor(
    store: Annotated[str, typer.Option(help="The store `joyful serve` kept its predictions in (a SQLite file or a postgresql:// URL).")],
    model: ModelDir,
    out: Annotated[Optional[Path], typer.Option(help="JSON file to write (standard output if omitted).")] = None,
    abstain_below: Annotated[Optional[float], typer.Option(help="The threshold the service ran with (for the reference's uncertain rate).")] = None,
    target_accuracy: Annotated[Optional[float], typer.Option(help="Or the target accuracy it ran with.")] = None,
    drift_threshold: Annotated[float, typer.Option(help="PSI past which a statistic counts as shifted (0.2: the usual 'significant shift').")] = 0.2,
    drift_window: Annotated[int, typer.Option(help="Last predictions compared with the model's validation data.")] = 500,
) -> None:
    """Drift report of the predictions a service kept, as GET /monitor answers: PSI per statistic and an alert."""
    from joyful.analysis.selective import abstention_threshold
    from joyful.corrections import CorrectionStore
    from joyful.storage import exists
    from joyful.errors import JoyfulError
    from joyful.monitoring import Reference, drift_report
    from joyful.training.checkpoint import load_checkpoint

    if not exists(store):
        raise JoyfulError(f"{store}: no such store (`joyful serve --store` creates one)")
    if drift_window < 1 or not drift_threshold > 0:
        raise JoyfulError("--drift-window must be at least 1 and --drift-threshold positive")
    info = load_checkpoint(model)[1]
    saved = info.extra.get("validation_outputs")
    threshold = abstention_threshold(info.task, saved, abstain_below, target_accuracy)
    reference = Reference.from_validation(saved, info.task, info.label_set.labels, info.config.modality_order, threshold)
    with CorrectionStore(store) as db:
        report = drift_report(db.recent_predictions(drift_window), reference, threshold=drift_threshold)
    text = json.dumps(report, indent=2)
    if out is None:
        typer.echo(text)
    else:
        from joyful.atomic import atomic_write_text

        atomic_write_text(out, text + "\n")
        typer.echo(f"wrote the drift report to {out} (alert: {str(report['alert']).lower()})", err=True)


@app.command()
@_guard
def finetune(
    model: ModelDir,
    out: Annotated[Path, typer.Option(help="Directory for the adapted model (the original is left as it is).")],
    corrections: Annotated[Optional[str], typer.Option(help="Correction store written by `joyful serve` or `joyful correct` (a SQLite file or a postgresql:// URL); only dialogues shared with consent 'train' are used.")] = None,
    data: Annotated[Optional[str], typer.Option(help="Or/and a small labelled dataset to adapt to (domain adaptation).")] = None,
    replay: Annotated[Optional[str], typer.Option(help="Original training data replayed so old classes are not forgotten (default: the model's training data, if still there).")] = None,
    valid: Annotated[Optional[str], typer.Option(help="Validation data scored before and after (default: the model's validation data, if still there).")] = None,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = 15,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate (default: a third of the model's).")] = None,
    tolerance: Annotated[float, typer.Option(help="Largest accepted loss in the validation score when choosing the epoch: a drop of weighted F1, or a rise of MAE for a regression model; measured from the first model of a line of adaptations (a model already fine-tuned keeps that score), so repeated rounds never lose more in all.")] = 0.01,
    label_map: Annotated[Optional[str], typer.Option(help="Rename --data's labels to the model's as they are read: old=new,... or a JSON file {\"old\": \"new\"}; labels it does not name become unlabelled context.")] = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Adapt a model to human corrections or on-site data, with replay; print validation scores before and after.

    The printed JSON names its metrics: agreement with the new labels (`new_metric`:
    accuracy; label_agreement, the mean per-label accuracy, for a multilabel model; mae for
    a regression model) and the validation score (`valid_metric`: weighted_f1, or mae).
    """
    import os

    from joyful.api import as_dialogue_set, integer_label_names
    from joyful.data import label_map as label_maps
    from joyful.data.schema import DialogueSet
    from joyful.errors import JoyfulError
    from joyful.io.readers import parse_spec
    from joyful.training.adapt import adapt, save_adapted, stored_corrections

    if corrections is None and data is None:
        raise JoyfulError("give --corrections (a correction store) and/or --data (labelled dialogues)")
    if label_map is not None and data is None:
        raise JoyfulError("--label-map renames the labels of --data; corrections already use the model's labels")
    mapping = label_maps.parse(label_map) if label_map is not None else None
    clf = _load(model, device, precision)
    new = []
    if corrections is not None:
        new += stored_corrections(corrections).dialogues
    if data is not None:
        site = data
        if mapping is not None:
            names = integer_label_names(clf.info.label_set.name)
            site = label_maps.apply(as_dialogue_set(data, role="train", int_label_names=names, task=clf.info.task), mapping)
        new += clf.prepare(site, role="train", label_set=clf.info.label_set, progress=not quiet).dialogues
    sources = clf.info.extra.get("data_source") or {}

    def default(given: str | None, role: str) -> str | None:
        if given is not None or not sources.get(role):
            return given
        return sources[role] if os.path.exists(parse_spec(sources[role])[0]) else None

    replay, valid = default(replay, "train"), default(valid, "valid")
    adapted, report = adapt(
        clf, DialogueSet(new, str(corrections or data)), replay=replay, valid=valid,
        epochs=epochs, lr=lr, tolerance=tolerance, progress=not quiet,
    )
    save_adapted(adapted, model, out)
    if valid is not None and report.best_epoch == 0:
        metric = report.valid_metric.replace("weighted_f1", "weighted F1").replace("mae", "MAE")
        typer.echo(
            f"joyful: warning: no epoch agreed better with the new labels ({report.new_metric}) while keeping "
            f"validation {metric} within {tolerance} of the {'first model of its line of adaptations' if report.anchored else 'original model'}'s; "
            f"{out} holds the given model unchanged",
            err=True,
        )
    typer.echo(json.dumps({"model": str(out), "replay": replay, "valid": valid, **report.summary()}))


@app.command()
@_guard
def demo(
    out: Annotated[Path, typer.Option(help="Directory for the generated data, the model and the predictions.")] = Path("joyful-demo"),
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 25,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 24,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    task: Annotated[str, typer.Option(help="classification (IEMOCAP-like dialogues), or on CMU-MOSEI-shaped videos: multilabel (six emotions) or regression (sentiment in [-3, 3]).")] = "classification",
) -> None:
    """Generate a small three-modality dataset with a planted signal, then train, evaluate and predict."""
    from joyful.demo import run_demo

    run_demo(out, task=task, epochs=epochs, seed=seed, progress=not quiet)


@app.command()
@_guard
def benchmark(
    config: Annotated[Path, typer.Option(help="Grid file (TOML or JSON): data, presets × modalities × ablations × seeds.")],
    out: Annotated[Optional[Path], typer.Option(help="Results directory (default: next to the grid file, named after it).")] = None,
    jobs: Annotated[int, typer.Option(help="Runs (cell, fold, seed) trained at once in worker processes; 1 = one after the other in this process.")] = 1,
    device: DeviceOption = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Run a grid of training runs; write mean ± std tables and significance tests. Reruns skip finished runs."""
    from joyful.benchmark.grid import run_grid

    typer.echo(f"results in {run_grid(config, out, progress=not quiet, jobs=jobs, device=device)}")


@app.command()
@_guard
def tune(
    train: DataPath,
    valid: Annotated[str, typer.Option(help="Validation data: the only data the search scores (with --cv: pooled with --train).")],
    out: Annotated[Path, typer.Option(help="Directory for the study (resumable), trials.json and best_config.json.")],
    trials: Annotated[int, typer.Option(help="Trials to run (added to those already in --out).")] = 20,
    preset: Annotated[str, typer.Option(help="Preset the search starts from.")] = "default",
    config: Annotated[Optional[Path], typer.Option(help="JSON file of config fields applied after the preset (fixed during the search).")] = None,
    cv: Annotated[Optional[str], typer.Option(help="Score trials by cross-validation on train + valid pooled: 'session' (leave one IEMOCAP session out) or a number of folds K.")] = None,
    cv_valid_fraction: Annotated[Optional[float], typer.Option(help="With --cv: share of each fold's training dialogues used for early stopping (default 0.1).")] = None,
    jobs: Annotated[int, typer.Option(help="With --cv: folds trained at once in worker processes.")] = 1,
    storage: Annotated[Optional[str], typer.Option(help="Database shared by several workers (each a `joyful tune` with the same data and settings): sqlite:///FILE.db on one machine, postgresql://USER@HOST/DB across machines. Default: OUT/study.sqlite, this worker only.")] = None,
    study_name: Annotated[str, typer.Option(help="Name of the study in --storage (several studies can share one database).")] = "joyful",
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Search learning rate, dropout, window, α, β, masking, τ, width, weight decay, class weights on validation (Optuna)."""
    from joyful.benchmark.folds import parse_cv
    from joyful.benchmark.tune import tune as run_tune
    from joyful.errors import JoyfulError

    if cv is None and cv_valid_fraction is not None:
        raise JoyfulError("--cv-valid-fraction applies only with --cv")
    spec = parse_cv(cv, cv_valid_fraction)
    cfg = _base_config(preset, config)
    cfg = cfg.replace(**{k: v for k, v in {"device": device, "precision": precision}.items() if v is not None})
    result = run_tune(
        train, valid, out, base=cfg, trials=trials, progress=not quiet, cv=spec, jobs=jobs, storage=storage,
        study_name=study_name,
    )
    typer.echo(json.dumps(result))


@app.command()
@_guard
def report(
    run: Annotated[Path, typer.Option(help="Model directory written by `joyful train` (or by a benchmark run).")],
    data: Annotated[Optional[str], typer.Option(help="Labelled data to analyse (default: the run's validation data).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="HTML file to write (default: RUN/report.html).")] = None,
    groups: Annotated[Optional[str], typer.Option(help="Also a per-group table, as `evaluate --groups KEY` gives.")] = None,
    group_map: Annotated[Optional[Path], typer.Option(help="With --groups KEY: a CSV with columns speaker,KEY or dialogue,speaker,KEY.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Write an HTML report with figures: confusion matrix (per-emotion F1; scatter and residuals), training curves,
    reliability diagram, risk-coverage curve, t-SNE; with --groups a per-group table."""
    from joyful.analysis.report import write_report

    path = write_report(run, data=data, out=out, progress=not quiet, groups=groups, group_map=group_map)
    typer.echo(f"report: {path}")


def _register_tool_commands() -> None:
    """Commands that live with their subsystem (cheap to import: their heavy imports run inside)."""
    from joyful.extract.command import extract_command
    from joyful.service.commands import (
        audit_command,
        correct_command,
        serve_command,
        token_create_command,
        token_list_command,
        token_revoke_command,
    )

    app.command("extract")(_guard(extract_command))
    app.command("serve")(_guard(serve_command))
    app.command("correct")(_guard(correct_command))
    tokens = typer.Typer(help="API tokens of `joyful serve`: create, list, revoke.", no_args_is_help=True)
    tokens.command("create")(_guard(token_create_command))
    tokens.command("list")(_guard(token_list_command))
    tokens.command("revoke")(_guard(token_revoke_command))
    app.add_typer(tokens, name="token")
    app.command("audit")(_guard(audit_command))


_register_tool_commands()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one plain line, like errors, not Python's file-and-line form."""
    typer.echo(f"joyful: warning: {message}", err=True)


def main() -> None:
    import warnings

    warnings.showwarning = _show_warning
    app()


if __name__ == "__main__":
    main()
