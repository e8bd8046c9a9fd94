"""The Python API: a scikit-learn-style estimator that mirrors the CLI.

>>> from joyful import Joyful
>>> clf = Joyful.from_preset("iemocap6", modalities="t").fit("train.jsonl", "valid.jsonl", out_dir="model")
>>> clf = Joyful.load("model")
>>> clf.evaluate("test.jsonl")["weighted_f1"]
>>> rows = clf.predict("new_dialogues.jsonl")
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from joyful.analysis.explain import explain_dialogues
from joyful.analysis.selective import abstention_threshold
from joyful.atomic import atomic_copy_tree, atomic_write_text
from joyful.batching import encode_dialogues, iterate_batches
from joyful.config import JoyfulConfig
from joyful.data.finetune_text import cross_fitted_text_features, finetune_text_encoder
from joyful.data.label_forms import infer_task
from joyful.data.labels import IEMOCAP6, MELD_INTEGER_ORDER, LabelSet, resolve_label_set
from joyful.data.schema import MODALITY_NAMES, Dialogue, DialogueSet
from joyful.data.tasks import get_task
from joyful.data.text_encoder import TextEncoder
from joyful.data.text_features import ENCODER, ensure_text_features, has_supplied_vectors, text_feature_origin
from joyful.errors import DataError, JoyfulError
from joyful.io.readers import read_dialogues
from joyful.model import JoyfulModel
from joyful.nn.context_lr import ContextLogisticRegression
from joyful.training import distributed
from joyful.training.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from joyful.training.device import check_precision, resolve_device
from joyful.training.ensemble import EnsembleModel
from joyful.training.inference import evaluate_encoded, predict_probabilities
from joyful.training.loop import EpochRecord, TrainResult
from joyful.training.members import build_model, train_members
from joyful.training.teacher import check_teachers, with_teacher_probabilities

FINETUNED_DIR = "text-encoder"
CROSS_FIT_DIR = ".cross-fitting"
#: Where a model trained with ``teacher_ensemble`` keeps the ensemble it was distilled from.
TEACHER_DIR = "teacher"
DataLike = str | os.PathLike | DialogueSet | Sequence[Dialogue]


def integer_label_names(label_set: str) -> tuple[str, ...] | None:
    """Names for integer labels in COGMEN/DialogueGCN pickles (IEMOCAP-4 files use IEMOCAP-6's first four)."""
    return {"iemocap6": IEMOCAP6.labels, "iemocap4": IEMOCAP6.labels, "meld7": MELD_INTEGER_ORDER}.get(label_set)


def as_dialogue_set(
    data: DataLike, *, role: str, int_label_names: Sequence[str] | None = None, task: str | None = None
) -> DialogueSet:
    """A validated :class:`DialogueSet` from a path (``file#split`` allowed) or in-memory dialogues.

    ``task`` settles files whose labels serve several tasks (CMU-MOSEI's sentiment and emotions).
    """
    if isinstance(data, DialogueSet):
        data.validate()
        return data
    if isinstance(data, (str, os.PathLike)):
        return read_dialogues(str(data), role=role, int_label_names=int_label_names, task=task)
    out = DialogueSet(list(data), "<dialogues>")
    out.validate()
    return out


class Joyful:
    """Train, save, load, evaluate and apply a Joyful model.

    ``fit`` takes the training and validation data (paths or dialogues), reads and checks
    them, encodes texts that come without text features, trains with early stopping, and
    (with ``out_dir``) writes the best checkpoint as soon as it is found.
    """

    def __init__(self, config: JoyfulConfig | None = None, **overrides: Any) -> None:
        self.config = (config or JoyfulConfig()).replace(**overrides) if overrides else (config or JoyfulConfig())
        self.model: JoyfulModel | ContextLogisticRegression | EnsembleModel | None = None
        self.info: ModelInfo | None = None
        self.result: TrainResult | None = None
        self.text_encoder_dir: Path | None = None
        """A fine-tuned text encoder saved in the model directory, used instead of ``config.text_encoder``."""
        self.text_cache: bool = True
        """Keep text embeddings in the on-disk cache; a service holding personal data turns this off."""
        self._encoder: TextEncoder | None = None
        self._fit_task: str | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Joyful:
        return cls(JoyfulConfig.preset(name, **overrides))

    # ------------------------------------------------------------------ data
    def _text_encoder(self, progress: bool) -> TextEncoder:
        """The text encoder, loaded once per estimator (a service encodes on every request)."""
        name = str(self.text_encoder_dir or self.config.text_encoder)
        if self._encoder is None or self._encoder.name != name:
            self._encoder = TextEncoder(name, persistent_cache=self.text_cache, device=self._encoder_device())
        self._encoder.show_progress = progress
        return self._encoder

    def _encoder_device(self) -> str:
        """The text encoder runs where the model does (``context-lr`` included: encoding is the costly part)."""
        return str(resolve_device(self.config.device))

    def prepare(
        self, data: DataLike, *, role: str, label_set: LabelSet, progress: bool = True, text_origin: str | None = None,
        encode_texts: bool = True,
    ) -> DialogueSet:
        """Read, apply the label set's filtering, and add text features where only text is given.

        Text features are added to copies: the caller's dialogues keep the features they
        came with, so one set can be given to models with different text encoders.
        ``text_origin`` is what kind of text vectors the model learnt from (default: as
        recorded with the loaded model); see :mod:`joyful.data.text_features` for the rule.
        ``encode_texts=False`` leaves texts without vectors (cross-fitting gives them their own).
        """
        names = integer_label_names(self.config.label_set)
        ds = label_set.apply(as_dialogue_set(data, role=role, int_label_names=names, task=self._task))
        ds = DialogueSet([dataclasses.replace(d, features=dict(d.features)) for d in ds], ds.source)
        if "t" in self.config.modalities and encode_texts:
            if text_origin is None:
                text_origin = self.info.extra.get("text_features", ENCODER) if self.info is not None else ENCODER
            ensure_text_features(ds, self._text_encoder(progress), context=self.config.text_context, origin=text_origin)
        return ds

    # ------------------------------------------------------------------ training
    def fit(
        self,
        train_data: DataLike,
        valid_data: DataLike | None = None,
        *,
        out_dir: str | os.PathLike | None = None,
        progress: bool = True,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        teacher: Joyful | str | os.PathLike | Sequence[Joyful | str | os.PathLike] | None = None,
    ) -> Joyful:
        """Read and check the data, give it text features, and train (see :mod:`joyful.training.members`).

        ``teacher``: trained models (fitted, or model directories; an ensemble counts as one)
        whose mean class probabilities on the training dialogues the model is also fitted
        to (``distill_weight``, ``distill_temperature``; :mod:`joyful.training.teacher`).
        With ``teacher_ensemble`` = K the teacher is trained here first, an ensemble of K
        seeds on the same data, saved in ``out_dir/teacher`` (where it outlives a failed student).
        """
        c = self.config
        if c.teacher_ensemble and teacher is not None:
            raise JoyfulError(
                f"teacher_ensemble = {c.teacher_ensemble} trains its own teacher; give a teacher or set "
                "teacher_ensemble, not both"
            )
        teachers = self._teachers(teacher)
        device = self.device  # an unavailable device fails here, before any work
        ranks = distributed.current()
        if ranks is not None:
            if c.architecture == "context-lr" or (c.finetune_text_encoder and "t" in c.modalities):
                raise JoyfulError(
                    "context-lr and --finetune-text-encoder train in one process; run them without torchrun"
                )
            if not ranks.is_main:
                out_dir = None  # rank 0 writes the checkpoint, history and plots
        names = integer_label_names(c.label_set)
        raw_train = as_dialogue_set(train_data, role="train", int_label_names=names, task=c.task)
        self._fit_task = infer_task(c.task, raw_train.labelled(), raw_train.source)
        label_set = resolve_label_set(c.label_set, raw_train, self._fit_task)
        labelled = label_set.apply(raw_train)
        if c.teacher_ensemble:
            if self._fit_task != "classification":
                raise JoyfulError(f"distillation fits class probabilities; a {self._fit_task} model trains "
                                  "without teacher_ensemble")
            teachers = [self._trained_teacher(raw_train, valid_data, out_dir, progress)]
        if teachers:  # refused before any text is encoded or encoder tuned
            if c.architecture == "context-lr":
                raise JoyfulError("context-lr is fitted by L-BFGS on the labels alone; train it without a teacher")
            check_teachers(teachers, label_set.labels, self._fit_task)
        tune_text = c.finetune_text_encoder and "t" in c.modalities
        if tune_text and self._fit_task != "classification":
            raise JoyfulError(
                f"--finetune-text-encoder tunes the encoder with a softmax over classes; a {self._fit_task} "
                "model trains on the frozen encoder's features (drop the option)"
            )
        if tune_text:
            self._finetune_text_encoder(labelled, label_set, out_dir, progress)
        # Which text vectors the model learns from, decided before any are added: its validation
        # data, and every later input, may have texts encoded only if they were the encoder's.
        text_origin = (
            text_feature_origin(labelled, self._text_encoder(progress), c.text_context) if "t" in c.modalities else None
        )
        # with a tuned encoder the training texts get out-of-fold vectors below, never the tuned encoder's
        train_set = self.prepare(
            raw_train, role="train", label_set=label_set, progress=progress, text_origin=ENCODER, encode_texts=not tune_text
        )
        if not train_set.labelled():
            raise DataError(train_set.source, "no labelled utterance to train on", field="label")
        if tune_text:
            cross_fitted_text_features(
                train_set, label_set, c.text_encoder, self.text_encoder_dir.parent / CROSS_FIT_DIR, folds=c.finetune_folds,
                context=c.text_context, epochs=c.finetune_epochs, lr=c.finetune_lr, batch_size=c.finetune_batch_size,
                max_tokens=c.finetune_max_tokens, seed=c.seed, device=self._encoder_device(), progress=progress,
            )
        valid_set = (
            self.prepare(valid_data, role="valid", label_set=label_set, progress=progress, text_origin=text_origin)
            if valid_data is not None else None
        )
        task = self._fit_task
        encoded_train = encode_dialogues(train_set, c.modality_order, label_set, task=task)
        widths = {m: int(encoded_train[0].features[m].shape[1]) for m in c.modality_order}
        encoded_valid = encode_dialogues(valid_set, c.modality_order, label_set, widths, task) if valid_set else None
        if teachers:
            encoded_train = with_teacher_probabilities(encoded_train, labelled, teachers, c.distill_temperature, progress)
        n_speakers = c.max_speakers or max(len(set(d.speakers)) for d in train_set)
        hashes = {"train": train_set.data_hash()}
        if valid_set is not None:
            hashes["valid"] = valid_set.data_hash()
        self.info = ModelInfo(
            config=c,
            label_set=label_set,
            widths=widths,
            n_speakers=n_speakers,
            task=task,
            extra={
                "seed": c.seed,
                "text_encoder": c.text_encoder if "t" in c.modalities else None,
                "text_features": text_origin,
                "finetuned_text_encoder": FINETUNED_DIR if self.text_encoder_dir else None,
                "data_hash": hashes,
                "data_source": {"train": train_set.source, "valid": valid_set.source if valid_set else None},
                "extraction": extraction_settings(train_data),
                "n_utterances": {"train": train_set.n_utterances, "valid": valid_set.n_utterances if valid_set else 0},
                "teachers": [
                    {"seed": t.info.extra.get("seed"), "members": int(t.info.extra.get("ensemble_members", 1)),
                     "data_hash": t.info.extra.get("data_hash")} for t in teachers
                ] or None,
            },
        )

        def publish(model) -> None:
            self.model = model

        self.result = train_members(
            c, encoded_train, encoded_valid, self.info, device, publish=publish,
            save=(lambda: self.save(out_dir)) if out_dir is not None else None,
            out_dir=Path(out_dir) if out_dir is not None else None, progress=progress, on_epoch=on_epoch,
        )
        return self

    def _trained_teacher(self, train_data: DataLike, valid_data: DataLike | None, out_dir, progress: bool) -> Joyful:
        """The ``teacher_ensemble`` teacher: this config as an ensemble of that many seeds, without a teacher.

        Its members start from the same seeds as a plain ``--ensemble`` of that size, so the
        teacher is exactly the ensemble model one would otherwise have trained.
        """
        c = self.config
        config = dataclasses.replace(c, ensemble=c.teacher_ensemble, teacher_ensemble=0)
        return Joyful(config).fit(
            train_data, valid_data, out_dir=Path(out_dir) / TEACHER_DIR if out_dir is not None else None,
            progress=progress,
        )

    def _teachers(self, teacher) -> list[Joyful]:
        """The fitted teachers, loading the ones given as model directories (on this model's device)."""
        if teacher is None:
            return []
        given = [teacher] if isinstance(teacher, (Joyful, str, os.PathLike)) else list(teacher)
        return [t if isinstance(t, Joyful) else Joyful.load(t, device=self.config.device) for t in given]

    def _finetune_text_encoder(self, train: DialogueSet, label_set: LabelSet, out_dir, progress: bool) -> None:
        c = self.config
        if out_dir is None:  # kept for this estimator's life; save() copies it into the model directory
            self._scratch = tempfile.TemporaryDirectory(prefix="joyful-text-encoder-")
            out_dir = self._scratch.name
        if any(d.texts is None for d in train):
            raise DataError(train.source, "fine-tuning the text encoder needs the utterance texts", field="text")
        if has_supplied_vectors(train):
            raise DataError(
                train.source, "brings text_features, but a fine-tuned text encoder computes them itself; "
                "drop them or train without fine-tuning", field="text_features",
            )
        self.text_encoder_dir = finetune_text_encoder(
            train, label_set, TextEncoder(c.text_encoder, show_progress=progress, device=self._encoder_device()),
            Path(out_dir) / FINETUNED_DIR,
            context=c.text_context, epochs=c.finetune_epochs, lr=c.finetune_lr, batch_size=c.finetune_batch_size,
            max_tokens=c.finetune_max_tokens, seed=c.seed, progress=progress,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> None:
        self._require_model()
        if self.text_encoder_dir is not None and self.text_encoder_dir != Path(directory) / FINETUNED_DIR:
            atomic_copy_tree(self.text_encoder_dir, Path(directory) / FINETUNED_DIR)
        save_checkpoint(directory, self.model.state_dict(), self.info)

    @classmethod
    def load(cls, directory: str | os.PathLike, *, device: str = "auto", precision: str = "fp32") -> Joyful:
        """A saved model on ``device`` (weights are stored on the CPU, so any device will do).

        The training run's device and precision are not reused: the machine may differ.
        """
        state, info = load_checkpoint(directory)
        info.config = info.config.replace(device=device, precision=precision)
        self = cls(info.config)
        self.info = info
        if info.extra.get("finetuned_text_encoder"):
            self.text_encoder_dir = Path(directory) / info.extra["finetuned_text_encoder"]
        members = [
            build_model(info.config, info.widths, len(info.label_set.labels), info.n_speakers, info.task)
            for _ in range(int(info.extra.get("ensemble_members", 1)))
        ]
        self.model = members[0] if len(members) == 1 else EnsembleModel(members)
        try:
            self.model.load_state_dict(state)
        except RuntimeError as e:
            raise JoyfulError(f"{directory}: weights do not fit the saved configuration ({str(e).splitlines()[0]})") from None
        # kept in meta.json rather than the state dict, so models saved before calibration load unchanged (T = 1)
        self.model.temperature = float((info.extra.get("calibration") or {}).get("temperature", 1.0))
        self.model.to(self.device)
        self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        """Where the model computes: ``config.device`` resolved on this machine (the CPU for ``context-lr``)."""
        if self.config.architecture == "context-lr":
            return torch.device("cpu")  # scikit-learn does the work
        device = resolve_device(self.config.device)
        check_precision(self.config.precision, device)
        return device

    @property
    def thresholds(self) -> list[float] | None:
        """Per-emotion decision thresholds of a multilabel model (``None``: 0.5 each)."""
        return self.info.extra.get("thresholds") if self.info is not None else None

    @property
    def _task(self) -> str | None:
        """The task data is read for: the trained model's, the one being fitted, else the config's."""
        if self._fit_task is not None:
            return self._fit_task
        return self.info.task if self.info is not None else self.config.task

    @property
    def task(self) -> str:
        """What the model predicts: ``classification``, ``multilabel`` or ``regression``."""
        self._require_model()
        return self.info.task

    def _encode(self, ds: DialogueSet) -> list:
        return encode_dialogues(ds, self.config.modality_order, self.info.label_set, self.info.widths, self.info.task)

    def _require_model(self) -> None:
        if self.model is None or self.info is None:
            raise JoyfulError("this Joyful has no model yet: call fit() or Joyful.load()")

    # ------------------------------------------------------------------ inference
    def _prepared(self, data: DataLike, role: str, progress: bool) -> DialogueSet:
        self._require_model()
        return self.prepare(data, role=role, label_set=self.info.label_set, progress=progress)

    def evaluate(
        self, data: DataLike, *, progress: bool = False, edge_noise: float = 0.0, with_predictions: bool = False
    ) -> dict:
        """The task's metrics over the labelled utterances (:mod:`joyful.analysis.metrics`).

        Classification: accuracy, weighted/macro/per-class F1 and the confusion matrix;
        multilabel: per-emotion and pooled F1, weighted accuracy, subset accuracy (at the
        model's thresholds); regression: MAE, correlation, Acc-2/F1 (with and without
        zeros), Acc-5, Acc-7.

        ``edge_noise`` adds that fraction of random edges to each graph at inference (the
        paper's noisy-edge study), drawn from a generator seeded with the run's seed, so the
        same model and data always get the same noisy edges (and no global RNG state moves);
        ``with_predictions`` adds ``y_true``/``y_pred`` (class indices, 0/1 rows or scores).
        """
        ds = self._prepared(data, "test", progress)
        if not ds.labelled():
            raise DataError(ds.source, "no labelled utterance to evaluate", field="label")
        encoded = self._encode(ds)
        self.model.inference_edge_noise = edge_noise
        self.model.inference_edge_generator = (
            torch.Generator(device=self.device).manual_seed(self.config.seed) if edge_noise else None
        )
        try:
            return evaluate_encoded(
                self.model, encoded, self.info.label_set.labels, self.config.batch_size, with_predictions=with_predictions,
                thresholds=self.thresholds,
            )
        finally:
            self.model.inference_edge_noise = 0.0
            self.model.inference_edge_generator = None

    @torch.no_grad()
    def representations(self, data: DataLike, *, progress: bool = False) -> dict[str, Any]:
        """Utterance vectors at the input (concatenated features), after fusion and after the graph encoder.

        For plots such as the paper's t-SNE (Figure 10); also returns ``labels`` (names,
        ``None`` for unlabelled utterances) and ``dialogue`` ids, one per row.
        """
        ds = self._prepared(data, "test", progress)
        encoded = self._encode(ds)
        self.model.eval()
        parts: dict[str, list] = {"input": [], "fused": [], "encoded": []}
        for batch in iterate_batches(encoded, self.config.batch_size, self.model.n_speakers, shuffle=False, device=self.device):
            out = self.model(batch)
            x = self.model.missing(batch.x)  # missing modalities as the model sees them
            parts["input"].append(torch.cat([x[m] for m in self.config.modality_order], dim=-1))
            parts["fused"].append(out.fused)
            parts["encoded"].append(out.encoded)
        result: dict[str, Any] = {k: torch.cat(v).float().cpu().numpy() for k, v in parts.items()}
        result["labels"] = [lab for d in ds for lab in (d.labels or [None] * len(d))]
        result["dialogue"] = [d.id for d in ds for _ in range(len(d))]
        return result

    def predict(
        self, data: DataLike, *, progress: bool = False, explain: bool = False, top_k: int = 3,
        abstain_below: float | None = None, target_accuracy: float | None = None,
    ) -> list[dict]:
        """One record per utterance: dialogue, index (position as read), speaker, label, probabilities.

        ``label`` has the form of a training label, so predictions can be read back as
        labels: a class name, the list of emotions present (multilabel; ``probabilities``
        per emotion), or the sentiment score (regression; no ``probabilities``).
        Classification and multilabel records also carry ``confidence``
        (:meth:`joyful.data.tasks.Task.confidence`); with ``abstain_below`` P, or with
        ``target_accuracy`` A (P from :meth:`abstain_threshold`), each also has
        ``"uncertain": confidence < P``: the decisions to hand to a person.

        With ``explain``, each record also has ``explanation``: ``modalities`` (per modality,
        the drop in the label's probability when that modality is marked missing) and
        ``context`` (the ``top_k`` other utterances whose removal changes it most, as
        ``{"index", "speaker", "influence"}``); see :mod:`joyful.analysis.explain`.
        """
        self._require_model()
        threshold = abstention_threshold(
            self.info.task, self.info.extra.get("validation_outputs"), abstain_below, target_accuracy
        )
        ds = self._prepared(data, "test", progress)
        encoded = self._encode(ds)
        names = self.info.label_set.labels
        task = get_task(self.info.task)
        outputs = predict_probabilities(self.model, encoded, self.config.batch_size)
        explanations = (
            explain_dialogues(self.model, encoded, self.config.batch_size, top_k, self.thresholds) if explain else None
        )
        rows = []
        for k, (d, out) in enumerate(zip(ds, outputs, strict=True)):
            decided = task.decide(out, self.thresholds)
            confidence = task.confidence(out, self.thresholds)
            positions = d.positions()
            for i, (pos, speaker) in enumerate(zip(positions, d.speakers, strict=True)):
                row = {"dialogue": d.id, "index": int(pos), "speaker": speaker}
                if task.name == "regression":
                    row["label"] = round(float(out[i]), 6)
                else:
                    row["label"] = (
                        [n for n, on in zip(names, decided[i], strict=True) if on] if task.name == "multilabel"
                        else names[int(decided[i])]
                    )
                    row["probabilities"] = {n: round(float(p), 6) for n, p in zip(names, out[i], strict=True)}
                    row["confidence"] = round(float(confidence[i]), 6)
                    if threshold is not None:  # on the value served, so a reader can check it
                        row["uncertain"] = row["confidence"] < threshold
                if explanations is not None:
                    e = explanations[k][i]
                    row["explanation"] = {
                        "modalities": {MODALITY_NAMES[m]: round(v, 6) for m, v in e["modalities"].items()},
                        "context": [
                            {"index": int(positions[j]), "speaker": d.speakers[j], "influence": round(v, 6)}
                            for j, v in e["context"]
                        ],
                    }
                rows.append(row)
        return rows

    def abstain_threshold(self, target_accuracy: float) -> float:
        """The smallest confidence P whose retained validation decisions are at least ``target_accuracy`` accurate.

        Chosen on the validation outputs saved at the end of training (see
        :func:`joyful.analysis.selective.threshold_for_accuracy` for ties and edges), so
        the held-out accuracy of what is retained is an estimate, close to the target
        when validation and new data are alike.
        """
        self._require_model()
        return abstention_threshold(self.info.task, self.info.extra.get("validation_outputs"), None, target_accuracy)


def extraction_settings(data: DataLike) -> dict | None:
    """How ``joyful extract`` made this data (its ``DATASET.extraction.json``), if it did.

    Kept in the model's meta so that ``joyful predict --manifest`` extracts new recordings
    exactly as the training data was extracted.
    """
    if not isinstance(data, (str, os.PathLike)):
        return None
    sidecar = Path(str(data).partition("#")[0] + ".extraction.json")
    if not sidecar.is_file():
        return None
    try:
        settings = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise JoyfulError(f"{sidecar}: cannot read the extraction settings ({e})") from None
    return {k: v for k, v in settings.items() if k not in ("failures", "counts")}


def write_predictions(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """Predictions as JSONL, written atomically."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


__all__ = ["Joyful", "as_dialogue_set", "write_predictions"]
