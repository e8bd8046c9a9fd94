"""Per-utterance results on disk, so an interrupted or repeated extraction redoes no finished work.

Each result is one ``.npy`` file named by a hash of everything that determines it: the
recording's content hash, the segment, the feature set and its settings (including the
versions of the library that computes it and of PyAV, whose FFmpeg decodes it). A
renamed or copied recording therefore still hits the cache, and a changed one or a new
library release never does. Files are written to a temporary name and renamed, so a run
killed at any instant leaves only whole results, and several processes or machines
computing the same result at once leave one whole copy of it.
A result "no face in any frame" is cached too (as an empty array): it is as costly to
find as a vector. Results are loaded with ``allow_pickle=False``: the cache holds
numbers only, and nothing in it is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from joyful.atomic import atomic_open
from joyful.errors import JoyfulError


def package_version(package: str) -> str | None:
    """Installed version of ``package``, or ``None``: part of cache keys, as a new release may compute otherwise."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def result_key(**parts: Any) -> str:
    """A stable name for the result determined by ``parts`` (JSON-serialisable values)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResultCache:
    """A directory of results, two hex digits of fan-out so no folder grows too large."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise JoyfulError(f"cannot create the extraction cache {self.directory} ({e.strerror or e})") from None

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npy"

    def get(self, key: str, width: int) -> tuple[bool, np.ndarray | None]:
        """``(found, vector)``; ``vector`` is ``None`` for a cached "missing". Unusable entries count as not found."""
        path = self._path(key)
        try:
            value = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return False, None
        except (OSError, ValueError):  # damaged by something other than us: recompute it
            return False, None
        if value.shape == (0,):
            return True, None
        if value.shape != (width,) or value.dtype != np.float32:
            return False, None
        return True, value

    def put(self, key: str, vector: np.ndarray | None) -> None:
        value = np.zeros(0, dtype=np.float32) if vector is None else np.asarray(vector, dtype=np.float32)
        try:
            with atomic_open(self._path(key), "wb") as fh:
                np.save(fh, value, allow_pickle=False)
        except OSError as e:
            raise JoyfulError(f"cannot write to the extraction cache {self.directory} ({e.strerror or e})") from None
