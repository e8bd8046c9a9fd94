"""Utterance-level face features from sampled video frames, with a detector that ships in a package.

Why this detector: extraction must run offline, from registry packages only. MediaPipe's
current wheels ship no face model (its Tasks API loads a separately downloaded ``.task``
file, and the wheel pulls in the GUI build of OpenCV); OpenCV 5 no longer ships the Haar
cascades, and its DNN face detector (YuNet) needs a downloaded ONNX file. scikit-image
(BSD-3) ships OpenCV's LBP frontal-face cascade and implements the detector, HOG and LBP
itself, so it gives a working, deterministic face pipeline with nothing to download.

Per frame, the largest detected face is cropped, resized to 64×64 grey, histogram
equalised, and described by its box (position and size relative to the frame), a HOG
of the crop (shape: brows, eyes, mouth), uniform LBP histograms of its quadrants
(texture: wrinkles, teeth) and colour/intensity/sharpness statistics. An utterance's
vector is the mean over frames where a face was found, plus the spread of the box (head
movement), the mean change between consecutive crops (facial movement) and the fraction
of frames with a face. No face in any frame means no visual vector at all (missing), not
a vector of zeros that the model would take for a face.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from joyful.errors import JoyfulError
from joyful.extract.cache import package_version

CROP = 64
_HOG = {"orientations": 9, "pixels_per_cell": (16, 16), "cells_per_block": (2, 2)}
HOG_WIDTH = 9 * 3 * 3 * 2 * 2  # orientations × blocks (3×3 over a 64-pixel crop) × cells per block
LBP_POINTS, LBP_RADIUS = 8, 1
LBP_BINS = LBP_POINTS + 2  # "uniform" LBP codes
N_BOX = 4  # centre x, centre y, width, height, relative to the frame
N_APPEARANCE = 9  # grey mean/std, RGB means, RGB stds, log sharpness
FRAME_WIDTH = N_BOX + HOG_WIDTH + 4 * LBP_BINS + N_APPEARANCE
FACE_WIDTH = FRAME_WIDTH + N_BOX + 2  # + box spread, crop change, face fraction
#: The smallest face looked for, as a fraction of the frame's shorter side, and in pixels: smaller faces
#: are too coarse to describe, and the many small windows are most of the detector's cost.
MIN_FACE, MIN_FACE_PIXELS = 0.1, 30
#: Window growth between detection scales.
SCALE_STEP = 1.25


@dataclass(frozen=True)
class VisualFeatureSet:
    name: str
    width: int
    settings: dict[str, Any]
    package: str


VISUAL_FEATURE_SETS: dict[str, VisualFeatureSet] = {
    "face": VisualFeatureSet(
        "face",
        FACE_WIDTH,
        {
            "version": 1,
            "scikit-image": package_version("scikit-image"),
            "av": package_version("av"),  # FFmpeg's decoders and scaler, bundled in PyAV's wheels
            "crop": CROP,
            "min_face": [MIN_FACE, MIN_FACE_PIXELS],
            "scale_step": SCALE_STEP,
        },
        "scikit-image",
    )
}


def visual_feature_set(name: str) -> VisualFeatureSet:
    key = name.strip().lower()
    if key not in VISUAL_FEATURE_SETS:
        choices = ", ".join(VISUAL_FEATURE_SETS)
        raise JoyfulError(f"unknown visual feature set {name!r}; choose one of {choices} or none")
    return VISUAL_FEATURE_SETS[key]


@cache
def _detector():
    from skimage import data
    from skimage.feature import Cascade

    return Cascade(data.lbp_frontal_face_cascade_filename())


def face_features(frames: Iterable[np.ndarray]) -> np.ndarray | None:
    """The utterance vector of :data:`FACE_WIDTH` values, or ``None`` if no frame shows a face."""
    per_frame, crops, n_frames = [], [], 0
    for rgb in frames:
        n_frames += 1
        found = _describe(rgb)
        if found is not None:
            per_frame.append(found[0])
            crops.append(found[1])
    if not per_frame:
        return None
    x = np.stack(per_frame)
    change = np.mean([np.abs(a - b).mean() for a, b in zip(crops, crops[1:], strict=False)]) if len(crops) > 1 else 0.0
    out = np.concatenate([x.mean(axis=0), x[:, :N_BOX].std(axis=0), [change, len(per_frame) / n_frames]])
    return out.astype(np.float32)


def _describe(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """One frame's vector and its normalised face crop, or ``None`` when it shows no face."""
    from skimage.color import rgb2gray
    from skimage.exposure import equalize_hist
    from skimage.feature import hog, local_binary_pattern
    from skimage.filters import laplace
    from skimage.transform import resize

    grey = rgb2gray(rgb)
    h, w = grey.shape
    smallest = max(MIN_FACE_PIXELS, int(MIN_FACE * min(h, w)))
    if min(h, w) < smallest:
        return None
    faces = _detector().detect_multi_scale(
        grey, scale_factor=SCALE_STEP, step_ratio=1, min_size=(smallest, smallest), max_size=(min(h, w), min(h, w))
    )
    if not faces:
        return None
    # Largest face, ties broken by position so the choice never depends on detection order.
    f = max(faces, key=lambda f: (f["width"] * f["height"], -f["r"], -f["c"]))
    r, c, fh, fw = f["r"], f["c"], f["height"], f["width"]
    crop_rgb = rgb[r : r + fh, c : c + fw].astype(np.float64) / 255.0
    crop = equalize_hist(resize(grey[r : r + fh, c : c + fw], (CROP, CROP), anti_aliasing=True))
    lbp = local_binary_pattern((crop * 255).astype(np.uint8), LBP_POINTS, LBP_RADIUS, method="uniform")
    half = CROP // 2
    quadrants = [lbp[i : i + half, j : j + half] for i in (0, half) for j in (0, half)]
    histograms = [np.bincount(q.astype(np.int64).ravel(), minlength=LBP_BINS) / q.size for q in quadrants]
    grey_crop = grey[r : r + fh, c : c + fw]
    appearance = [
        grey_crop.mean(),
        grey_crop.std(),
        *crop_rgb.reshape(-1, 3).mean(axis=0),
        *crop_rgb.reshape(-1, 3).std(axis=0),
        np.log1p(laplace(grey_crop).var() * 1e3),
    ]
    box = [(c + fw / 2) / w, (r + fh / 2) / h, fw / w, fh / h]
    vector = np.concatenate([box, hog(crop, **_HOG, feature_vector=True), *histograms, appearance])
    assert vector.shape == (FRAME_WIDTH,)
    return vector, crop
