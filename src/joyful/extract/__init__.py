"""``joyful extract``: utterance features from raw text, audio and video, listed in a manifest.

The public names are imported on first use, so that the command line can register the
command (and answer ``--help``) without importing numpy, librosa or scikit-image.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

DEFAULT_AUDIO_FEATURES = "librosa"
DEFAULT_VISUAL_FEATURES = "face"
#: Frames per second sampled for visual features: faces change slowly next to 30 fps video.
DEFAULT_FPS = 2.0

_PUBLIC = {
    "dialogues_from_manifest": "joyful.extract.runner",
    "extract_dataset": "joyful.extract.runner",
    "ExtractionReport": "joyful.extract.runner",
    "sidecar_path": "joyful.extract.runner",
    "read_manifest": "joyful.extract.manifest",
    "Manifest": "joyful.extract.manifest",
    "AUDIO_FEATURE_SETS": "joyful.extract.audio",
    "VISUAL_FEATURE_SETS": "joyful.extract.visual",
}

__all__ = [*_PUBLIC, "DEFAULT_AUDIO_FEATURES", "DEFAULT_VISUAL_FEATURES", "DEFAULT_FPS"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'joyful.extract' has no attribute {name!r}")
