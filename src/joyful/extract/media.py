"""Reading recordings: what streams a file has, its audio as samples, its video as frames.

ffmpeg is run as a subprocess rather than through a binding, because it is the one tool
that reads every container and codec a corpus may hold, and a crash or hang in a
decoder then stays in the child process. Plain audio files that libsndfile reads are
read in-process instead, which is much faster for corpora of one file per utterance.
Every failure becomes a :class:`MediaError` with the decoder's own last words, which
the runner reports against the manifest row.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from joyful.errors import JoyfulError

#: Audio is analysed as mono at this rate: enough for speech, and what openSMILE's sets expect.
SAMPLE_RATE = 16_000
#: Frames are scaled down to at most this width before face detection, bounding its cost.
MAX_FRAME_WIDTH = 480
_HASH_CHUNK = 1 << 20


class MediaError(Exception):
    """A recording that cannot be read or decoded; the message says why, in ffmpeg's words."""


@dataclass(frozen=True)
class MediaInfo:
    has_audio: bool
    has_video: bool
    duration: float | None


def require_ffmpeg() -> None:
    """Fail early, once, with an actionable message, instead of once per recording."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        raise JoyfulError(
            f"{' and '.join(missing)} not found on PATH; extracting audio or visual features needs ffmpeg "
            "(e.g. apt-get install ffmpeg)"
        )


def sha256_file(path: Path) -> str:
    """Content hash of a recording: the cache key part that survives renames and copies."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise MediaError(f"cannot read the file ({e.strerror or e})") from None
    return h.hexdigest()


def probe(path: Path) -> MediaInfo:
    """Which streams ``path`` holds; cover art in audio files does not count as video."""
    sound = _sound_file_info(path)
    if sound is not None:
        return MediaInfo(has_audio=True, has_video=False, duration=sound.duration)
    proc = _run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)])
    try:
        info = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise MediaError("ffprobe gave no readable description of the file") from None
    streams = info.get("streams") or []
    kinds = {
        s.get("codec_type")
        for s in streams
        if not (s.get("codec_type") == "video" and (s.get("disposition") or {}).get("attached_pic"))
    }
    if not kinds & {"audio", "video"}:
        raise MediaError("the file holds no audio or video stream")
    duration = (info.get("format") or {}).get("duration")
    return MediaInfo("audio" in kinds, "video" in kinds, float(duration) if duration else None)


def decode_audio(path: Path, start: float | None, end: float | None) -> np.ndarray:
    """The first audio stream between ``start`` and ``end`` as mono float32 samples at :data:`SAMPLE_RATE`."""
    if _sound_file_info(path) is not None:
        samples = _read_sound_file(path, start, end)
    else:
        cmd = ["ffmpeg", "-nostdin", "-v", "error", *_segment(start, end), "-i", str(path)]
        cmd += ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-"]
        samples = np.frombuffer(_run(cmd).stdout, dtype="<f4").astype(np.float32)
    if samples.size == 0:
        raise MediaError(f"no audio decoded{_segment_text(start, end)}")
    return samples


def _sound_file_info(path: Path):
    """libsndfile's description of ``path`` if it reads it (WAV, FLAC, Ogg, MP3...), else ``None``.

    Audio-only files are most corpora's utterances; reading them in-process skips two
    ffmpeg/ffprobe start-ups per utterance, which cost more than the features themselves.
    """
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError):  # not a format libsndfile reads
        return None
    return info if info.frames > 0 and info.samplerate > 0 else None


def _read_sound_file(path: Path, start: float | None, end: float | None) -> np.ndarray:
    import soundfile
    import soxr

    try:
        with soundfile.SoundFile(str(path)) as f:
            rate, total = f.samplerate, f.frames
            first = min(total, round((start or 0.0) * rate))
            last = total if end is None else min(total, round(end * rate))
            f.seek(first)
            samples = f.read(max(0, last - first), dtype="float32", always_2d=True).mean(axis=1)
    except (soundfile.LibsndfileError, RuntimeError) as e:
        raise MediaError(f"cannot decode the audio: {e}") from None
    if rate != SAMPLE_RATE and samples.size:
        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(samples, dtype=np.float32)


def sample_frames(path: Path, start: float | None, end: float | None, fps: float) -> Iterator[np.ndarray]:
    """RGB uint8 frames of the first video stream, ``fps`` per second, at most :data:`MAX_FRAME_WIDTH` wide.

    A segment shorter than one sampling interval still gets one frame, from its middle.
    """
    scale = f"scale=w='min({MAX_FRAME_WIDTH},iw)':h=-2"
    n = yield from _frames([*_segment(start, end), "-i", str(path)], ["-vf", f"fps={fps:g},{scale}"])
    if n == 0:
        middle = (start or 0.0) + ((end - (start or 0.0)) / 2 if end is not None else 0.0)
        n = yield from _frames(["-ss", f"{middle:.6f}", "-i", str(path)], ["-vf", scale, "-frames:v", "1"])
    if n == 0:
        raise MediaError(f"no video frame decoded{_segment_text(start, end)}")


def _frames(inputs: list[str], outputs: list[str]) -> Iterator[np.ndarray]:
    """Run ffmpeg, yielding its frames one at a time; returns how many there were.

    Frames arrive as a PPM stream, so each carries its own size (ffmpeg applies rotation
    metadata, which can swap width and height), and a long utterance never holds all its
    frames in memory.
    """
    cmd = ["ffmpeg", "-nostdin", "-v", "error", *inputs, "-map", "0:v:0", "-an", *outputs]
    cmd += ["-f", "image2pipe", "-c:v", "ppm", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    n = 0
    try:
        assert proc.stdout is not None and proc.stderr is not None
        while (frame := _read_ppm(proc.stdout)) is not None:
            n += 1
            yield frame
        stderr = proc.stderr.read()
        if proc.wait() != 0:
            raise MediaError(f"ffmpeg could not decode the video: {_last_line(stderr)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    return n


def _read_ppm(stream) -> np.ndarray | None:
    """One binary PPM (P6) image from ``stream``, or ``None`` at the end of the stream."""
    tokens: list[bytes] = []
    while len(tokens) < 4:
        line = stream.readline()
        if not line:
            if tokens:
                raise MediaError("the video stream from ffmpeg ended inside a frame header")
            return None
        tokens += line.split(b"#", 1)[0].split()
    magic, width, height, maxval = tokens
    if magic != b"P6" or maxval != b"255":
        raise MediaError("ffmpeg sent frames in an unexpected format")
    w, h = int(width), int(height)
    data = stream.read(w * h * 3)
    if len(data) != w * h * 3:
        raise MediaError("the video stream from ffmpeg ended inside a frame")
    return np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)


def _segment(start: float | None, end: float | None) -> list[str]:
    """Input options that cut ``[start, end)``; before ``-i`` so ffmpeg seeks instead of decoding up to it."""
    args = []
    if start is not None:
        args += ["-ss", f"{start:.6f}"]
    if end is not None:
        args += ["-t", f"{end - (start or 0.0):.6f}"]
    return args


def _segment_text(start: float | None, end: float | None) -> str:
    if start is None and end is None:
        return ""
    until = "the end" if end is None else f"{end:g} s"
    return f" between {start or 0:g} s and {until} (is the segment inside the file?)"


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False)
    except OSError as e:
        raise MediaError(f"cannot run {cmd[0]} ({e.strerror or e})") from None
    if proc.returncode != 0:
        raise MediaError(f"{cmd[0]} could not read the file: {_last_line(proc.stderr)}")
    return proc


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"
