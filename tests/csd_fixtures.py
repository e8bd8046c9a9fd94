"""Small CMU-SDK computational sequences (``.csd``) written with h5py, in the SDK's own layout.

``<root>/data/<video>/{features, intervals}`` and ``<root>/metadata/<key>`` holding one
JSON string each, as ``mmsdk``'s ``write_CSD`` does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

SHARED = Path(os.environ.get("JOYFUL_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
MOSI_LABELS = SHARED / "cmu-mosi" / "CMU_MOSI_Opinion_Labels.csd"


def write_csd(path: Path, root: str, videos: dict[str, tuple], *, dataset: str | None = None) -> Path:
    """``videos``: id → (intervals, features); features may be a list of words (stored as bytes)."""
    with h5py.File(path, "w") as f:
        top = f.create_group(root)
        data = top.create_group("data")
        for vid, (intervals, features) in videos.items():
            g = data.create_group(vid)
            g.create_dataset("intervals", data=np.asarray(intervals, dtype=np.float32))
            if isinstance(features, list) and features and isinstance(features[0], str):
                features = np.array([[w.encode()] for w in features], dtype="S32")
            g.create_dataset("features", data=np.asarray(features) if not isinstance(features, np.ndarray) else features)
        meta = top.create_group("metadata")
        for key, value in {"root name": root, "dataset name": dataset}.items():
            if value is not None:
                ds = meta.create_dataset(key, (1,), dtype=h5py.special_dtype(vlen=str))
                ds[0] = json.dumps(value)
    return path


def read_intervals(path: Path) -> dict[str, np.ndarray]:
    """Every video's intervals in a ``.csd`` file, as float64 (for building aligned feature files)."""
    with h5py.File(path, "r") as f:
        data = f[next(iter(f))]["data"]
        return {vid: data[vid]["intervals"][()].astype(np.float64) for vid in data}
