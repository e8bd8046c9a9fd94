"""Generated CMU-MOSEI-shaped videos with a planted signal: for the demo, the tests and benchmarks.

CMU-MOSEI is monologue video: one speaker per video, each video cut into segments, and
each segment rated for sentiment in [-3, 3] and for six emotions (present when the
score is above 0). Here a video is a dialogue whose single speaker is the video itself.

Each segment has a latent affect, seven numbers: sentiment and six emotion intensities.
It follows a mood that mostly persists from one segment to the next (an AR(1) chain), so
context helps. The emotions are correlated with the sentiment the way one expects
(happy with positive sentiment; sad, anger, disgust and fear with negative), so the two
tasks share one signal, as they do in the real data. Each modality shows the latent
through a fixed random projection plus unit noise, text strongest and visual weakest,
so fusion helps too. A model that learns beats a constant predictor clearly; one that
does not stays at the majority decision or the mean score.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy.stats import norm

from joyful.data.label_forms import EMOTION_PRESENT_ABOVE, MOSEI_EMOTIONS, SENTIMENT_RANGE
from joyful.data.schema import Dialogue, DialogueSet
from joyful.data.tasks import get_task
from joyful.errors import JoyfulError

#: CMU-MOSEI's usual feature widths: 768-d sentence text (SPEC, "Input features"), 74 COVAREP audio and
#: 35 Facet visual as MMSA ships them (the paper's LibROSA audio has 80).
DEFAULT_WIDTHS = {"t": 768, "a": 74, "v": 35}
#: How clearly each modality shows the latent: the signal-to-noise ratio of the best linear
#: read-out of one latent dimension, whatever the width (the projection is scaled by 1/sqrt(width)).
SIGNAL = {"t": 2.5, "a": 1.2, "v": 0.8}
#: Share of segments in which each emotion is present; roughly CMU-MOSEI's ordering (happy
#: most common, fear rarest), raised for the rare ones so that small generated sets score them.
PREVALENCE = {"happy": 0.5, "sad": 0.3, "anger": 0.25, "surprise": 0.15, "disgust": 0.2, "fear": 0.12}
#: Correlation of each emotion's latent intensity with the sentiment's.
SENTIMENT_LOADING = {"happy": 0.6, "sad": -0.5, "anger": -0.4, "surprise": 0.1, "disgust": -0.4, "fear": -0.3}
#: Latent sentiment is standard normal; this spreads it over the [-3, 3] scale (about 1 in 50 clipped).
SENTIMENT_SCALE = 1.3
#: Fixed seed of the projections, so sets generated with different seeds share one signal.
PROJECTION_SEED = 20231111


def generate_mosei(
    n_videos: int,
    *,
    task: str = "multilabel",
    widths: dict[str, int] | None = None,
    min_segments: int = 3,
    max_segments: int = 15,
    persistence: float = 0.8,
    signal: float = 1.0,
    seed: int = 0,
    prefix: str = "vid",
    source: str = "<generated>",
) -> DialogueSet:
    """``n_videos`` videos of ``min_segments`` to ``max_segments`` segments, labelled for ``task``.

    Labels: for ``multilabel`` the tuple of emotions present (in :data:`MOSEI_EMOTIONS`
    order, empty when none is); for ``regression`` the sentiment in [-3, 3], rounded to
    thirds like CMU-MOSI's averaged ratings. ``persistence`` is the mood's correlation
    from one segment to the next; ``signal`` scales every modality's signal-to-noise ratio.
    """
    if get_task(task).name == "classification":
        raise JoyfulError("CMU-MOSEI-shaped data is labelled for the multilabel or regression task, not classification")
    widths = dict(DEFAULT_WIDTHS if widths is None else widths)
    projections = {m: _projection(m, w) for m, w in widths.items()}
    rng = np.random.default_rng(seed)
    dialogues = []
    for k in range(n_videos):
        n = int(rng.integers(min_segments, max_segments + 1))
        latent = _latent_affect(n, persistence, rng)
        features = {
            m: (signal * SIGNAL.get(m, 1.0) * latent @ projections[m] + rng.standard_normal((n, w))).astype(np.float32)
            for m, w in widths.items()
        }
        vid = f"{prefix}{k:04d}"
        dialogues.append(
            Dialogue(
                id=vid,
                speakers=[vid] * n,
                features=features,
                texts=[f"segment {i} of video {vid}" for i in range(n)],
                labels=_labels(latent, task),
            )
        )
    return DialogueSet(dialogues, source)


def _projection(modality: str, width: int) -> np.ndarray:
    """The fixed ``(7, width)`` map from latent affect to one modality's features.

    Seeded by modality and width alone, so dropping or resizing one modality leaves the
    others' signal as it was.
    """
    rng = np.random.default_rng([PROJECTION_SEED, zlib.crc32(modality.encode()), width])
    return (rng.standard_normal((1 + len(MOSEI_EMOTIONS), width)) / np.sqrt(width)).astype(np.float32)


def _latent_affect(n: int, persistence: float, rng: np.random.Generator) -> np.ndarray:
    """``(n, 7)`` standard-normal latents (sentiment, then the emotions), an AR(1) chain along the video."""
    z = np.empty((n, 1 + len(MOSEI_EMOTIONS)))
    z[0] = rng.standard_normal(z.shape[1])
    innovation = np.sqrt(1 - persistence**2)
    for i in range(1, n):  # the mood chain: generation, not modelling
        z[i] = persistence * z[i - 1] + innovation * rng.standard_normal(z.shape[1])
    loading = np.array([SENTIMENT_LOADING[e] for e in MOSEI_EMOTIONS])
    z[:, 1:] = loading * z[:, :1] + np.sqrt(1 - loading**2) * z[:, 1:]
    return z


def _labels(latent: np.ndarray, task: str) -> list:
    """Emotions whose score (latent above its prevalence quantile) is > 0, or the rounded sentiment."""
    if task == "multilabel":
        cut = np.array([norm.ppf(1 - PREVALENCE[e]) for e in MOSEI_EMOTIONS])
        scores = np.maximum(latent[:, 1:] - cut, 0.0)
        return [tuple(e for e, s in zip(MOSEI_EMOTIONS, row, strict=True) if s > EMOTION_PRESENT_ABOVE) for row in scores]
    sentiment = np.clip(np.round(SENTIMENT_SCALE * latent[:, 0] * 3) / 3, *SENTIMENT_RANGE)
    return [float(s) for s in sentiment]
