"""Training the members of a model (one, or a seed ensemble) and keeping its record as it goes.

Each member is trained by the architecture's fit function; the history is written to
``history.csv`` after every epoch, logged to TensorBoard, and drawn as training curves
when training ends or is interrupted; the checkpoint is written at every improvement of
the first member and after every later member, so an interrupted run keeps the best
model (or ensemble) finished so far. With validation data, the finished model is then
calibrated (:mod:`joyful.training.calibration`), its multilabel thresholds chosen, and
what it serves on validation recorded, before the checkpoint is written once more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from joyful.analysis.plots import plot_training_curves
from joyful.atomic import atomic_write_csv
from joyful.batching import EncodedDialogue
from joyful.config import JoyfulConfig
from joyful.model import JoyfulModel
from joyful.nn.context_lr import ContextLogisticRegression, fit_context_lr
from joyful.training.calibration import calibrate, validation_outputs
from joyful.training.checkpoint import ModelInfo
from joyful.training.ensemble import EnsembleModel
from joyful.training.inference import evaluate_encoded
from joyful.training.loop import EpochRecord, TrainResult, train
from joyful.training.seeding import seed_everything
from joyful.training.tensorboard_log import TensorBoardLogger
from joyful.training.thresholds import choose_thresholds

Model = JoyfulModel | ContextLogisticRegression | EnsembleModel


def build_model(
    config: JoyfulConfig, widths: dict[str, int], n_classes: int, n_speakers: int, task: str = "classification"
) -> JoyfulModel | ContextLogisticRegression:
    """The network ``config.architecture`` names (the graph models, or the linear baseline), with ``task``'s head."""
    if config.architecture == "context-lr":
        return ContextLogisticRegression(config, widths, n_classes, n_speakers, task)
    return JoyfulModel(config, widths, n_classes, n_speakers, task)


def train_members(
    config: JoyfulConfig,
    encoded_train: Sequence[EncodedDialogue],
    encoded_valid: Sequence[EncodedDialogue] | None,
    info: ModelInfo,
    device: torch.device,
    *,
    publish: Callable[[Model], None],
    save: Callable[[], None] | None,
    out_dir: Path | None,
    progress: bool = True,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train ``config.ensemble`` members with seeds ``seed``, ``seed+1``, …; return the model's result.

    ``publish(model)`` hands over the current model (the first member, then the ensemble
    of the members finished so far); ``save()`` writes it with ``info``, whose ``extra``
    gets the best epoch, validation scores and members.
    """
    labels = info.label_set.labels
    members: list[Model] = []
    results: list[TrainResult] = []
    history: list[EpochRecord] = []
    tensorboard = TensorBoardLogger(out_dir / "tensorboard" if out_dir is not None else None)

    def checkpoint(epoch: int, valid: dict | None) -> None:
        info.extra.update(best_epoch=epoch, valid_metrics=valid)
        if save is not None:
            save()

    def after_epoch(record: EpochRecord) -> None:
        if config.ensemble > 1:
            record.member = len(members)
        history.append(record)
        tensorboard.log_epoch(record, step=len(history))
        if out_dir is not None:
            atomic_write_csv(out_dir / "history.csv", [r.row() for r in history])
        if on_epoch is not None:
            on_epoch(record)

    ensemble_valid: dict | None = None
    current: Model | None = None  # the model published last
    try:
        for k in range(config.ensemble):  # members differ only in their seed
            member_config = config.replace(seed=config.seed + k)
            seed_everything(member_config.seed)
            member = build_model(member_config, info.widths, len(labels), info.n_speakers, info.task).to(device)
            if not members:
                current = member
                publish(member)
                info.extra["ensemble_members"] = 1
            fit = fit_context_lr if config.architecture == "context-lr" else train
            results.append(fit(
                member, encoded_train, encoded_valid, labels,
                # later members are checkpointed once finished, as part of the ensemble
                on_improvement=checkpoint if not members else None, on_epoch=after_epoch, progress=progress,
            ))
            member.config = config
            members.append(member)
            if len(members) > 1:  # an interrupted run keeps the ensemble of the members finished so far
                current = ensemble = EnsembleModel(members)
                publish(ensemble)
                info.extra["ensemble_members"] = len(members)
                info.extra["members"] = [
                    {"seed": config.seed + j, "best_epoch": r.best_epoch, "valid_metrics": r.best_valid}
                    for j, r in enumerate(results)
                ]
                ensemble_valid = (
                    evaluate_encoded(ensemble, encoded_valid, labels, config.batch_size) if encoded_valid else None
                )
                checkpoint(results[0].best_epoch, ensemble_valid)
        if encoded_valid:
            final_valid = finish(config, current, encoded_valid, info)
            if len(members) == 1:
                results[0].best_valid = final_valid
            else:
                ensemble_valid = final_valid
            checkpoint(results[0].best_epoch, final_valid)
    finally:
        tensorboard.close()
        if out_dir is not None and history:  # also after an interruption: the curves so far
            first = [r.row() for r in history if r.member in (None, 0)]
            kept = results[0].best_epoch if results else None
            plot_training_curves(first, out_dir / "training_curves.png", best_epoch=kept or None)
    if config.ensemble == 1:
        return results[0]
    return TrainResult(
        best_epoch=results[0].best_epoch, best_valid=ensemble_valid, history=history,
        stopped_early=all(r.stopped_early for r in results),
    )


def finish(config: JoyfulConfig, model: Model, encoded_valid: Sequence[EncodedDialogue], info: ModelInfo) -> dict:
    """The last steps on validation data, in the order each needs: temperature, thresholds, what was served.

    Thresholds are chosen on the calibrated probabilities, as those are what they are
    applied to. ``info.extra`` gets ``calibration`` (when ``config.calibrate``), ``thresholds``
    (multilabel, ``thresholds: validation``) and ``validation_outputs``; returns the final
    validation metrics.
    """
    labels, batch_size = info.label_set.labels, config.batch_size
    if config.calibrate and info.task != "regression":
        info.extra["calibration"] = calibrate(model, encoded_valid, labels, batch_size)
    if info.task == "multilabel" and config.thresholds == "validation":
        scored = evaluate_encoded(model, encoded_valid, labels, batch_size, with_predictions=True)
        info.extra["thresholds"] = choose_thresholds(np.array(scored["y_true"]), np.array(scored["y_prob"]))
    thresholds = info.extra.get("thresholds")
    info.extra["validation_outputs"] = validation_outputs(model, encoded_valid, labels, batch_size, thresholds)
    return evaluate_encoded(model, encoded_valid, labels, batch_size, thresholds=thresholds)
