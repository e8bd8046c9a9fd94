"""Features for a trained model straight from recordings, extracted exactly as its training data was.

A model trained on ``joyful extract`` output carries that extraction's settings in its
meta (the sidecar, copied by ``joyful train``); features made with any other encoder,
feature set or frame rate would feed the model numbers it never learnt to read, so the
settings are taken from there and only the modalities the model uses are extracted.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from joyful.data.schema import MODALITY_NAMES, DialogueSet
from joyful.errors import JoyfulError
from joyful.extract import DEFAULT_FPS
from joyful.extract.audio import AudioFeatureSet, audio_feature_set
from joyful.extract.runner import dialogues_from_manifest
from joyful.extract.visual import VisualFeatureSet, visual_feature_set

if TYPE_CHECKING:
    from joyful.api import Joyful
    from joyful.training.checkpoint import ModelInfo


def extract_for_model(
    clf: Joyful,
    manifest: str | os.PathLike,
    *,
    workers: int | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[DialogueSet, int]:
    """The manifest's dialogues with the features ``clf`` expects, and how many media files failed."""
    info = clf.info
    if info is None:
        raise JoyfulError("this Joyful has no model yet: call fit() or Joyful.load()")
    names, fps = model_extraction(info)
    for m in sorted(set(names) & {"a", "v"}):  # checked before any work: the sets' widths are known up front
        if names[m] is None:
            raise JoyfulError(
                f"this model uses {MODALITY_NAMES[m]} features that `joyful extract` did not make, so they cannot "
                "be extracted from recordings; train on a dataset made by `joyful extract`"
            )
        media_feature_set(info, m, names[m], str(manifest))
    data, report = dialogues_from_manifest(
        manifest,
        text_encoder=names.get("t"),
        audio_features=names.get("a"),
        visual_features=names.get("v"),
        fps=fps,
        workers=workers,
        progress=progress,
        cache_dir=cache_dir,
        device=str(clf.device),
    )
    if "t" in report.widths:  # else texts without features go to the model, which encodes them itself
        _check_width("t", report.widths["t"], info.widths.get("t"), report.manifest)
    return data, len(report.failed_files)


def model_extraction(info: ModelInfo) -> tuple[dict[str, str | None], float]:
    """Per modality the model uses, the name ``joyful extract`` made its features with, and the frame rate.

    A name is ``None`` where the model's training data did not come from ``joyful extract``
    (no extraction settings in its meta): then texts go to the model as they are, and it
    encodes them as in training (its own encoder, text context, fine-tuning), while audio
    and visual features cannot be made from recordings at all.
    """
    settings = info.extra.get("extraction") or {}
    keys = {"t": "text_encoder", "a": "audio_features", "v": "visual_features"}
    names = {m: settings.get(keys[m]) for m in sorted(set(info.config.modalities))}
    return names, float(settings.get("fps") or DEFAULT_FPS)


def media_feature_set(info: ModelInfo, modality: str, name: str, source: str) -> AudioFeatureSet | VisualFeatureSet:
    """The audio (``"a"``) or visual (``"v"``) feature set ``name``, checked to give the width the model expects."""
    spec = audio_feature_set(name) if modality == "a" else visual_feature_set(name)
    _check_width(modality, spec.width, info.widths.get(modality), source)
    return spec


def _check_width(modality: str, got: int, expected: int | None, source: str) -> None:
    if got != expected:
        raise JoyfulError(
            f"{source}: extraction gives {MODALITY_NAMES[modality]} features of width {got}, but the model "
            f"expects width {expected}; was it trained on features from other extraction settings?"
        )
