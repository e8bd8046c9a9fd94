"""Adapting a trained model to human corrections or a small on-site dataset, without forgetting.

Fine-tuning only on a handful of corrected utterances would pull the model towards them
and away from everything else (catastrophic forgetting: classes absent from the
corrections fade). So each epoch mixes the new dialogues with a replay sample of the
original training dialogues, the learning rate is lowered, and the epoch kept is the one
that agrees best with the new labels among those whose validation score (the task's
primary metric: weighted F1, or MAE for a regression model) is no more than
``tolerance`` worse than the original model's. The original weights compete as epoch 0:
when no epoch agrees better within that tolerance, the original model is kept (and the
report says so) rather than an epoch that forgot. Scores before and after are reported.
New weights are then calibrated again on the validation data, as after training (the
temperature, a multilabel model's thresholds, and the validation outputs that
``--target-accuracy`` and the drift monitor take as their reference).

The floor is anchored at the first model of a line of adaptations, not at the model
given: an adapted model keeps in its meta (``adaptation_anchor``) the validation score of
the model its line started from, with the hash of the validation data it was measured
on, and adapting it again on the same validation data holds every round to that score
minus ``tolerance``. Otherwise each round could lose ``tolerance`` anew, and three rounds
of corrections three points. With other validation data the line starts again from the
model given.

Agreement with the new labels is, per task (:data:`NEW_LABEL_METRIC`): accuracy; for a
multilabel model the mean over labels of per-label accuracy, rather than subset accuracy,
because a correction usually fixes one emotion of six and should count when only that
one comes right (subset accuracy moves only when all six are right, so on a few
corrections it rarely tells epochs apart); for a regression model the MAE, used negated
so that higher is better. Decisions use the model's thresholds, which are kept.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from joyful.api import DataLike, Joyful
from joyful.batching import EncodedDialogue, encode_dialogues
from joyful.data.schema import DialogueSet
from joyful.data.tasks import Task, get_task
from joyful.errors import DataError, JoyfulError
from joyful.training.inference import evaluate_encoded, predict_probabilities
from joyful.training.loop import train
from joyful.training.members import finish

#: The agreement with the new labels each task reports (higher is better, but for MAE).
NEW_LABEL_METRIC = {"classification": "accuracy", "multilabel": "label_agreement", "regression": "mae"}
#: Added to the selection score of an epoch below the validation floor. Every acceptable
#: epoch scores at least -6 - 0.006 (a MAE on [-3, 3] is at most 6), so any epoch under
#: the floor ranks below all of them, and epochs under it stay ordered by validation score.
_BELOW_FLOOR = -10.0


@dataclass
class AdaptationReport:
    """What adaptation did, measured before and after, for the CLI and the service."""

    n_new_dialogues: int
    n_new_labels: int
    n_replay_dialogues: int
    task: str
    new_before: float
    """The agreement with the new labels (:data:`NEW_LABEL_METRIC` of the task) before adapting."""
    new_after: float
    valid_before: dict | None = None
    valid_after: dict | None = None
    best_epoch: int = 0
    """0: no epoch beat the original model, which is kept unchanged."""
    valid_floor: float | None = None
    """The lowest validation selection score an epoch may have (the anchor's minus the tolerance)."""
    anchored: bool = False
    """Whether the floor comes from an earlier model of the line (see the module docstring)."""
    history: list[dict] = field(default_factory=list)

    @property
    def new_metric(self) -> str:
        return NEW_LABEL_METRIC[self.task]

    @property
    def valid_metric(self) -> str:
        return get_task(self.task).primary_metric

    @property
    def new_accuracy_before(self) -> float:
        """A classification report's ``new_before``, under the name the summary gives it."""
        return self._accuracy(self.new_before)

    @property
    def new_accuracy_after(self) -> float:
        return self._accuracy(self.new_after)

    def _accuracy(self, value: float) -> float:
        if self.task != "classification":
            raise AttributeError(f"a {self.task} report has new_before/new_after ({self.new_metric}), not accuracy")
        return value

    def summary(self) -> dict:
        """Keys name their metrics: ``new_<agreement>_before``, ``valid_<primary metric>_before`` and the ``_after`` pair."""

        def valid(m: dict | None) -> float | None:
            return None if m is None else round(m[self.valid_metric], 4)

        new, primary = self.new_metric, self.valid_metric
        return {
            "task": self.task,
            "new_dialogues": self.n_new_dialogues,
            "new_labels": self.n_new_labels,
            "replay_dialogues": self.n_replay_dialogues,
            "new_metric": new,
            f"new_{new}_before": round(self.new_before, 4),
            f"new_{new}_after": round(self.new_after, 4),
            "valid_metric": primary,
            f"valid_{primary}_before": valid(self.valid_before),
            f"valid_{primary}_after": valid(self.valid_after),
            # the floor in the metric's own units: the lowest weighted F1, or the highest MAE, accepted
            f"valid_{primary}_limit": None if self.valid_floor is None else round(
                self.valid_floor if get_task(self.task).higher_is_better else -self.valid_floor, 4),
            "anchored": self.anchored,
            "best_epoch": self.best_epoch,
            "kept_original": self.best_epoch == 0,
        }


def _new_label_agreement(clf: Joyful, dialogues: list[EncodedDialogue]) -> float:
    """The task's agreement with the labelled utterances of ``dialogues``, higher better (MAE comes negated)."""
    task = get_task(clf.info.task)
    outputs = np.concatenate(predict_probabilities(clf.model, dialogues, clf.config.batch_size))
    y = np.concatenate([d.label.numpy() for d in dialogues])
    known = np.concatenate([task.labelled(d.label).numpy() for d in dialogues])
    decided, y = task.decide(outputs[known], clf.thresholds), y[known]
    if task.name == "regression":
        return -float(np.abs(decided - y).mean())
    return float((decided == y).mean())  # multilabel: over every (utterance, label) cell


def _reported(task: Task, agreement: float) -> float:
    """An agreement as the report gives it: MAE positive."""
    return -agreement if task.name == "regression" else agreement


def adapt(
    clf: Joyful,
    new: DataLike,
    *,
    replay: DataLike | None = None,
    valid: DataLike | None = None,
    epochs: int = 15,
    lr: float | None = None,
    replay_per_new: int = 4,
    tolerance: float = 0.01,
    progress: bool = True,
) -> tuple[Joyful, AdaptationReport]:
    """A copy of ``clf`` fine-tuned on ``new`` (with ``replay``), chosen on ``valid``; ``clf`` is unchanged.

    ``new`` holds the corrected or on-site dialogues; utterances without a label stay in
    the graph as context and are not trained on. Each epoch sees every new dialogue
    ``replay_per_new`` times over (so a few corrections are not drowned out) beside up to
    ``replay_per_new`` × as many replayed training dialogues, drawn once with the model's
    seed. ``lr`` defaults to a third of the model's training learning rate. ``tolerance``
    is in the units of the task's primary metric: weighted F1 may fall, or MAE rise, by that much.
    """
    clf._require_model()
    labels, task = clf.info.label_set, get_task(clf.info.task)
    new_set = clf.prepare(new, role="train", label_set=labels, progress=progress)
    if not new_set.labelled():
        raise DataError(new_set.source, "no labelled or corrected utterance to adapt to", field="label")
    widths, order = clf.info.widths, clf.config.modality_order

    def encoded(data: DialogueSet) -> list[EncodedDialogue]:
        return encode_dialogues(data, order, labels, widths, task)

    enc_new = encoded(new_set)
    enc_replay: list[EncodedDialogue] = []
    if replay is not None:
        enc_replay = encoded(clf.prepare(replay, role="train", label_set=labels, progress=progress))
        rng = np.random.default_rng(clf.config.seed)
        keep = rng.permutation(len(enc_replay))[: replay_per_new * replay_per_new * len(enc_new)]
        enc_replay = [enc_replay[i] for i in sorted(keep)]
    enc_valid, valid_hash = None, None
    if valid is not None:
        valid_set = clf.prepare(valid, role="valid", label_set=labels, progress=progress)
        enc_valid, valid_hash = encoded(valid_set), valid_set.data_hash()

    def valid_metrics(model) -> dict:
        return evaluate_encoded(model, enc_valid, labels.labels, clf.config.batch_size, thresholds=clf.thresholds)

    before = _new_label_agreement(clf, enc_new)
    report = AdaptationReport(
        n_new_dialogues=len(enc_new),
        n_new_labels=int(sum(task.labelled(d.label).sum() for d in enc_new)),
        n_replay_dialogues=len(enc_replay),
        task=task.name,
        new_before=_reported(task, before),
        new_after=0.0,
    )
    if enc_valid:
        report.valid_before = valid_metrics(clf.model)

    adapted = Joyful(clf.config.replace(lr=lr or clf.config.lr / 3, epochs=epochs, patience=epochs))
    adapted.info = copy.deepcopy(clf.info)
    adapted.info.config = clf.config
    adapted.text_encoder_dir = clf.text_encoder_dir
    adapted.model = copy.deepcopy(clf.model)
    adapted.model.config = adapted.config
    anchor = None
    if report.valid_before:
        earlier = clf.info.extra.get("adaptation_anchor") or {}
        report.anchored = earlier.get("valid_hash") == valid_hash and earlier.get("score") is not None
        anchor = float(earlier["score"]) if report.anchored else task.selection_score(report.valid_before)
        report.valid_floor = anchor - tolerance
    floor = report.valid_floor

    def selection(epoch_metrics: dict) -> float:
        """Best agreement with the new labels, among epochs whose validation score is within tolerance."""
        # The training loop scores at 0.5; a multilabel model decides at its own thresholds.
        score = task.selection_score(valid_metrics(adapted.model) if clf.thresholds else epoch_metrics)
        if score < floor:
            return _BELOW_FLOOR + score  # below every acceptable epoch, still ordered
        return _new_label_agreement(adapted, enc_new) + 1e-3 * score

    # The original model is within tolerance by definition: an epoch must beat it to be kept.
    initial = before + 1e-3 * task.selection_score(report.valid_before) if enc_valid else None
    result = train(
        adapted.model, enc_new * replay_per_new + enc_replay, enc_valid, labels.labels,
        progress=progress, selection=selection if enc_valid else None, initial_score=initial,
    )
    adapted.model.config = clf.config  # the checkpoint keeps the model's own training config
    adapted.model.eval()
    report.best_epoch = result.best_epoch
    report.history = [r.row() for r in result.history]
    if enc_valid and result.best_epoch > 0:
        # New weights, new logits: the temperature, the multilabel thresholds and the validation outputs
        # (the reference of --target-accuracy and of the drift monitor) are refitted as after training.
        finish(clf.config, adapted.model, enc_valid, adapted.info)
    report.new_after = _reported(task, _new_label_agreement(adapted, enc_new))
    if enc_valid:
        report.valid_after = evaluate_encoded(
            adapted.model, enc_valid, labels.labels, clf.config.batch_size, thresholds=adapted.thresholds
        )
    adapted.config = clf.config
    adapted.info.extra.update(
        adapted_from=clf.info.extra.get("data_hash"),
        adaptation={**report.summary(), "new_data_hash": new_set.data_hash(), "new_source": new_set.source},
        valid_metrics=report.valid_after,
    )
    if anchor is not None:
        adapted.info.extra["adaptation_anchor"] = {"valid_hash": valid_hash, "score": anchor}
    return adapted, report


def save_adapted(adapted: Joyful, source_dir: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """Write the adapted model; a fine-tuned text encoder of the original model is copied along."""
    out = Path(out_dir)
    if Path(source_dir).resolve() == out.resolve():
        raise JoyfulError(f"{out}: write the adapted model to a new directory, not over the original")
    adapted.save(out)  # a fine-tuned text encoder travels with the weights


def stored_corrections(path: str | os.PathLike) -> DialogueSet:
    """The corrected dialogues of a correction store, labelled with the latest correction of each utterance.

    Only dialogues shared with consent ``train`` (see :mod:`joyful.corrections`): a
    person who let the service keep a dialogue did not thereby let a model learn from it.
    """
    from joyful.corrections import CorrectionStore
    from joyful.storage import exists

    if not exists(path):
        raise DataError(str(path), "correction store not found")
    with CorrectionStore(path) as store:
        dialogues = store.corrected_dialogues(consent=("train",))
        source = store.location
    if not dialogues:
        raise DataError(source, "no corrected dialogue shared with consent 'train' (with stored features) in the store")
    return DialogueSet(dialogues, source)


__all__ = ["NEW_LABEL_METRIC", "AdaptationReport", "adapt", "save_adapted", "stored_corrections"]
