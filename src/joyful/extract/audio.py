"""Utterance-level acoustic features: a librosa default and openSMILE's standard sets, chosen by name.

Every extractor turns one utterance's samples into one vector of a fixed width known
before any audio is seen, so an utterance without audio can be given a NaN row of the
right width. The default is built on librosa (ISC licence) so that it can be used for
any purpose; openSMILE's sets are the ones emotion papers report, but openSMILE is free
for research and personal use only (commercial use needs a licence from audEERING),
which is why the user has to ask for them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from joyful.errors import JoyfulError
from joyful.extract.cache import package_version
from joyful.extract.media import SAMPLE_RATE

#: Statistics taken over frames for every low-level descriptor of the default set.
PERCENTILES = (10, 25, 50, 75, 90)
N_STATS = 4 + len(PERCENTILES)  # mean, std, min, max, percentiles
N_MFCC = 13
N_CONTRAST_BANDS = 6  # librosa returns one more row: the residual band
#: Frame-level descriptors of the default set, in output order (pitch is handled apart).
LIBROSA_LLDS = (
    ["rms_db", "zcr", "centroid", "bandwidth", "rolloff", "flatness"]
    + [f"contrast{i}" for i in range(N_CONTRAST_BANDS + 1)]
    + [f"mfcc{i}" for i in range(N_MFCC)]
    + [f"mfcc_delta{i}" for i in range(N_MFCC)]
)
#: Pitch statistics over voiced frames, the voiced fraction, mean voicing probability, duration.
N_PROSODY = N_STATS + 3
LIBROSA_WIDTH = len(LIBROSA_LLDS) * N_STATS + N_PROSODY

_N_FFT, _WIN, _HOP = 512, 400, 160  # 32 ms FFT, 25 ms window, 10 ms hop at 16 kHz
_PITCH_FRAME, _PITCH_HOP = 1024, 320  # pyin needs two periods of the lowest pitch; 20 ms is enough for prosody
_FMIN, _FMAX = 65.0, 500.0  # covers low male to high child voices
_PITCH_RESOLUTION = 0.2  # semitones per pitch state: a third of pyin's default cost, the same statistics
#: Segments shorter than this are padded with silence: below it pyin and openSMILE produce no frames.
MIN_SAMPLES = SAMPLE_RATE // 4


@dataclass(frozen=True)
class AudioFeatureSet:
    """A named feature set: how to build its extractor, and its width, known without running it."""

    name: str
    width: int
    build: Callable[[], Callable[[np.ndarray], np.ndarray]]
    settings: dict[str, Any]
    package: str
    """The distribution it needs, checked before any work starts."""


def librosa_functionals(samples: np.ndarray) -> np.ndarray:
    """Prosody, energy, spectral shape and MFCC functionals of a mono 16 kHz signal.

    Pitch statistics are taken over voiced frames only (a pitch of "unvoiced" is not a
    number); a signal with no voiced frame, such as silence, gets zeros there and a
    voiced fraction of 0, so silence is described rather than treated as missing.
    """
    import librosa

    y = _pad(samples)
    spec = np.abs(librosa.stft(y, n_fft=_N_FFT, hop_length=_HOP, win_length=_WIN))
    power = spec**2
    mel = librosa.feature.melspectrogram(S=power, sr=SAMPLE_RATE, n_mels=40, fmax=SAMPLE_RATE / 2)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel, ref=1.0, top_db=None), n_mfcc=N_MFCC)
    llds = np.vstack(
        [
            librosa.amplitude_to_db(librosa.feature.rms(S=spec, frame_length=_N_FFT), ref=1.0, top_db=None),
            librosa.feature.zero_crossing_rate(y, frame_length=_N_FFT, hop_length=_HOP),
            librosa.feature.spectral_centroid(S=spec, sr=SAMPLE_RATE) / 1000.0,  # kHz keeps scales comparable
            librosa.feature.spectral_bandwidth(S=spec, sr=SAMPLE_RATE) / 1000.0,
            librosa.feature.spectral_rolloff(S=spec, sr=SAMPLE_RATE) / 1000.0,
            librosa.feature.spectral_flatness(S=spec),
            librosa.feature.spectral_contrast(S=spec, sr=SAMPLE_RATE, n_bands=N_CONTRAST_BANDS, fmin=100.0),
            mfcc,
            librosa.feature.delta(mfcc, mode="nearest"),
        ]
    )
    f0, voiced, voiced_prob = librosa.pyin(
        y,
        fmin=_FMIN,
        fmax=_FMAX,
        sr=SAMPLE_RATE,
        frame_length=_PITCH_FRAME,
        hop_length=_PITCH_HOP,
        resolution=_PITCH_RESOLUTION,
    )
    semitones = 12.0 * np.log2(f0[voiced] / _FMIN)  # relative to the pitch floor, so always >= 0
    pitch = _stats(semitones[None, :])[0] if semitones.size else np.zeros(N_STATS)
    prosody = np.concatenate([pitch, [voiced.mean(), np.nan_to_num(voiced_prob).mean(), samples.size / SAMPLE_RATE]])
    out = np.concatenate([_stats(llds).ravel(), prosody]).astype(np.float32)
    assert out.shape == (LIBROSA_WIDTH,)
    return _finite(out)


def _stats(x: np.ndarray) -> np.ndarray:
    """Per row: mean, std, min, max and :data:`PERCENTILES` over frames, as ``(rows, N_STATS)``."""
    return np.column_stack(
        [x.mean(axis=1), x.std(axis=1), x.min(axis=1), x.max(axis=1), *np.percentile(x, PERCENTILES, axis=1)]
    )


def _pad(samples: np.ndarray) -> np.ndarray:
    """Centre very short segments in silence, so every extractor sees enough frames."""
    if samples.size >= MIN_SAMPLES:
        return samples
    before = (MIN_SAMPLES - samples.size) // 2
    return np.pad(samples, (before, MIN_SAMPLES - samples.size - before))


def _finite(vector: np.ndarray) -> np.ndarray:
    if not np.isfinite(vector).all():
        raise ValueError("the audio features hold NaN or infinite values")
    return vector


def _opensmile_builder(feature_set: str) -> Callable[[], Callable[[np.ndarray], np.ndarray]]:
    def build() -> Callable[[np.ndarray], np.ndarray]:
        import opensmile

        smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel.Functionals
        )

        def extract(samples: np.ndarray) -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deprecation notes of older sets; nothing the user can act on
                values = smile.process_signal(_pad(samples), SAMPLE_RATE).to_numpy()
            return _finite(values.reshape(-1).astype(np.float32))

        return extract

    return build


#: openSMILE sets offered: our name -> (opensmile.FeatureSet member, width of its functionals).
_OPENSMILE = {
    "egemaps": ("eGeMAPSv02", 88),  # extended Geneva minimalistic acoustic parameter set
    "gemaps": ("GeMAPSv01b", 62),
    "compare2016": ("ComParE_2016", 6373),  # INTERSPEECH 2016 ComParE challenge
    "emobase": ("emobase", 988),
    "is09": ("IS09", 384),  # INTERSPEECH 2009 emotion challenge
    "is10": ("IS10", 1582),  # 2010 paralinguistic challenge
    "is11": ("IS11", 4368),  # 2011 speaker state challenge
    "is12": ("IS12", 6125),  # 2012 speaker trait challenge
    "is13": ("IS13", 6373),  # 2013 ComParE
}

#: Every audio feature set, by the name ``--audio-features`` takes.
AUDIO_FEATURE_SETS: dict[str, AudioFeatureSet] = {
    "librosa": AudioFeatureSet(
        "librosa",
        LIBROSA_WIDTH,
        lambda: librosa_functionals,
        {"version": 1, "librosa": package_version("librosa"), "av": package_version("av"), "sample_rate": SAMPLE_RATE},
        "librosa",
    ),
    **{
        name: AudioFeatureSet(
            name,
            width,
            _opensmile_builder(member),
            {
                "version": 1,
                "opensmile": package_version("opensmile"),
                "av": package_version("av"),
                "feature_set": member,
                "sample_rate": SAMPLE_RATE,
            },
            "opensmile",
        )
        for name, (member, width) in _OPENSMILE.items()
    },
}


def audio_feature_set(name: str) -> AudioFeatureSet:
    """The set called ``name`` (case-insensitive); an unknown name lists the choices."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in AUDIO_FEATURE_SETS:
        raise JoyfulError(f"unknown audio feature set {name!r}; choose one of {', '.join(AUDIO_FEATURE_SETS)} or none")
    return AUDIO_FEATURE_SETS[key]


def warm_up(name: str) -> None:
    """Run the set's extractor once on a short tone, so that its compiled code is cached before workers start.

    librosa's pitch tracker is compiled by numba on first use and written to numba's
    on-disk cache. Several processes compiling it at once race on that cache (the same
    numbered files, different contents) and later processes load code that does not
    match its index and crash (a segmentation fault in ``pyin``, seen in CI on a fresh
    environment). One compilation before any parallel work leaves them only reading it.
    """
    t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
    audio_extractor(name)((0.1 * np.sin(2 * np.pi * 150.0 * t)).astype(np.float32))


@cache
def audio_extractor(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The set's extractor, built once per process (openSMILE's is costly to set up)."""
    return AUDIO_FEATURE_SETS[name].build()
