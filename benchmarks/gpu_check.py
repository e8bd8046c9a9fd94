"""Check a CUDA machine: train IEMOCAP-shaped generated data on the GPU, compare CPU and GPU outputs.

Trains the full model (both views, all losses) for a few epochs on CUDA in the chosen
precision, saves the checkpoint, loads it once on the CPU and once on the GPU, and
prints as its last line one JSON object: training and inference throughput on the GPU,
peak GPU memory, and the largest absolute difference between the class probabilities
the two devices give for the same checkpoint (float32 kernels differ in summation
order, so expect about 1e-5 in fp32, more under mixed precision).

    python benchmarks/gpu_check.py [--device cuda:0] [--epochs 3] [--precision fp32|bf16|fp16]

Written for a machine with a GPU; the project's machine has none, so the CUDA path has
been checked by reading only. ``--device cpu`` runs every step on the CPU (then the
difference must be 0), which is how the script itself was run here.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from joyful.api import Joyful
from joyful.batching import encode_dialogues
from joyful.config import JoyfulConfig
from joyful.training.device import resolve_device
from joyful.errors import JoyfulError
from joyful.training.inference import predict_probabilities
from train_speed import N_UTTERANCES, iemocap_shaped


def probabilities(clf: Joyful, data) -> list[np.ndarray]:
    """Unrounded class probabilities per dialogue (``predict`` rounds them for people)."""
    ds = clf.prepare(data, role="test", label_set=clf.info.label_set, progress=False)
    encoded = encode_dialogues(ds, clf.config.modality_order, clf.info.label_set, clf.info.widths)
    return predict_probabilities(clf.model, encoded, clf.config.batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the CUDA device to check (default: cuda)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
    except JoyfulError as e:
        raise SystemExit(f"gpu_check: {e}") from None
    cuda = device.type == "cuda"  # --device cpu runs the same steps, to check the script without a GPU
    data = iemocap_shaped()
    config = JoyfulConfig.preset(
        "iemocap6", window_past=8, window_future=8, epochs=args.epochs, device=str(device), precision=args.precision,
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    seconds: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        clf = Joyful(config)
        clf.fit(data, None, out_dir=out, progress=False, on_epoch=lambda r: seconds.append(r.seconds))
        gpu = Joyful.load(out, device=str(device), precision=args.precision)
        _synchronize(device)
        start = time.perf_counter()
        p_gpu = probabilities(gpu, data)
        _synchronize(device)
        inference = time.perf_counter() - start
        p_cpu = probabilities(Joyful.load(out, device="cpu"), data)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(p_cpu, p_gpu, strict=True))
    epoch = float(np.median(seconds[1:] if len(seconds) > 1 else seconds))
    print(json.dumps({
        "device": torch.cuda.get_device_name(device) if cuda else str(device),
        "precision": args.precision,
        "train_seconds_per_epoch": round(epoch, 3),
        "train_utterances_per_second": round(N_UTTERANCES / epoch, 1),
        "inference_utterances_per_second": round(N_UTTERANCES / inference, 1),
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None,
        "max_abs_probability_difference_cpu_vs_gpu": difference,
    }))


def _synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
