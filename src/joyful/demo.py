"""``joyful demo``: the whole pipeline on generated data, in well under two minutes on 2 CPU cores.

``--task classification`` (the default) runs IEMOCAP-like dialogues; ``multilabel`` and
``regression`` run CMU-MOSEI-shaped videos (:mod:`joyful.synthetic_mosei`) through the
``mosei-emotion`` and ``mosei-sentiment`` presets. Each task's scores are printed next
to what a model that learnt nothing would get, since that is what makes them readable.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from joyful.api import Joyful, write_predictions
from joyful.config import JoyfulConfig
from joyful.data.label_forms import MOSEI_EMOTIONS
from joyful.data.schema import DialogueSet
from joyful.data.tasks import get_task
from joyful.io.jsonl import write_jsonl
from joyful.synthetic import DEFAULT_LABELS, generate_dialogues
from joyful.synthetic_mosei import DEFAULT_WIDTHS as MOSEI_WIDTHS
from joyful.synthetic_mosei import generate_mosei

#: Videos per split for the MOSEI-shaped tasks (about 9 segments each, so roughly the
#: classification demo's number of utterances).
MOSEI_SPLITS = {"train": 150, "valid": 30, "test": 40}
#: How the printed lines name each task's primary metric.
_METRIC_NAMES = {"weighted_f1": "weighted F1", "mae": "MAE"}
#: The presets the MOSEI-shaped tasks train with.
MOSEI_PRESETS = {"multilabel": "mosei-emotion", "regression": "mosei-sentiment"}


def demo_config(epochs: int, seed: int, task: str = "classification") -> JoyfulConfig:
    """The paper's model at a small scale; lr 1e-3 instead of 3e-5 so a few epochs suffice."""
    small = {"epochs": epochs, "seed": seed, "lr": 1e-3, "batch_size": 8, "patience": 10,
             "global_attention_dim": 64, "global_ff": 128}
    if task == "classification":
        return JoyfulConfig(**small)
    return JoyfulConfig.preset(MOSEI_PRESETS[task], **small)


def run_demo(out: Path, *, task: str = "classification", epochs: int = 25, seed: int = 24, progress: bool = True) -> dict:
    """Generate train/valid/test JSONL with a planted signal, train, evaluate on test, predict."""
    get_task(task)  # an unknown task is a one-line error before anything is written
    started = time.perf_counter()
    out = Path(out)
    data = out / "data"
    sets = _generate(task, seed)
    for name, dialogues in sets.items():
        write_jsonl(dialogues.dialogues, data / f"{name}.jsonl")
    print(f"generated {', '.join(f'{len(ds)} {name} {_unit(task)}' for name, ds in sets.items())} in {data}")
    if task != "classification":
        widths = ", ".join(f"{m} {w}" for m, w in MOSEI_WIDTHS.items())
        print(f"CMU-MOSEI-shaped: one speaker per video, feature widths {widths} (768-d sentence text, COVAREP audio, Facet visual), labels for the {task} task")
    model_dir = out / "model"
    clf = Joyful(demo_config(epochs, seed, task)).fit(data / "train.jsonl", data / "valid.jsonl", out_dir=model_dir, progress=progress)
    primary = get_task(task).primary_metric
    print(f"trained: best epoch {clf.result.best_epoch}, validation {_METRIC_NAMES[primary]} "
          f"{clf.result.best_valid[primary]:.3f}; model in {model_dir}")
    model = Joyful.load(model_dir)
    metrics = model.evaluate(data / "test.jsonl")
    for line in _score_lines(task, metrics, sets["train"], sets["test"]):
        print(line)
    rows = model.predict(data / "test.jsonl")
    write_predictions(rows, out / "predictions.jsonl")
    print(f"predictions: {out / 'predictions.jsonl'}; first line: {json.dumps(rows[0])}")
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return metrics


def _generate(task: str, seed: int) -> dict[str, DialogueSet]:
    """Train, valid and test sets from one planted signal (the seeds differ, the prototypes do not)."""
    if task == "classification":
        sizes = {"train": 80, "valid": 16, "test": 20}
        return {name: generate_dialogues(n, seed=seed + k, speakers=(2, 3), prefix=f"{name}-")
                for k, (name, n) in enumerate(sizes.items())}
    return {name: generate_mosei(n, task=task, seed=seed + k, prefix=f"{name}-")
            for k, (name, n) in enumerate(MOSEI_SPLITS.items())}


def _unit(task: str) -> str:
    return "dialogues" if task == "classification" else "videos"


def _score_lines(task: str, metrics: dict, train: DialogueSet, test: DialogueSet) -> list[str]:
    """The test scores, each beside the score of a constant answer."""
    n = metrics["n_utterances"]
    if task == "classification":
        chance = 1 / len(DEFAULT_LABELS)
        return [f"test: accuracy {metrics['accuracy']:.3f} (chance {chance:.3f}), weighted F1 {metrics['weighted_f1']:.3f}, "
                f"macro F1 {metrics['macro_f1']:.3f} over {n} utterances"]
    if task == "multilabel":
        truth = np.array([[e in lab for e in MOSEI_EMOTIONS] for d in test for lab in d.labels], dtype=int)
        always = f1_score(truth, np.ones_like(truth), average="weighted", zero_division=0)
        per_emotion = ", ".join(f"{e} {metrics['per_emotion'][e]['f1']:.2f}" for e in metrics["labels"])
        return [
            f"test: weighted F1 over emotions {metrics['weighted_f1']:.3f} (every emotion always predicted: {always:.3f}), "
            f"micro F1 {metrics['micro_f1']:.3f}, subset accuracy {metrics['subset_accuracy']:.3f} over {n} utterances",
            f"per-emotion F1: {per_emotion}",
        ]
    constant = float(np.median([lab for d in train for lab in d.labels]))
    constant_mae = float(np.mean([abs(lab - constant) for d in test for lab in d.labels]))
    corr = "–" if metrics["corr"] is None else f"{metrics['corr']:.3f}"
    return [f"test: MAE {metrics['mae']:.3f} (constant {constant:+.2f}, the training median: MAE {constant_mae:.3f}), "
            f"corr {corr}, acc2 {metrics['acc2']:.3f}, acc7 {metrics['acc7']:.3f} over {n} utterances"]
