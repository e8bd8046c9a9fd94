"""Extraction throughput: the local engine (2 worker processes) against a 2-worker Dask LocalCluster.

Generates short recordings with PyAV (test_extract_decode's generators: scikit-image's
astronaut drifting over a grey background, a voice-like harmonic sound, each utterance
its own MP4 with audio and video), then extracts audio (librosa) and visual (face)
features of every utterance into a fresh cache per engine, so every result is
computed. Start-up (worker processes, the LocalCluster) is part of the time, as it is
for a user. Both datasets must be byte-identical. Prints one JSON line: per engine,
seconds and utterances per second, and whether the datasets are identical.

    python benchmarks/extract_cluster.py [--utterances 40] [--seconds 1.5] [--workers 2]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from media_fixtures import write_manifest  # noqa: E402
from test_extract_decode import face_frames, voice, write_media  # noqa: E402

from joyful.extract.runner import extract_dataset  # noqa: E402

RATE = 22_050


def make_media(folder: Path, n: int, seconds: float) -> Path:
    """``n`` utterances, one MP4 each (face video and voice), in dialogues of six."""
    rows = []
    for k in range(n):
        frames = face_frames(seconds, drift=1 + k % 3)
        sound = voice(seconds, RATE, pitch=110 + 7 * k)[None]
        path = write_media(folder / f"u{k}.mp4", frames=frames, audio=sound, rate=RATE)
        rows.append({"dialogue": f"d{k // 6}", "index": k % 6, "speaker": "AB"[k % 2], "media": path.name})
    return write_manifest(folder / "manifest.csv", rows)


def timed(manifest: Path, out: Path, workers: int, engine: str) -> dict:
    started = time.perf_counter()
    report = extract_dataset(
        manifest,
        out,
        text_encoder=None,
        audio_features="librosa",
        visual_features="face",
        fps=2.0,
        workers=workers,
        engine=engine,
        progress=False,
        cache_dir=f"{out}.cache",
    )
    seconds = time.perf_counter() - started
    if report.failures or sum(report.cached.values()):
        raise SystemExit(f"{engine}: unexpected failures or cached results: {report.summary()}")
    return {
        "utterances": report.utterances,
        "results": sum(report.computed.values()),
        "seconds": round(seconds, 2),
        "utterances_per_second": round(report.utterances / seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=1.5, help="length of each utterance")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_media(folder, args.utterances, args.seconds)
        results: dict = {"cpus": os.cpu_count(), "workers": args.workers, "utterance_seconds": args.seconds}
        results["local"] = timed(manifest, folder / "local.jsonl", args.workers, "local")
        results["dask_local_cluster"] = timed(manifest, folder / "dask.jsonl", args.workers, "dask")
        results["identical"] = filecmp.cmp(folder / "local.jsonl", folder / "dask.jsonl", shallow=False)
    print(json.dumps(results))


if __name__ == "__main__":  # the workers are spawned: they import this file without running it
    main()
