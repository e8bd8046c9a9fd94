"""Training and inference speed of the full Joyful model on IEMOCAP-6-shaped generated data.

151 dialogues, 7433 utterances, feature widths a=100, v=512, t=768, window 8/8, batch 32
dialogues, both views with all augmentations and all three losses (the paper's defaults
otherwise). Prints a progress line per epoch and, as its last line, one JSON object.

    python benchmarks/train_speed.py [--epochs 3]
    torchrun --standalone --nproc-per-node 2 benchmarks/train_speed.py   # data-parallel (gloo)

Under torchrun every process trains its share of each batch; rank 0 prints the figures
(utterances per second of the whole run).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch

from joyful.batching import encode_dialogues
from joyful.config import JoyfulConfig
from joyful.data.labels import IEMOCAP6
from joyful.model import JoyfulModel
from joyful.training import distributed
from joyful.training.seeding import seed_everything
from joyful.synthetic import generate_dialogues
from joyful.training.inference import predict_probabilities
from joyful.training.loop import train

N_DIALOGUES, N_UTTERANCES = 151, 7433
WIDTHS = {"a": 100, "v": 512, "t": 768}


def iemocap_shaped(seed: int = 0):
    """151 dialogues whose lengths (8 to 110, like IEMOCAP's) add up to exactly 7433 utterances."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, 91, size=N_DIALOGUES)
    while lengths.sum() != N_UTTERANCES:  # nudge lengths until the total matches, staying in [8, 110]
        i = rng.integers(len(lengths))
        step = 1 if lengths.sum() < N_UTTERANCES else -1
        if 8 <= lengths[i] + step <= 110:
            lengths[i] += step
    return _with_lengths(lengths, seed)


def _with_lengths(lengths: np.ndarray, seed: int):
    from joyful.data.schema import DialogueSet

    dialogues = [
        generate_dialogues(1, widths=WIDTHS, labels=IEMOCAP6.labels, min_length=n, max_length=n, seed=seed * 1000 + k, prefix=f"b{k}-").dialogues[0]
        for k, n in enumerate(lengths)
    ]
    return DialogueSet(dialogues, "<benchmark>")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="training epochs to time (the first is a warm-up)")
    args = parser.parse_args()
    ranks = None
    if distributed.launched_by_torchrun():
        ranks, _ = distributed.start(torch.device("cpu"))
    data = iemocap_shaped()
    assert len(data) == N_DIALOGUES and data.n_utterances == N_UTTERANCES
    config = JoyfulConfig.preset("iemocap6", window_past=8, window_future=8, batch_size=32, epochs=args.epochs)
    encoded = encode_dialogues(data, config.modality_order, IEMOCAP6)
    seed_everything(config.seed)
    model = JoyfulModel(config, WIDTHS, len(IEMOCAP6.labels), n_speakers=2)
    n_params = sum(p.numel() for p in model.parameters())
    times: list[float] = []

    def report(record) -> None:
        times.append(record.seconds)
        print(f"epoch {record.epoch}: {record.seconds:.2f} s, losses {({k: round(v, 3) for k, v in record.losses.items()})}", flush=True)

    train(model, encoded, None, IEMOCAP6.labels, on_epoch=report, progress=False)
    if ranks is not None:
        distributed.stop()
        if not ranks.is_main:  # rank 0 reports for the run
            return
    epoch_seconds = statistics.median(times[1:] if len(times) > 1 else times)
    start = time.perf_counter()
    predict_probabilities(model, encoded, config.batch_size)
    inference_seconds = time.perf_counter() - start
    result = {
        "train_seconds_per_epoch": round(epoch_seconds, 3),
        "train_utterances_per_second": round(N_UTTERANCES / epoch_seconds, 1),
        "inference_utterances_per_second": round(N_UTTERANCES / inference_seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "dialogues": N_DIALOGUES,
        "utterances": N_UTTERANCES,
        "parameters": n_params,
        "threads": torch.get_num_threads(),
        "processes": ranks.world_size if ranks else 1,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
