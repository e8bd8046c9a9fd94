"""Audio and visual feature extractors on recordings made by the tests: widths, finiteness, sense."""

from __future__ import annotations

import numpy as np
import pytest
from media_fixtures import shared_corpus

from joyful.errors import JoyfulError
from joyful.extract.audio import (
    AUDIO_FEATURE_SETS,
    LIBROSA_WIDTH,
    N_PROSODY,
    audio_extractor,
    audio_feature_set,
    librosa_functionals,
)
from joyful.extract.media import MediaError, decode_audio, probe, sample_frames
from joyful.extract.visual import FACE_WIDTH, VISUAL_FEATURE_SETS, face_features


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return shared_corpus(tmp_path_factory)


def test_librosa_features_have_a_fixed_width_are_finite_and_tell_voices_apart(corpus):
    us, us2, gb = (librosa_functionals(decode_audio(corpus[k], None, None)) for k in ("us", "us2", "gb"))
    width = AUDIO_FEATURE_SETS["librosa"].width
    for v in (us, us2, gb):
        assert v.shape == (width,) and v.dtype == np.float32 and np.isfinite(v).all()
    # The same voice saying other words stays closer than another voice (accent, rate, pitch).
    assert np.linalg.norm(us - us2) < np.linalg.norm(us - gb)
    pitch = LIBROSA_WIDTH - N_PROSODY  # mean pitch over voiced frames, in semitones
    assert gb[pitch] > us[pitch] + 2  # espeak-ng pitch 70 against 40


def test_silence_and_tiny_segments_are_described_not_missing(corpus):
    quiet = librosa_functionals(decode_audio(corpus["silence"], None, None))
    assert np.isfinite(quiet).all() and quiet[-2] == 0  # voiced fraction 0 (then mean voicing probability, duration)
    blip = librosa_functionals(decode_audio(corpus["us"], 0.5, 0.52))
    assert blip.shape == quiet.shape and np.isfinite(blip).all()


def test_audio_is_cut_to_the_segment(corpus):
    whole = decode_audio(corpus["gb"], None, None)
    part = decode_audio(corpus["gb"], 1.0, 1.5)
    assert abs(part.size - 8000) <= 16 and whole.size > 3 * 16000
    with pytest.raises(MediaError, match="no audio decoded"):
        decode_audio(corpus["gb"], 30.0, 31.0)


def test_every_opensmile_set_has_its_declared_width(corpus):
    samples = decode_audio(corpus["us2"], None, None)
    for name, spec in AUDIO_FEATURE_SETS.items():
        if name == "librosa":
            continue
        v = audio_extractor(name)(samples)
        assert v.shape == (spec.width,) and np.isfinite(v).all(), name


def test_feature_set_names(corpus):
    assert audio_feature_set("eGeMAPS").name == "egemaps" and audio_feature_set("ComParE-2016").name == "compare2016"
    with pytest.raises(JoyfulError, match="unknown audio feature set 'mfcc'; choose one of librosa, egemaps"):
        audio_feature_set("mfcc")


def test_probe_tells_streams_apart(corpus):
    assert probe(corpus["face"]).has_video and probe(corpus["face"]).has_audio
    assert not probe(corpus["us"]).has_video
    assert not probe(corpus["scene"]).has_audio
    with pytest.raises(MediaError, match="broken.mp4"):
        probe(corpus["broken"])


def test_face_found_in_the_astronaut_video_and_not_in_the_coffee_scene(corpus):
    v = face_features(sample_frames(corpus["face"], None, None, 2.0))
    assert v is not None and v.shape == (FACE_WIDTH,) == (VISUAL_FEATURE_SETS["face"].width,)
    assert np.isfinite(v).all()
    cx, cy, w, h = v[:4]
    assert 0.2 < cx < 0.7 and 0.15 < cy < 0.6 and 0.1 < w < 0.5  # the drifting face, relative to the frame
    assert v[-1] == 1.0  # a face in every sampled frame
    assert face_features(sample_frames(corpus["scene"], None, None, 2.0)) is None


def test_short_segment_still_gets_a_frame(corpus):
    frames = list(sample_frames(corpus["face"], 0.9, 1.0, 2.0))
    assert len(frames) == 1 and frames[0].shape == (240, 320, 3)
    assert len(list(sample_frames(corpus["face"], None, None, 4.0))) == 8


def test_features_are_deterministic(corpus):
    a = librosa_functionals(decode_audio(corpus["face"], 0.2, 1.8))
    b = librosa_functionals(decode_audio(corpus["face"], 0.2, 1.8))
    assert np.array_equal(a, b)
    v1 = face_features(sample_frames(corpus["face"], 0.0, 1.0, 3.0))
    v2 = face_features(sample_frames(corpus["face"], 0.0, 1.0, 3.0))
    assert np.array_equal(v1, v2)
