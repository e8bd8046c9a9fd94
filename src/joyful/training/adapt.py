"""Adapting a trained model to human corrections or a small on-site dataset, without forgetting.

Fine-tuning only on a handful of corrected utterances would pull the model towards them
and away from everything else (catastrophic forgetting: classes absent from the
corrections fade). So each epoch mixes the new dialogues with a replay sample of the
original training dialogues, the learning rate is lowered, and the epoch kept is the one
that gets the new labels most right among those whose validation weighted F1 stays within
``tolerance`` of the original model's. The original weights compete as epoch 0: when no
epoch gets more new labels right within that tolerance, the original model is kept (and
the report says so) rather than an epoch that forgot. Scores before and after are reported.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from joyful.api import DataLike, Joyful
from joyful.batching import IGNORE_INDEX, EncodedDialogue, encode_dialogues
from joyful.data.schema import DialogueSet
from joyful.errors import DataError, JoyfulError
from joyful.training.inference import evaluate_encoded, predict_probabilities
from joyful.training.loop import train


@dataclass
class AdaptationReport:
    """What adaptation did, measured before and after, for the CLI and the service."""

    n_new_dialogues: int
    n_new_labels: int
    n_replay_dialogues: int
    new_accuracy_before: float
    new_accuracy_after: float
    valid_before: dict | None = None
    valid_after: dict | None = None
    best_epoch: int = 0
    """0: no epoch beat the original model, which is kept unchanged."""
    history: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        def wf1(m: dict | None) -> float | None:
            return None if m is None else round(m["weighted_f1"], 4)

        return {
            "new_dialogues": self.n_new_dialogues,
            "new_labels": self.n_new_labels,
            "replay_dialogues": self.n_replay_dialogues,
            "new_accuracy_before": round(self.new_accuracy_before, 4),
            "new_accuracy_after": round(self.new_accuracy_after, 4),
            "valid_weighted_f1_before": wf1(self.valid_before),
            "valid_weighted_f1_after": wf1(self.valid_after),
            "best_epoch": self.best_epoch,
            "kept_original": self.best_epoch == 0,
        }


def _new_label_accuracy(clf: Joyful, dialogues: list[EncodedDialogue]) -> float:
    probs = predict_probabilities(clf.model, dialogues, clf.config.batch_size)
    y = np.concatenate([d.label.numpy() for d in dialogues])
    pred = np.concatenate([p.argmax(-1) for p in probs])
    known = y != IGNORE_INDEX
    return float((pred[known] == y[known]).mean())


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
    seed. ``lr`` defaults to a third of the model's training learning rate.
    """
    clf._require_model()
    labels = clf.info.label_set
    new_set = clf.prepare(new, role="train", label_set=labels, progress=progress)
    if not new_set.labels_found():
        raise DataError(new_set.source, "no labelled or corrected utterance to adapt to", field="label")
    widths, order = clf.info.widths, clf.config.modality_order
    enc_new = encode_dialogues(new_set, order, labels, widths)
    enc_replay: list[EncodedDialogue] = []
    if replay is not None:
        replay_set = clf.prepare(replay, role="train", label_set=labels, progress=progress)
        enc_replay = encode_dialogues(replay_set, order, labels, widths)
        rng = np.random.default_rng(clf.config.seed)
        keep = rng.permutation(len(enc_replay))[: replay_per_new * replay_per_new * len(enc_new)]
        enc_replay = [enc_replay[i] for i in sorted(keep)]
    enc_valid = None
    if valid is not None:
        enc_valid = encode_dialogues(clf.prepare(valid, role="valid", label_set=labels, progress=progress), order, labels, widths)

    report = AdaptationReport(
        n_new_dialogues=len(enc_new),
        n_new_labels=int(sum((d.label != IGNORE_INDEX).sum() for d in enc_new)),
        n_replay_dialogues=len(enc_replay),
        new_accuracy_before=_new_label_accuracy(clf, enc_new),
        new_accuracy_after=0.0,
    )
    if enc_valid:
        report.valid_before = evaluate_encoded(clf.model, enc_valid, labels.labels, clf.config.batch_size)

    adapted = Joyful(clf.config.replace(lr=lr or clf.config.lr / 3, epochs=epochs, patience=epochs))
    adapted.info = copy.deepcopy(clf.info)
    adapted.info.config = clf.config
    adapted.text_encoder_dir = clf.text_encoder_dir
    adapted.model = copy.deepcopy(clf.model)
    adapted.model.config = adapted.config
    floor = report.valid_before["weighted_f1"] - tolerance if report.valid_before else None

    def selection(valid_metrics: dict) -> float:
        """Most new labels right, among epochs that keep validation WF1 within tolerance."""
        accuracy = _new_label_accuracy(adapted, enc_new)
        if valid_metrics["weighted_f1"] < floor:
            return valid_metrics["weighted_f1"] - 2.0  # below every acceptable epoch, still ordered
        return accuracy + 1e-3 * valid_metrics["weighted_f1"]

    # The original model is within tolerance by definition: an epoch must beat it to be kept.
    initial = report.new_accuracy_before + 1e-3 * report.valid_before["weighted_f1"] if enc_valid else None
    result = train(
        adapted.model, enc_new * replay_per_new + enc_replay, enc_valid, labels.labels,
        progress=progress, selection=selection if enc_valid else None, initial_score=initial,
    )
    adapted.model.config = clf.config  # the checkpoint keeps the model's own training config
    adapted.model.eval()
    report.best_epoch = result.best_epoch
    report.history = [r.row() for r in result.history]
    report.new_accuracy_after = _new_label_accuracy(adapted, enc_new)
    if enc_valid:
        report.valid_after = evaluate_encoded(adapted.model, enc_valid, labels.labels, clf.config.batch_size)
    adapted.config = clf.config
    adapted.info.extra.update(
        adapted_from=clf.info.extra.get("data_hash"),
        adaptation={**report.summary(), "new_data_hash": new_set.data_hash(), "new_source": new_set.source},
        valid_metrics=report.valid_after,
    )
    return adapted, report


def save_adapted(adapted: Joyful, source_dir: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """Write the adapted model; a fine-tuned text encoder of the original model is copied along."""
    out = Path(out_dir)
    if Path(source_dir).resolve() == out.resolve():
        raise JoyfulError(f"{out}: write the adapted model to a new directory, not over the original")
    adapted.save(out)  # a fine-tuned text encoder travels with the weights


def stored_corrections(path: str | os.PathLike) -> DialogueSet:
    """The corrected dialogues of a correction store, labelled with the latest correction of each utterance."""
    from joyful.corrections import CorrectionStore

    if not Path(path).is_file():
        raise DataError(str(path), "correction store not found")
    with CorrectionStore(path) as store:
        dialogues = store.corrected_dialogues()
    if not dialogues:
        raise DataError(str(path), "no corrected dialogue with stored features in the store")
    return DialogueSet(dialogues, str(path))


__all__ = ["AdaptationReport", "adapt", "save_adapted", "stored_corrections"]
