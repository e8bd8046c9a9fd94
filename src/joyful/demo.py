"""``joyful demo``: the whole pipeline on generated data, in well under two minutes on 2 CPU cores."""

from __future__ import annotations

import json
import time
from pathlib import Path

from joyful.api import Joyful, write_predictions
from joyful.config import JoyfulConfig
from joyful.io.jsonl import write_jsonl
from joyful.synthetic import DEFAULT_LABELS, generate_dialogues


def demo_config(epochs: int, seed: int) -> JoyfulConfig:
    """The paper's model at a small scale; lr 1e-3 instead of 3e-5 so a few epochs suffice."""
    return JoyfulConfig(epochs=epochs, seed=seed, lr=1e-3, batch_size=8, patience=10, global_attention_dim=64, global_ff=128)


def run_demo(out: Path, *, epochs: int = 25, seed: int = 24, progress: bool = True) -> dict:
    """Generate train/valid/test JSONL with a planted signal, train, evaluate on test, predict."""
    started = time.perf_counter()
    out = Path(out)
    data = out / "data"
    splits = {"train": (80, seed), "valid": (16, seed + 1), "test": (20, seed + 2)}
    for name, (n, s) in splits.items():
        dialogues = generate_dialogues(n, seed=s, speakers=(2, 3), prefix=f"{name}-")
        write_jsonl(dialogues.dialogues, data / f"{name}.jsonl")
    print(f"generated {', '.join(f'{n} {k} dialogues' for k, (n, _) in splits.items())} in {data}")
    model_dir = out / "model"
    clf = Joyful(demo_config(epochs, seed)).fit(data / "train.jsonl", data / "valid.jsonl", out_dir=model_dir, progress=progress)
    print(f"trained: best epoch {clf.result.best_epoch}, validation weighted F1 {clf.result.best_valid['weighted_f1']:.3f}; model in {model_dir}")
    metrics = Joyful.load(model_dir).evaluate(data / "test.jsonl")
    chance = 1 / len(DEFAULT_LABELS)
    print(
        f"test: accuracy {metrics['accuracy']:.3f} (chance {chance:.3f}), weighted F1 {metrics['weighted_f1']:.3f}, "
        f"macro F1 {metrics['macro_f1']:.3f} over {metrics['n_utterances']} utterances"
    )
    rows = Joyful.load(model_dir).predict(data / "test.jsonl")
    write_predictions(rows, out / "predictions.jsonl")
    print(f"predictions: {out / 'predictions.jsonl'}; first line: {json.dumps(rows[0])}")
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return metrics
