"""Reading recordings: what streams a file has, its audio as samples, its video as frames.

Decoding runs in-process through PyAV, whose wheels bundle FFmpeg's libraries: it reads
every container and codec a corpus may hold, as the ``ffmpeg`` program did, but comes
with ``pip install`` (a fresh machine needs no system package) and costs no program
start-up per utterance. Cutting, mixing down, resampling, frame sampling and scaling
go through the same FFmpeg filters the program's command lines used (``atrim``,
``aformat``, ``fps``, ``scale``), so the samples and frames are the ones it gave. Plain
audio files that libsndfile reads (WAV, FLAC, Ogg, MP3) are read through it instead
and resampled by soxr, as before: that is faster still for corpora of one file per
utterance. A decoder crash now takes its process with it; the runner decodes in worker
processes and caches every finished result, so a rerun resumes. Every failure becomes
a :class:`MediaError` saying why, which the runner reports against the manifest row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import av.audio.frame
    import av.container
    import av.filter
    import av.stream
    import av.video.frame

#: Audio is analysed as mono at this rate: enough for speech, and what openSMILE's sets expect.
SAMPLE_RATE = 16_000
#: Frames are scaled down to at most this width before face detection, bounding its cost.
MAX_FRAME_WIDTH = 480
#: Audio is decoded from this long before a segment's start, then cut: a decoder that starts
#: cold (AAC's overlapping windows, MP3's bit reservoir, Opus's pre-roll) is wrong at first.
AUDIO_PREROLL = 0.5
_HASH_CHUNK = 1 << 20
#: Filters that undo a display rotation of so many degrees clockwise, as the ffmpeg program's autorotate.
_UPRIGHT = {90: [("transpose", "clock")], 180: [("hflip", None), ("vflip", None)], 270: [("transpose", "cclock")]}


class MediaError(Exception):
    """A recording that cannot be read or decoded; the message says why, in FFmpeg's words."""


@dataclass(frozen=True)
class MediaInfo:
    has_audio: bool
    has_video: bool
    duration: float | None


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
    with _open(path) as container:
        has_audio, has_video = bool(container.streams.audio), _video_stream(container) is not None
        duration = container.duration / 1_000_000 if container.duration else None  # AV_TIME_BASE units
    if not (has_audio or has_video):
        raise MediaError("the file holds no audio or video stream")
    return MediaInfo(has_audio, has_video, duration)


def decode_audio(path: Path, start: float | None, end: float | None) -> np.ndarray:
    """The first audio stream between ``start`` and ``end`` as mono float32 samples at :data:`SAMPLE_RATE`."""
    if _sound_file_info(path) is not None:
        samples = _read_sound_file(path, start, end)
    else:
        samples = _decode_audio_stream(path, start, end)
    if samples.size == 0:
        raise MediaError(f"no audio decoded{_segment_text(start, end)}")
    return samples


def _sound_file_info(path: Path):
    """libsndfile's description of ``path`` if it reads it (WAV, FLAC, Ogg, MP3...), else ``None``.

    Audio-only files are most corpora's utterances; libsndfile opens them faster than
    FFmpeg's probing does, which matters when each utterance is a file of its own.
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


def _decode_audio_stream(path: Path, start: float | None, end: float | None) -> np.ndarray:
    """The first audio stream of a container, cut and converted by FFmpeg's ``atrim`` and ``aformat`` filters.

    This is the ``ffmpeg`` program's own chain for ``-ss START -t LENGTH -ac 1 -ar 16000``:
    timestamps are made relative to ``start`` (counted from the container's first
    timestamp), ``atrim`` cuts at the sample, and libswresample mixes down and resamples,
    so the samples are the ones the program gave.
    """
    import av

    early = start - AUDIO_PREROLL if start is not None and start > AUDIO_PREROLL else None
    with _stream(path, "audio", early) as (container, stream):
        shift = round((_origin(container) + _microseconds(start or 0.0)) / stream.time_base)
        graph, pieces = None, []
        try:
            with closing(_decoded(container, stream, "audio")) as frames:
                for frame in frames:
                    if graph is None:
                        graph = _audio_graph(frame, stream.time_base, start, end)
                    if frame.pts is not None:
                        frame.pts -= shift
                    try:
                        graph.push(frame)
                    except av.EOFError:  # atrim has passed the segment's end
                        break
                    pieces += [f.to_ndarray().reshape(-1) for f in _pulled(graph)]
            if graph is not None:
                with suppress(av.EOFError):
                    graph.push(None)
                pieces += [f.to_ndarray().reshape(-1) for f in _pulled(graph)]
        except av.FFmpegError as e:
            raise MediaError(f"FFmpeg cannot convert the audio: {e.strerror or e}") from None
    return np.concatenate(pieces).astype(np.float32, copy=False) if pieces else np.zeros(0, dtype=np.float32)


def _audio_graph(
    frame: av.audio.frame.AudioFrame, time_base: Fraction, start: float | None, end: float | None
) -> av.filter.Graph:
    """abuffer → atrim to ``[0, end - start)`` → mono float at :data:`SAMPLE_RATE` (libswresample)."""
    import av

    graph = av.filter.Graph()
    nodes = [
        graph.add(
            "abuffer",
            sample_rate=str(frame.sample_rate),
            sample_fmt=frame.format.name,
            channel_layout=frame.layout.name,
            time_base=str(time_base),
        )
    ]
    trim = {"start": "0"} if start is not None else {}
    if end is not None:
        trim["duration"] = f"{end - (start or 0.0):.6f}"
    if trim:
        nodes.append(graph.add("atrim", **trim))
    nodes.append(graph.add("aformat", sample_fmts="flt", channel_layouts="mono", sample_rates=str(SAMPLE_RATE)))
    nodes.append(graph.add("abuffersink"))
    graph.link_nodes(*nodes).configure()
    return graph


def sample_frames(path: Path, start: float | None, end: float | None, fps: float) -> Iterator[np.ndarray]:
    """RGB uint8 frames of the first video stream, ``fps`` per second, at most :data:`MAX_FRAME_WIDTH` wide.

    A segment shorter than one sampling interval still gets one frame, from its middle.
    Rotation metadata is applied, as players do (so width and height may be swapped).
    """
    n = 0
    for frame in _filtered_frames(path, start, end, fps):
        n += 1
        yield frame
    if n == 0:
        middle = (start or 0.0) + ((end - (start or 0.0)) / 2 if end is not None else 0.0)
        with closing(_filtered_frames(path, middle, None, None)) as frames:
            frame = next(frames, None)
        if frame is None:
            raise MediaError(f"no video frame decoded{_segment_text(start, end)}")
        yield frame


def _filtered_frames(path: Path, start: float | None, end: float | None, fps: float | None) -> Iterator[np.ndarray]:
    """Frames with timestamps in ``[start, end)``, through FFmpeg's rotation, ``fps`` and ``scale`` filters.

    Timestamps are made relative to ``start``, as the ``ffmpeg`` program's input ``-ss``
    did, so ``fps`` picks the same frames: at each tick ``k / fps``, the last frame shown
    by then. The filters run one frame at a time, so a long segment is never held in
    memory. ``fps=None`` passes every frame (scaled).
    """
    import av

    with _stream(path, "video", start or None) as (container, stream):
        first = _origin(container) + _microseconds(start or 0.0)
        until = None if end is None else _origin(container) + _microseconds(end)
        graph, expected = None, 0
        try:
            with closing(_decoded(container, stream, "video")) as frames:
                for frame in frames:
                    if frame.pts is None:  # a raw stream without timestamps: frames follow each other
                        frame.pts = expected
                    expected = frame.pts + (frame.duration or 0)
                    t = frame.pts * stream.time_base
                    if t < first:
                        continue
                    if until is not None and t >= until:
                        break
                    frame.pts -= round(first / stream.time_base)
                    if graph is None:
                        graph = _frame_graph(frame, stream.time_base, fps)
                    graph.push(frame)
                    yield from (f.to_ndarray() for f in _pulled(graph))
            if graph is not None:
                graph.push(None)  # end of input: fps emits the frames it still holds
                yield from (f.to_ndarray() for f in _pulled(graph))
        except av.FFmpegError as e:
            raise MediaError(f"FFmpeg cannot convert the video frames: {e.strerror or e}") from None


def _frame_graph(frame: av.video.frame.VideoFrame, time_base: Fraction, fps: float | None) -> av.filter.Graph:
    """buffer → rotation → fps → scale to at most :data:`MAX_FRAME_WIDTH` (bicubic, as ``ffmpeg``) → RGB."""
    import av

    graph = av.filter.Graph()
    source = graph.add(
        "buffer",
        video_size=f"{frame.width}x{frame.height}",
        pix_fmt=frame.format.name,
        time_base=str(time_base),
        pixel_aspect="1/1",
        colorspace=str(int(frame.colorspace)),  # so the RGB conversion uses the recording's colour matrix
        range=str(int(frame.color_range)),
    )
    nodes = [source, *(graph.add(name, args) for name, args in _UPRIGHT.get(-round(frame.rotation) % 360, []))]
    if fps is not None:
        nodes.append(graph.add("fps", f"{fps:g}"))
    nodes.append(graph.add("scale", w=f"min({MAX_FRAME_WIDTH},iw)", h="-2", flags="bicubic"))
    nodes.append(graph.add("format", "rgb24"))
    nodes.append(graph.add("buffersink"))
    graph.link_nodes(*nodes).configure()
    return graph


def _pulled(graph: av.filter.Graph) -> Iterator[av.audio.frame.AudioFrame | av.video.frame.VideoFrame]:
    """Every frame the filter graph has ready."""
    import av

    while True:
        try:
            yield graph.pull()
        except (av.BlockingIOError, av.EOFError):  # needs more input, or has given everything
            return


@contextmanager
def _open(path: Path) -> Iterator[av.container.InputContainer]:
    """``path`` opened by FFmpeg; what it cannot open is a :class:`MediaError` naming the file and the reason."""
    import av

    try:
        container = av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as e:
        raise MediaError(f"FFmpeg cannot read {Path(path).name}: {e.strerror or e}") from None
    with container:
        yield container


def _video_stream(container: av.container.InputContainer) -> av.stream.Stream | None:
    """The first video stream that is a picture sequence, not an audio file's cover art."""
    import av

    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


@contextmanager
def _stream(
    path: Path, kind: str, seconds: float | None
) -> Iterator[tuple[av.container.InputContainer, av.stream.Stream]]:
    """``path`` open at the key frame at or before ``seconds`` (if given), and its first ``kind`` stream.

    Frames before the wanted time are then decoded and dropped by timestamp. A container
    that cannot seek (a raw stream without timestamps) is left unusable by the attempt,
    so it is opened again and decoded from the beginning: slower, the same frames.
    """
    import av

    with _open(path) as container:
        stream = _first_stream(container, kind)
        if seconds is None:
            yield container, stream
            return
        try:
            offset = (_origin(container) + _microseconds(seconds)) / stream.time_base
            container.seek(max(0, int(offset)), stream=stream)
        except av.FFmpegError:
            pass
        else:
            yield container, stream
            return
    with _open(path) as container:
        yield container, _first_stream(container, kind)


def _first_stream(container: av.container.InputContainer, kind: str) -> av.stream.Stream:
    """The first audio, or video (not cover art), stream, set to decode on one thread (the pool uses every core)."""
    if kind == "audio":
        stream = container.streams.audio[0] if container.streams.audio else None
    else:
        stream = _video_stream(container)
    if stream is None:
        raise MediaError(f"the file holds no {kind} stream")
    stream.codec_context.thread_count = 1
    return stream


def _origin(container: av.container.InputContainer) -> Fraction:
    """The container's first timestamp, in seconds: where a manifest's times count from, as ``ffmpeg -ss``'s do."""
    return Fraction(container.start_time or 0, 1_000_000)


def _decoded(
    container: av.container.InputContainer, stream: av.stream.Stream, what: str
) -> Iterator[av.audio.frame.AudioFrame | av.video.frame.VideoFrame]:
    """Decoded frames of ``stream``; damaged packets are skipped, and a damaged end ends the stream.

    This is what the ``ffmpeg`` program does, so one corrupt packet in a long recording
    costs a frame, not the utterance. Only when nothing at all decodes is it an error.
    """
    import av

    packets, error, n = container.demux(stream), None, 0
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as e:  # truncated or damaged container: keep what was read
            error = e
            break
        try:
            frames = packet.decode()
        except av.FFmpegError as e:
            error = e
            continue
        n += len(frames)
        yield from frames
    if n == 0 and error is not None:
        raise MediaError(f"FFmpeg cannot decode the {what}: {error.strerror or error}")


def _microseconds(seconds: float) -> Fraction:
    """``seconds`` to FFmpeg's precision: the float 0.9 lies just above the frame stamped 0.9 s."""
    return Fraction(round(seconds * 1_000_000), 1_000_000)


def _segment_text(start: float | None, end: float | None) -> str:
    if start is None and end is None:
        return ""
    until = "the end" if end is None else f"{end:g} s"
    return f" between {start or 0:g} s and {until} (is the segment inside the file?)"
