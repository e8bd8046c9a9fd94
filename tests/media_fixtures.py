"""Recordings made on the spot for the extraction tests: speech, a face video, silence, broken files.

Speech comes from espeak-ng (voices and rates stand in for speakers), the face from the
astronaut photograph that ships with scikit-image, moved and scaled across frames, and
video is encoded by ffmpeg from raw frames piped to it. Nothing is downloaded.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

FRAME_SIZE = (320, 240)  # width, height
VIDEO_FPS = 10


def require_tools() -> None:
    missing = [t for t in ("ffmpeg", "ffprobe", "espeak-ng") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"extraction tests need {', '.join(missing)} on PATH")


def speech(path: Path, text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50) -> Path:
    """A WAV of ``text`` spoken by espeak-ng; voice, rate and pitch make different speakers."""
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text],
        check=True,
        capture_output=True,
    )
    return path


def silence(path: Path, seconds: float = 1.0, rate: int = 16_000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return path


def face_video(path: Path, audio: Path | None = None, seconds: float = 2.0) -> Path:
    """The astronaut's head and shoulders drifting and zooming over a grey background."""
    from skimage import data
    from skimage.transform import resize

    portrait = data.astronaut()[0:320, 90:410]  # face at about rows 64-167, columns 82-185 of this crop
    n = int(seconds * VIDEO_FPS)
    w, h = FRAME_SIZE
    frames = []
    for k in range(n):
        t = k / max(1, n - 1)
        scale = 0.62 + 0.12 * t
        ph, pw = int(portrait.shape[0] * scale), int(portrait.shape[1] * scale)
        small = (resize(portrait, (ph, pw), anti_aliasing=True) * 255).astype(np.uint8)
        frame = np.full((h, w, 3), 128, dtype=np.uint8)
        top, left = int(10 - 10 * t), int(20 + 60 * t)
        frame[top : top + ph, left : left + pw] = small[: h - top, : w - left]
        frames.append(frame)
    return _encode(path, frames, audio)


def scene_video(path: Path, audio: Path | None = None, seconds: float = 2.0) -> Path:
    """A pan across scikit-image's coffee cup: moving pictures with no face in them."""
    from skimage import data

    scene = data.coffee()  # 400 x 600
    w, h = FRAME_SIZE
    n = int(seconds * VIDEO_FPS)
    frames = [np.ascontiguousarray(scene[80 : 80 + h, 10 * k : 10 * k + w]) for k in range(n)]
    return _encode(path, frames, audio)


def truncated(source: Path, path: Path) -> Path:
    """The first half of ``source``'s bytes: an MP4 whose index (at the end) is lost."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _encode(path: Path, frames: list[np.ndarray], audio: Path | None) -> Path:
    w, h = FRAME_SIZE
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}"]
    cmd += ["-r", str(VIDEO_FPS), "-i", "-"]
    if audio is not None:
        cmd += ["-i", str(audio), "-c:a", "aac", "-shortest"]
    cmd += ["-c:v", "mpeg4", "-q:v", "3", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True, capture_output=True)
    return path


def write_manifest(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    """A CSV manifest of ``rows``; ``columns`` defaults to the union of the rows' keys."""
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def make_corpus(folder: Path) -> dict[str, Path]:
    """A small corpus: two speakers' speech, a face video with speech, silence, a faceless clip, a broken file."""
    require_tools()
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "us": speech(folder / "us.wav", "Hello there, how are you doing today?", "en-us", 170, 40),
        "gb": speech(folder / "gb.wav", "I am quite well, thank you for asking.", "en-gb", 120, 70),
        "us2": speech(folder / "us2.wav", "That is wonderful news.", "en-us", 170, 40),
        "silence": silence(folder / "silence.wav", 1.0),
    }
    files["face"] = face_video(folder / "face.mp4", audio=files["gb"], seconds=2.0)
    files["scene"] = scene_video(folder / "scene.mp4", audio=None, seconds=1.5)
    files["broken"] = truncated(files["face"], folder / "broken.mp4")
    return files


_shared: dict[str, Path] = {}


def shared_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """:func:`make_corpus` once per test session, whichever test module asks first."""
    if not _shared:
        _shared.update(make_corpus(tmp_path_factory.mktemp("corpus")))
    return dict(_shared)


def corpus_rows() -> list[dict]:
    """Manifest rows over the corpus (paths relative to its folder): every kind of recording, one broken."""
    return [
        {
            "dialogue": "d1",
            "index": 0,
            "speaker": "A",
            "text": "Hello there, how are you doing today?",
            "media": "us.wav",
            "label": "happy",
        },
        {
            "dialogue": "d1",
            "index": 1,
            "speaker": "B",
            "text": "I am quite well, thank you.",
            "media": "face.mp4",
            "start": 0,
            "end": 2,
            "label": "neutral",
        },
        {"dialogue": "d1", "index": 2, "speaker": "A", "text": "", "media": "silence.wav", "label": "neutral"},
        {
            "dialogue": "d2",
            "index": 1,
            "speaker": "B",
            "text": "That is wonderful news.",
            "media": "us2.wav",
            "label": "happy",
        },
        {"dialogue": "d2", "index": 0, "speaker": "A", "text": "Look at this.", "media": "scene.mp4", "label": "sad"},
        {"dialogue": "d2", "index": 2, "speaker": "B", "text": "Nothing to see.", "media": "", "label": ""},
        {"dialogue": "d2", "index": 3, "speaker": "A", "text": "Broken.", "media": "broken.mp4", "label": "sad"},
    ]
