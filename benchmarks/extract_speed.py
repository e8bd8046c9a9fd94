"""Feature-extraction throughput on generated recordings, per modality, with 1 and 2 workers.

Makes speech with espeak-ng (2–3 s utterances, several voices) and face videos from
scikit-image's astronaut photograph (the test suite's generators), then extracts each
modality alone into a fresh cache, so every result is computed. Worker start-up is part
of the time, as it is for a user. Prints one JSON object: per modality and worker count,
utterances, seconds, utterances per second and (audio/visual) seconds of media per
second of wall time.

    python benchmarks/extract_speed.py [--utterances 24] [--fps 2] [--audio-features librosa]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from media_fixtures import face_video, speech, write_manifest  # noqa: E402

from joyful.data.text_encoder import TextEncoder  # noqa: E402
from joyful.extract.runner import dialogues_from_manifest  # noqa: E402

VOICES = [("en-us", 150, 40), ("en-gb", 130, 70), ("en-us", 180, 60), ("en-gb", 170, 30)]
SENTENCES = [
    "I really did not expect to see you here today.",
    "Well, that is the best news I have heard all week.",
    "Could you please tell me what happened last night?",
    "We should have left an hour ago, and now we are late.",
]


def duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


def make_media(folder: Path, n: int) -> tuple[Path, Path, float, float]:
    """Manifests of ``n`` speech utterances and ``n // 2`` face videos, and their total seconds."""
    speech_rows, video_rows = [], []
    for k in range(n):
        voice, rate, pitch = VOICES[k % len(VOICES)]
        wav = speech(folder / f"s{k}.wav", SENTENCES[k % len(SENTENCES)], voice, rate + k, pitch)
        speech_rows.append(
            {
                "dialogue": f"d{k // 6}",
                "index": k % 6,
                "speaker": voice,
                "text": SENTENCES[k % len(SENTENCES)],
                "media": wav.name,
            }
        )
    for k in range(max(1, n // 2)):
        video = face_video(folder / f"v{k}.mp4", audio=folder / f"s{k}.wav", seconds=2.0 + 0.1 * k)
        video_rows.append({"dialogue": f"v{k // 6}", "index": k % 6, "speaker": "A", "media": video.name})
    speech_seconds = sum(duration(folder / r["media"]) for r in speech_rows)
    video_seconds = sum(duration(folder / r["media"]) for r in video_rows)
    return (
        write_manifest(folder / "speech.csv", speech_rows),
        write_manifest(folder / "video.csv", video_rows),
        speech_seconds,
        video_seconds,
    )


def timed(manifest: Path, cache: Path, **settings) -> tuple[float, int]:
    started = time.perf_counter()
    data, _ = dialogues_from_manifest(manifest, progress=False, cache_dir=cache, **settings)
    return time.perf_counter() - started, data.n_utterances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=24, help="speech utterances (half as many videos)")
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--audio-features", default="librosa")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        speech_csv, video_csv, speech_seconds, video_seconds = make_media(folder, args.utterances)
        results: dict = {"cpus": os.cpu_count(), "fps": args.fps, "audio_features": args.audio_features}
        off = {"text_encoder": None, "audio_features": None, "visual_features": None, "fps": args.fps}
        for workers in (1, 2):
            for modality, manifest, media_seconds, setting in (
                ("audio", speech_csv, speech_seconds, {"audio_features": args.audio_features}),
                ("visual", video_csv, video_seconds, {"visual_features": "face"}),
            ):
                seconds, n = timed(
                    manifest, folder / f"cache-{modality}-{workers}", **{**off, **setting}, workers=workers
                )
                results[f"{modality}_workers{workers}"] = {
                    "utterances": n,
                    "seconds": round(seconds, 2),
                    "utterances_per_second": round(n / seconds, 2),
                    "media_seconds_per_second": round(media_seconds / seconds, 2),
                }
        encoder = TextEncoder(cache_dir=folder / "text-cache", show_progress=False)
        texts = [f"{s} ({k})" for k, s in enumerate(SENTENCES * 64)]
        started = time.perf_counter()
        encoder.encode(texts)  # includes loading the model, as the first batch of a run does
        seconds = time.perf_counter() - started
        results["text"] = {
            "utterances": len(texts),
            "seconds": round(seconds, 2),
            "utterances_per_second": round(len(texts) / seconds, 2),
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
