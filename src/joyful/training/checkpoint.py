"""Model directories: weights, config and everything needed to apply a model to new data.

A model directory holds ``model.pt`` (a plain state dict, loaded with
``weights_only=True``, so opening a checkpoint never runs code) and ``meta.json``
(config, label set, feature widths, speakers, text encoder, seed, data hashes, scores,
and the SHA-256 of ``model.pt``). Both are written atomically, ``meta.json`` last, so a
directory is either the previous complete checkpoint or the new one, and a truncated or
swapped weights file is detected by its hash rather than by a confusing shape error.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from joyful import __version__
from joyful.atomic import atomic_write_bytes, atomic_write_text
from joyful.config import JoyfulConfig
from joyful.data.labels import LabelSet
from joyful.errors import CheckpointError, JoyfulError

WEIGHTS = "model.pt"
META = "meta.json"
FORMAT = "joyful-model"
FORMAT_VERSION = 1


@dataclass
class ModelInfo:
    """What a trained model needs besides its weights to be applied to new dialogues."""

    config: JoyfulConfig
    label_set: LabelSet
    widths: dict[str, int]
    n_speakers: int
    extra: dict[str, Any]
    task: str = "classification"
    """The task resolved from the training data (the config may say ``auto``)."""

    def to_meta(self, weights_sha256: str) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "joyful_version": __version__,
            "config": self.config.to_dict(),
            "label_set": self.label_set.to_dict(),
            "widths": self.widths,
            "n_speakers": self.n_speakers,
            "task": self.task,
            "weights_sha256": weights_sha256,
            **self.extra,
        }


def save_checkpoint(directory: str | Path, state_dict: dict[str, torch.Tensor], info: ModelInfo) -> None:
    """Write weights then metadata, each atomically."""
    directory = Path(directory)
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    data = buffer.getvalue()
    atomic_write_bytes(directory / WEIGHTS, data)
    meta = info.to_meta(hashlib.sha256(data).hexdigest())
    atomic_write_text(directory / META, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], ModelInfo]:
    """Read and verify a model directory; any defect raises :class:`CheckpointError` naming the file."""
    directory = Path(directory)
    meta_path, weights_path = directory / META, directory / WEIGHTS
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such model directory")
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: missing; is {directory} a model trained by joyful?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path}: unreadable or truncated ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not a joyful model description")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: format version {meta.get('format_version')} is not supported")
    try:
        data = weights_path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{weights_path}: unreadable ({e.strerror or e})") from None
    if hashlib.sha256(data).hexdigest() != meta.get("weights_sha256"):
        raise CheckpointError(f"{weights_path}: truncated or modified (its SHA-256 does not match {META})")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        info = ModelInfo(
            config=JoyfulConfig.from_dict(meta["config"]),
            label_set=LabelSet.from_dict(meta["label_set"]),
            widths={str(k): int(v) for k, v in meta["widths"].items()},
            n_speakers=int(meta["n_speakers"]),
            task=str(meta.get("task", "classification")),  # models saved before tasks existed classify
            extra={k: v for k, v in meta.items() if k not in _CORE_KEYS},
        )
    except (KeyError, TypeError, ValueError, JoyfulError, RuntimeError) as e:
        raise CheckpointError(f"{directory}: inconsistent model files ({e})") from None
    return state, info


_CORE_KEYS = {"format", "format_version", "config", "label_set", "widths", "n_speakers", "task", "weights_sha256"}
