"""Decoding with PyAV against references known by construction: tones, grey levels, colours, cut points.

Every recording here is written by PyAV (whose wheels bundle FFmpeg's encoders) or numpy,
so these tests need neither the ffmpeg program nor espeak-ng. The generators are also
used by test_extract_cluster.py and benchmarks/extract_cluster.py.
"""

from __future__ import annotations

import math
import shutil
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from joyful.extract.media import MAX_FRAME_WIDTH, SAMPLE_RATE, MediaError, decode_audio, probe, sample_frames

av = pytest.importorskip("av")

VIDEO_FPS = 10


# --------------------------------------------------------------------------- generators


def write_media(
    path: Path,
    *,
    frames: list[np.ndarray] | None = None,
    audio: np.ndarray | None = None,
    rate: int = 44_100,
    audio_codec: str = "aac",
    cover: np.ndarray | None = None,
    container: str | None = None,
) -> Path:
    """A recording of RGB ``frames`` at :data:`VIDEO_FPS` (MPEG-4 part 2) and ``audio`` (channels × samples)."""
    with av.open(str(path), "w", format=container) as out:
        streams = []  # every stream is added before the first packet is written
        if frames is not None:
            video = out.add_stream("mpeg4", rate=VIDEO_FPS)
            video.height, video.width = frames[0].shape[:2]
            video.pix_fmt = "yuv420p"
            video.bit_rate = 8_000_000  # high enough that flat colours survive the compression
            streams.append((video, [av.VideoFrame.from_ndarray(rgb, format="rgb24") for rgb in frames]))
        if audio is not None:
            sound = out.add_stream(audio_codec, rate=rate, layout="mono" if len(audio) == 1 else "stereo")
            planar = np.ascontiguousarray(audio, np.float32)
            samples = av.AudioFrame.from_ndarray(planar, format="fltp", layout=sound.layout.name)
            samples.sample_rate = rate
            streams.append((sound, [samples]))
        if cover is not None:  # an attached picture, as music files carry cover art
            art = out.add_stream("png")
            art.height, art.width = cover.shape[:2]
            art.pix_fmt = "rgb24"
            art.disposition = av.stream.Disposition.attached_pic.value  # PyAV 15 takes only an int
            streams.append((art, [av.VideoFrame.from_ndarray(cover, format="rgb24")]))
        for stream, items in streams:
            for k, item in enumerate(items):
                item.pts = k
                for packet in stream.encode(item):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """A 16-bit mono WAV, written by the standard library (libsndfile's fast path reads it)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)


def voice(seconds: float, rate: int, pitch: float = 140.0) -> np.ndarray:
    """A vowel-like sound: harmonics of a pitch with vibrato, under a slow loudness envelope."""
    t = np.arange(round(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(pitch * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))) / rate
    x = sum(np.sin(h * phase) / h for h in range(1, 8))
    return 0.3 * x * (0.6 + 0.4 * np.sin(np.pi * t / seconds)) / np.abs(x).max()


def grey_frames(n: int, size: tuple[int, int] = (240, 320)) -> list[np.ndarray]:
    """Frame ``k`` is flat grey of level 20 + 10 k: a frame's level tells which one it is."""
    return [np.full((*size, 3), 20 + 10 * k, np.uint8) for k in range(n)]


def frame_index(rgb: np.ndarray) -> int:
    return round((float(rgb.mean()) - 20) / 10)


def face_frames(seconds: float, drift: float = 1.0) -> list[np.ndarray]:
    """scikit-image's astronaut (head and shoulders) drifting right over a grey background, 320×240."""
    from skimage import data
    from skimage.transform import resize

    portrait = (resize(data.astronaut()[0:320, 90:410], (200, 200), anti_aliasing=True) * 255).astype(np.uint8)
    frames = []
    for k in range(round(seconds * VIDEO_FPS)):
        frame = np.full((240, 320, 3), 128, np.uint8)
        left = 20 + round(drift * 4 * k) % 100
        frame[20:220, left : left + 200] = portrait
        frames.append(frame)
    return frames


# --------------------------------------------------------------------------- audio


def spectrum_peaks(x: np.ndarray, n: int) -> list[float]:
    """The ``n`` strongest frequencies (Hz) of ``x``, at least 20 Hz apart."""
    magnitude = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    freqs = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)
    peaks: list[float] = []
    for i in np.argsort(magnitude)[::-1]:
        if all(abs(freqs[i] - p) > 20 for p in peaks):
            peaks.append(float(freqs[i]))
        if len(peaks) == n:
            break
    return sorted(peaks)


def test_aac_audio_is_decoded_to_16khz_mono_at_its_frequency_and_level(tmp_path):
    path = write_media(tmp_path / "tone.m4a", audio=tone(440, 2.0, 44_100)[None])
    x = decode_audio(path, None, None)
    assert x.dtype == np.float32 and x.ndim == 1
    assert 0 <= x.size - 2 * SAMPLE_RATE <= 1024 * SAMPLE_RATE / 44_100  # AAC pads its last 1024-sample frame
    assert spectrum_peaks(x, 1) == pytest.approx([440], abs=1.0)
    assert np.sqrt(np.mean(x**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)  # RMS of a sine of amplitude 0.5


def test_stereo_is_mixed_down_not_one_channel_taken(tmp_path):
    left, right = tone(440, 2.0, 44_100, 0.4), tone(660, 2.0, 44_100, 0.4)
    path = write_media(tmp_path / "stereo.mp4", frames=grey_frames(5), audio=np.stack([left, right]))
    x = decode_audio(path, None, None)
    assert spectrum_peaks(x, 2) == pytest.approx([440, 660], abs=1.0)
    # FFmpeg's stereo-to-mono mix is (L + R) / √2, as with the ffmpeg program before: each tone at 0.4 / √2.
    assert np.sqrt(np.mean(x**2)) == pytest.approx(np.sqrt(2 * (0.4 / np.sqrt(2)) ** 2 / 2), rel=0.03)


def test_segment_is_cut_at_the_sample(tmp_path):
    """1 s of silence then a 1 kHz tone, lossless (PCM in Matroska, which libsndfile does not read)."""
    rate = 48_000
    signal = np.concatenate([np.zeros(rate), tone(1000, 1.0, rate)])
    path = write_media(tmp_path / "step.mkv", audio=signal[None], rate=rate, audio_codec="pcm_s16le")
    x = decode_audio(path, 0.5, 1.5)
    assert x.size == SAMPLE_RATE  # exactly 1 s
    envelope = np.convolve(np.abs(x), np.ones(16) / 16, "same")
    onset = int(np.argmax(envelope > 0.25))
    assert abs(onset - SAMPLE_RATE // 2) <= 16  # the tone starts half-way, to 1 ms
    assert np.abs(x[: onset - 32]).max() < 1e-3  # silence before
    assert np.sqrt(np.mean(x[onset + 32 :] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)  # the tone after
    late = decode_audio(path, 1.2, 1.7)
    assert late.size == SAMPLE_RATE // 2 and spectrum_peaks(late, 1) == pytest.approx([1000], abs=2.0)
    with pytest.raises(MediaError, match="no audio decoded between 30 s and 31 s"):
        decode_audio(path, 30.0, 31.0)


def test_container_decoding_agrees_with_libsndfile_on_the_same_samples(tmp_path):
    """The same PCM as WAV (libsndfile + soxr) and in Matroska (PyAV + libswresample): two independent paths."""
    rate = 48_000
    signal = tone(220, 1.5, rate, 0.3) + tone(1250, 1.5, rate, 0.2)
    wav = write_wav(tmp_path / "two.wav", signal, rate)
    mkv = write_media(tmp_path / "two.mkv", audio=signal[None], rate=rate, audio_codec="pcm_s16le")
    a, b = decode_audio(wav, 0.25, 1.25), decode_audio(mkv, 0.25, 1.25)
    assert a.size == b.size == SAMPLE_RATE
    assert np.abs(a - b)[100:-100].max() < 1e-3  # the resamplers differ only at the segment's edges


# --------------------------------------------------------------------------- video


def ffmpeg_fps_choice(times: list[Fraction], fps: float) -> list[int]:
    """Which frames FFmpeg's ``fps`` filter (``round=near``) outputs, from its documentation.

    Each frame time is rounded to the nearest tick (halves away from zero); tick k shows
    the last frame rounded to k or earlier; ticks run from the first frame's to the end
    of the last frame (its time plus one frame duration).
    """

    def tick(t: Fraction) -> int:
        return math.floor(t * Fraction(fps) + Fraction(1, 2))

    ticks = [tick(t) for t in times]
    end = tick(times[-1] + Fraction(1, VIDEO_FPS))
    return [max(j for j, at in enumerate(ticks) if at <= k) for k in range(ticks[0], end)]


@pytest.fixture(scope="module")
def grey_video(tmp_path_factory):
    """2 s at 10 fps; frame k has grey level 20 + 10 k; with a tone for audio."""
    folder = tmp_path_factory.mktemp("grey")
    return write_media(folder / "grey.mp4", frames=grey_frames(20), audio=tone(440, 2.0, 44_100)[None])


@pytest.mark.parametrize(
    ("start", "end", "fps"), [(None, None, 2.0), (None, None, 3.0), (0.5, 1.5, 2.0), (0.33, 1.61, 4.0)]
)
def test_frames_are_sampled_at_fps_from_the_segment(grey_video, start, end, fps):
    frames = list(sample_frames(grey_video, start, end, fps))
    first, last = Fraction(str(start or 0)), Fraction(str(end or 2))
    inside = [k for k in range(20) if first <= Fraction(k, VIDEO_FPS) < last]  # frame k is shown at k / 10 s
    expected = [inside[j] for j in ffmpeg_fps_choice([Fraction(k, VIDEO_FPS) - first for k in inside], fps)]
    assert [frame_index(f) for f in frames] == expected
    assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in frames)
    assert all(np.abs(f.astype(int) - (20 + 10 * k)).max() <= 3 for f, k in zip(frames, expected, strict=True))


def test_the_hand_worked_case(grey_video):
    """2 fps over 2 s: ticks at 0, 0.5, 1, 1.5 s take frames 0.2 s after them (0.2 s × 2 fps rounds to tick 0)."""
    assert [frame_index(f) for f in sample_frames(grey_video, None, None, 2.0)] == [2, 7, 12, 17]


def test_a_segment_shorter_than_a_tick_gets_its_middle_frame(grey_video):
    (frame,) = sample_frames(grey_video, 0.92, 0.97, 2.0)
    assert frame_index(frame) == 10  # the first frame at or after the middle, 0.945 s
    with pytest.raises(MediaError, match="no video frame decoded between 5 s and 6 s"):
        list(sample_frames(grey_video, 5.0, 6.0, 2.0))


def test_wide_frames_are_scaled_to_the_maximum_width_keeping_colours(tmp_path):
    h, w = 540, 960
    quadrants = np.zeros((h, w, 3), np.uint8)
    quadrants[: h // 2, : w // 2] = (200, 30, 30)
    quadrants[: h // 2, w // 2 :] = (30, 200, 30)
    quadrants[h // 2 :, : w // 2] = (30, 30, 200)
    quadrants[h // 2 :, w // 2 :] = (230, 230, 230)
    path = write_media(tmp_path / "wide.mp4", frames=[quadrants] * 10)
    frames = list(sample_frames(path, None, None, 2.0))
    assert len(frames) == 2 and frames[0].shape == (270, MAX_FRAME_WIDTH, 3)
    f = frames[0].astype(int)
    centres = {(67, 120): (200, 30, 30), (67, 360): (30, 200, 30), (202, 120): (30, 30, 200)}
    for (r, c), colour in {**centres, (202, 360): (230, 230, 230)}.items():  # quadrant centres at half size
        assert np.abs(f[r - 20 : r + 20, c - 40 : c + 40].mean(axis=(0, 1)) - colour).max() < 8, (r, c)


# --------------------------------------------------------------------------- probing and errors


def test_probe_tells_streams_apart_and_cover_art_is_not_video(tmp_path, grey_video):
    assert probe(grey_video).has_video and probe(grey_video).has_audio
    assert probe(grey_video).duration == pytest.approx(2.0, abs=0.05)
    silent = write_media(tmp_path / "silent.mp4", frames=grey_frames(5))
    assert probe(silent).has_video and not probe(silent).has_audio
    art = np.zeros((32, 32, 3), np.uint8)
    song = write_media(tmp_path / "song.m4a", audio=tone(440, 1.0, 44_100)[None], cover=art, container="mp4")
    info = probe(song)
    assert info.has_audio and not info.has_video
    assert spectrum_peaks(decode_audio(song, None, None), 1) == pytest.approx([440], abs=1.0)
    with pytest.raises(MediaError, match="no video stream"):
        list(sample_frames(song, None, None, 2.0))
    with pytest.raises(MediaError, match="no audio stream"):
        decode_audio(silent, None, None)


def test_unreadable_files_are_media_errors_naming_the_file_and_why(tmp_path, grey_video):
    truncated = tmp_path / "truncated.mp4"
    data = grey_video.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # muxed without faststart: the index at the end is lost
    with pytest.raises(MediaError, match=r"FFmpeg cannot read truncated\.mp4: Invalid data found"):
        probe(truncated)
    noise = tmp_path / "noise.mov"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError, match=r"noise\.mov"):
        probe(noise)
    with pytest.raises(MediaError, match=r"FFmpeg cannot read absent\.mp4: No such file"):
        next(sample_frames(tmp_path / "absent.mp4", None, None, 2.0))


# --------------------------------------------------------------------------- no ffmpeg program


def test_extraction_needs_no_ffmpeg_program(tmp_path, monkeypatch):
    """With no ffmpeg or ffprobe on PATH a manifest of a video (face + voice) and a WAV is fully extracted."""
    from media_fixtures import write_manifest

    from joyful.extract.runner import extract_dataset

    rate = 22_050
    write_media(tmp_path / "face.mp4", frames=face_frames(2.0), audio=voice(2.0, rate)[None], rate=rate)
    write_wav(tmp_path / "voice.wav", voice(1.5, rate, pitch=220), rate)
    rows = [
        {"dialogue": "d", "index": 0, "speaker": "A", "media": "face.mp4", "start": 0.2, "end": 1.8},
        {"dialogue": "d", "index": 1, "speaker": "B", "media": "voice.wav"},
    ]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("ffmpeg") is None and shutil.which("ffprobe") is None
    report = extract_dataset(
        manifest,
        tmp_path / "out.jsonl",
        text_encoder=None,
        audio_features="librosa",
        visual_features="face",
        fps=2.0,
        workers=1,
        progress=False,
        cache_dir=tmp_path / "cache",
    )
    assert not report.failures, report.failures
    assert report.computed == {"a": 2, "v": 1} and report.present == {"a": 2, "v": 1}
