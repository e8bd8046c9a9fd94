"""Hyperparameter search on validation data with Optuna (TPE sampler, median pruning).

Every trial is a full training run of the given preset with a sampled change; its score
is the best validation value of the task's primary metric (weighted F1, over the
emotions for multilabel; MAE for regression, which the study minimises), reported epoch
by epoch so hopeless trials stop early. Records name the metric: ``valid_weighted_f1``,
``cv_weighted_f1``, ``fold_weighted_f1`` as they always have for classification (and
multilabel), ``valid_mae``, ``cv_mae``, ``fold_mae`` for regression. The study lives in a
SQLite file inside the output directory, so an interrupted search resumes where it
stopped and a finished one can be extended with more trials.
Test data is never looked at: the best trial's config is written as a JSON file for
``joyful train --config``, and should then be confirmed over several seeds (the spread
between seeds on IEMOCAP's 12 validation dialogues is about ±2 points).

With ``cv`` (``"session"`` or K, see :mod:`joyful.benchmark.folds`) train and valid are
pooled and each trial is scored by cross-validation instead: one model per fold, early
stopped on a slice of that fold's training dialogues, scored on the fold's held-out
dialogues; the trial's value is the mean primary metric over the folds (the CV estimate).
The running mean is reported fold by fold, so the pruner can stop a trial after its
first folds; ``jobs`` folds train at once in worker processes. The folds are written to
``folds.json``/``folds.csv`` and the CV setting to ``cv.json``: resuming a study with
another setting is refused, as for another base config.

With ``storage`` (an SQLAlchemy URL: ``sqlite:///search.db`` for workers on one machine,
``postgresql://user@host/db`` for several) the study lives in that database instead, and
any number of ``joyful tune`` workers with the same data, base config and ``--storage``
work on it together, each running its ``trials`` and taking the others' results into
account. The base config and CV setting are then kept in the study itself, so a worker
started with other settings is refused whichever machine it runs on. Parallel trials are
not repeatable (which worker draws what depends on timing), so the sampler is not seeded
and uses the "constant liar" strategy, which keeps workers from sampling the same point.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import socket
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from joyful.atomic import atomic_write_text
from joyful.benchmark.folds import FOLDS_FILE, CVSpec, Fold, make_folds, origins, pool, split, write_assignment
from joyful.config import JoyfulConfig, changed_fields
from joyful.data.label_forms import infer_task
from joyful.data.labels import resolve_label_set
from joyful.data.tasks import Task, get_task
from joyful.errors import JoyfulError
from joyful.io.readers import read_dialogues

STUDY_FILE = "study.sqlite"
CV_FILE = "cv.json"
WORKER = f"{socket.gethostname()}:{os.getpid()}"
SCHEMA_ATTEMPTS = 5
"""Recorded with each trial, so a shared study shows which worker ran it."""


def sample_changes(trial: Any) -> dict[str, Any]:
    """The search space: the levers the paper names (window, α, β) and the training ones."""
    window = trial.suggest_categorical("window", [2, 4, 6, 8, 10])
    return {
        "lr": trial.suggest_float("lr", 2e-4, 3e-3, log=True),
        "dropout": trial.suggest_float("dropout", 0.1, 0.6),
        "window_past": window,
        "window_future": window,
        "alpha": trial.suggest_float("alpha", 0.01, 0.3, log=True),
        "beta": trial.suggest_float("beta", 0.05, 1.0, log=True),
        "feature_mask_ratio": trial.suggest_float("feature_mask_ratio", 0.05, 0.4),
        "temperature": trial.suggest_float("temperature", 0.1, 0.5),
        "gnn_hidden": trial.suggest_categorical("gnn_hidden", [64, 100, 160]),
        "weight_decay": trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True),
        "class_weights": trial.suggest_categorical("class_weights", [False, True]),
    }


def tune(
    train: str | os.PathLike,
    valid: str | os.PathLike,
    out: str | os.PathLike,
    *,
    base: JoyfulConfig,
    trials: int,
    progress: bool = True,
    cv: CVSpec | None = None,
    jobs: int = 1,
    storage: str | None = None,
    study_name: str = "joyful",
) -> dict[str, Any]:
    """Run ``trials`` more trials (beyond those already in the study) and write ``best_config.json``.

    ``cv`` turns the objective into the cross-validated primary metric on the pooled train
    + valid data; ``jobs`` (with ``cv``) trains that many folds at once; ``storage`` is a
    database shared with other workers (default: ``study.sqlite`` in ``out``).
    """
    try:
        import optuna
    except ImportError:
        raise JoyfulError("hyperparameter search needs Optuna: pip install 'joyful[tune]'") from None
    from joyful.api import Joyful, integer_label_names

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise JoyfulError(f"--jobs must be a positive integer, not {jobs!r}")
    if jobs > 1 and cv is None:
        raise JoyfulError("--jobs trains the folds of a cross-validated search in parallel; it needs --cv")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats and the constant liar are marked experimental in Optuna; both are documented here
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # the training labels settle the task, hence the metric and the study's direction
    names = integer_label_names(base.label_set)
    raw_train = read_dialogues(str(train), role="train", int_label_names=names, task=base.task)
    task = get_task(infer_task(base.task, raw_train.labelled(), raw_train.source))
    metric = task.primary_metric
    shared = storage is not None
    study = optuna.create_study(
        study_name=study_name,
        storage=_open_storage(storage or f"sqlite:///{out / STUDY_FILE}", optuna),
        load_if_exists=True,
        direction=_direction(task),
        sampler=optuna.samplers.TPESampler(seed=None if shared else base.seed, constant_liar=shared),
        # with cv the steps are folds: a trial is compared with the others from its second fold on
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10 if cv is None else 1),
    )
    _check_study_setting(study, out, base, cv, storage)
    _check_direction(study, task, out, storage)
    # texts are encoded once here, not in every trial
    prep = Joyful(base)
    labels = resolve_label_set(base.label_set, raw_train, task.name)
    if cv is None:
        train_set = prep.prepare(raw_train, role="train", label_set=labels, progress=progress)
        raw_valid = read_dialogues(str(valid), role="valid", int_label_names=names, task=task.name)
        valid_set = prep.prepare(raw_valid, role="valid", label_set=labels, progress=progress)

        def objective(trial: Any) -> float:
            cfg = base.replace(**sample_changes(trial))

            def report(record) -> None:
                trial.report(record.valid[metric], record.epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

            trial.set_user_attr("worker", WORKER)
            clf = Joyful(cfg).fit(train_set, valid_set, progress=False, on_epoch=report)
            trial.set_user_attr("best_epoch", clf.result.best_epoch)
            return clf.result.best_valid[metric]

        study.optimize(objective, n_trials=trials, show_progress_bar=progress)
    else:
        raw_valid = read_dialogues(str(valid), role="valid", int_label_names=names, task=task.name)
        pooled = pool(raw_train, raw_valid)
        folds = make_folds([d.id for d in pooled], cv)
        _check_same_folds(study, out, folds)
        write_assignment(folds, out, {**cv.to_dict(), "scheme": cv.describe()}, origins(raw_train, raw_valid, pooled))
        prepared = prep.prepare(pooled, role="train", label_set=labels, progress=progress)
        parts = [split(prepared, fold) for fold in folds]
        with _FoldRunner(parts, jobs) as runner:
            study.optimize(_cv_objective(base, runner, optuna, metric), n_trials=trials, show_progress_bar=progress)
    return _write_outcome(study, base, out, cv, optuna, metric)


def _direction(task: Task) -> str:
    return "maximize" if task.higher_is_better else "minimize"


def _check_direction(study: Any, task: Task, out: Path, storage: str | None) -> None:
    """Optuna keeps a resumed study's direction whatever is asked, so a study of another task would run backwards."""
    stored = study.direction.name.lower()
    if stored != _direction(task):
        where = _without_password(storage) if storage else str(out)
        raise JoyfulError(f"{where}: holds a study that {stored}s its objective, but the {task.name} task's "
                          f"{task.primary_metric} must be {_direction(task)}d (were its trials run on other data?); "
                          "use a new --out" + (" or --study-name" if storage else ""))


def _open_storage(url: str, optuna: Any) -> Any:
    """The study database, or a one-line error naming it (without its password)."""
    shown = _without_password(url)
    if "://" not in url:
        raise JoyfulError(f"--storage {shown!r}: give a database URL, e.g. sqlite:///search.db or "
                          "postgresql://user@host/dbname")
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    attempt = 1
    while True:
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=60, grace_period=300)
        except ModuleNotFoundError as e:
            raise JoyfulError(f"--storage {shown}: the database driver {e.name!r} is not installed "
                              "(PostgreSQL: pip install 'joyful[postgres]')") from None
        except Exception as e:  # SQLAlchemy's connection and URL errors
            reason = _without_password(str(e).splitlines()[0])
            # Workers that start together on a new database race to create its tables; the
            # loser finds them made when it tries again.
            if attempt < SCHEMA_ATTEMPTS and any(m in reason for m in ("already exists", "locked", "UNIQUE")):
                time.sleep(0.5 * attempt)
                attempt += 1
                continue
            raise JoyfulError(f"--storage {shown}: cannot open the study database ({reason})") from None


def _without_password(text: str) -> str:
    """``scheme://user:secret@host`` as ``scheme://user:***@host``, for messages."""
    import re

    return re.sub(r"(://[^:/@\s]+):[^@/\s]+@", r"\1:***@", text)


def _setting(base: JoyfulConfig, cv: CVSpec | None) -> dict[str, Any]:
    """What the trials of one study must share (compared by :func:`changed_fields`: devices may differ)."""
    return {"base_config": base.to_dict(), "cv": _cv_setting(cv)}


def _check_study_setting(study: Any, out: Path, base: JoyfulConfig, cv: CVSpec | None, storage: str | None) -> None:
    """A study continues only with the base config and CV setting it was started with.

    They are kept in the study (so workers of a shared study agree) and, for the reader,
    in ``out``. A study made before they were kept in it is checked against ``out``'s files.
    """
    mine = _setting(base, cv)
    stored = {k: study.user_attrs[k] for k in mine if k in study.user_attrs}
    if not stored and (out / "base_config.json").exists() and storage is None:
        try:  # a study from before cv.json existed was a plain validation search
            cv_stored = json.loads((out / CV_FILE).read_text()) if (out / CV_FILE).exists() else _cv_setting(None)
        except (OSError, json.JSONDecodeError) as e:
            raise JoyfulError(f"{out / CV_FILE}: cannot read the study's cross-validation setting ({e})") from None
        stored = _setting(JoyfulConfig.from_json(out / "base_config.json"), None) | {"cv": cv_stored}
    where = _without_password(storage) if storage else str(out)
    if stored and changed_fields(mine["base_config"], stored["base_config"]):
        raise JoyfulError(f"{where}: holds a study of another base config; use a new --out" +
                          (" or --study-name" if storage else ""))
    elif stored and stored.get("cv", _cv_setting(None)) != mine["cv"]:
        def show(s: dict[str, Any]) -> str:
            return "no cross-validation" if s.get("cv") is None else ", ".join(f"{k} = {v}" for k, v in s.items())

        raise JoyfulError(f"{where}: holds a study made with {show(stored.get('cv', _cv_setting(None)))}, not {show(mine['cv'])}; "
                          "use a new --out" + (" or --study-name" if storage else ""))
    if not all(k in study.user_attrs for k in mine):
        for key, value in mine.items():
            study.set_user_attr(key, value)
    base.to_json(out / "base_config.json")
    atomic_write_text(out / CV_FILE, json.dumps(_cv_setting(cv), indent=1) + "\n")


def _check_same_folds(study: Any, out: Path, folds: list[Fold]) -> None:
    """A resumed cross-validated study must score its new trials on the folds of its old ones."""
    mine = [f.to_dict() for f in folds]
    digest = hashlib.sha256(json.dumps(mine, sort_keys=True).encode()).hexdigest()
    stored = study.user_attrs.get("folds_sha256")
    if stored is None:  # a new study, or one from before the folds were kept in it: its folds.json, if any
        try:
            same = json.loads((out / FOLDS_FILE).read_text())["folds"] == mine
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            same = True
        if same:
            study.set_user_attr("folds_sha256", digest)
    else:
        same = stored == digest
    if not same:
        raise JoyfulError(f"{out / FOLDS_FILE}: the study's earlier trials were scored on other folds (has the data "
                          "changed?); use a new --out")


def _cv_setting(cv: CVSpec | None) -> dict[str, Any]:
    return {"cv": None} if cv is None else cv.to_dict()


def _cv_objective(base: JoyfulConfig, runner: _FoldRunner, optuna: Any, metric: str):
    def objective(trial: Any) -> float:
        fields = base.replace(**sample_changes(trial)).to_dict()
        trial.set_user_attr("worker", WORKER)
        values: list[float] = []
        epochs: list[int] = []

        def record(result: dict[str, Any]) -> None:
            values.append(result[f"test_{metric}"])
            epochs.append(result["best_epoch"])
            trial.set_user_attr(f"fold_{metric}", list(values))
            trial.set_user_attr("fold_best_epoch", list(epochs))
            trial.report(sum(values) / len(values), len(values))

        for result in runner.run(fields):  # in fold order
            record(result)
            if runner.sequential and trial.should_prune():
                raise optuna.TrialPruned()
        return sum(values) / len(values)

    return objective


class _FoldRunner:
    """Trains one config on every fold: here one fold after the other, or in ``jobs`` worker processes."""

    def __init__(self, parts: list[dict[str, Any]], jobs: int) -> None:
        self.parts = parts
        self.sequential = jobs == 1
        self.executor: ProcessPoolExecutor | None = None
        if not self.sequential:
            self.executor = ProcessPoolExecutor(
                max_workers=min(jobs, len(parts)), mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init, initargs=(parts,),
            )

    def run(self, fields: dict[str, Any]):
        """Per fold, in fold order: ``{"test_<metric>", "best_epoch", "best_valid_<metric>"}`` (the primary metric)."""
        if self.executor is None:
            for part in self.parts:
                yield _fit_fold(fields, part)
            return
        futures = [self.executor.submit(_worker_fit, fields, k) for k in range(len(self.parts))]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()

    def __enter__(self) -> _FoldRunner:
        return self

    def __exit__(self, kind, error, tb) -> None:
        if self.executor is None:
            return
        if error is None:
            self.executor.shutdown(wait=True)
        else:  # interrupted or failed: stop the workers now
            from joyful.benchmark.grid import stop_workers

            stop_workers(self.executor)
        self.executor = None


_WORKER_PARTS: list[dict[str, Any]] = []


def _worker_init(parts: list[dict[str, Any]]) -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    _WORKER_PARTS[:] = parts


def _worker_fit(fields: dict[str, Any], k: int) -> dict[str, Any]:
    try:
        return _fit_fold(fields, _WORKER_PARTS[k])
    except JoyfulError as e:
        raise JoyfulError(str(e)) from None  # a plain JoyfulError always pickles back to the parent


def _fit_fold(fields: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Train on the fold's training part, early-stop on its slice, score its held-out part."""
    from joyful.api import Joyful

    clf = Joyful(JoyfulConfig.from_dict(fields)).fit(part["train"], part["valid"], progress=False)
    test = clf.evaluate(part["test"])
    metric = get_task(clf.task).primary_metric
    return {f"test_{metric}": test[metric], "best_epoch": clf.result.best_epoch,
            f"best_valid_{metric}": (clf.result.best_valid or {}).get(metric)}


def _write_outcome(
    study: Any, base: JoyfulConfig, out: Path, cv: CVSpec | None, optuna: Any, metric: str
) -> dict[str, Any]:
    best = study.best_trial
    best_cfg = base.replace(**sample_changes(optuna.trial.FixedTrial(best.params)))
    best_cfg.to_json(out / "best_config.json")
    score = f"valid_{metric}" if cv is None else f"cv_{metric}"
    rows = []
    for t in study.trials:
        row = {"trial": t.number, "state": t.state.name, score: t.value, "worker": t.user_attrs.get("worker")}
        if cv is not None:
            row |= {f"fold_{metric}": t.user_attrs.get(f"fold_{metric}"),
                    "fold_best_epoch": t.user_attrs.get("fold_best_epoch")}
        rows.append(row | t.params)
    atomic_write_text(out / "trials.json", json.dumps(rows, indent=1) + "\n")
    summary = {f"best_{score}": best.value, "best_trial": best.number, "trials": len(study.trials),
               "best_config": str(out / "best_config.json"), "params": best.params}
    if cv is not None:
        summary |= {"cv": cv.scheme, f"fold_{metric}": best.user_attrs.get(f"fold_{metric}")}
    return summary


__all__ = ["sample_changes", "tune"]
