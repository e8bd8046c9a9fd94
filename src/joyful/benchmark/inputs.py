"""The data a grid reads: given paths, or generated splits written once into the results directory.

Generated data lives with the results so that CI can run a grid with no data at hand,
and so that every run of the grid, including a resumed one, reads the same bytes. Each
input file is fingerprinted by its SHA-256: a resumed grid refuses to mix runs that
were trained on different data. ``task = "multilabel"`` or ``"regression"`` in
``[data.synthetic]`` generates CMU-MOSEI-shaped videos (:mod:`joyful.synthetic_mosei`)
instead of dialogues; ``min_length``/``max_length`` then count segments per video.
"""

from __future__ import annotations

import hashlib
import os
import json
from pathlib import Path
from typing import Any

from joyful.atomic import atomic_write_text
from joyful.benchmark.gridfile import DataSpec
from joyful.errors import JoyfulError
from joyful.io.jsonl import write_jsonl
from joyful.io.readers import parse_spec
from joyful.synthetic import generate_dialogues
from joyful.synthetic_mosei import generate_mosei

#: Keys of ``[data.synthetic]`` passed straight to :func:`joyful.synthetic.generate_dialogues`.
GENERATOR_KEYS = ("widths", "signal", "min_length", "max_length", "persistence")
#: The same keys for :func:`joyful.synthetic_mosei.generate_mosei`, under its names.
MOSEI_KEYS = {"widths": "widths", "signal": "signal", "min_length": "min_segments", "max_length": "max_segments",
              "persistence": "persistence"}
SPLIT_COUNTS = {"train": "n_train", "valid": "n_valid", "test": "n_test"}


def materialise(spec: DataSpec, data_dir: Path) -> dict[str, str]:
    """Role (train, valid, test) → data path; generates the synthetic splits into ``data_dir`` if asked."""
    if spec.synthetic is None:
        return dict(spec.paths)
    return generate_splits(spec.synthetic, data_dir)


def generate_splits(params: dict[str, Any], data_dir: Path) -> dict[str, str]:
    """Write train/valid(/test) JSONL once; regenerate only if missing or the parameters changed.

    ``synthetic.json`` is written last, so a crash while generating leads to a fresh
    generation next time. Split k uses generator seed ``seed + k`` (train 0, valid 1,
    test 2), so the splits differ but share the planted class prototypes.
    """
    wanted = json.dumps(params, sort_keys=True)
    marker = data_dir / "synthetic.json"
    counts = {role: params[key] for role, key in SPLIT_COUNTS.items() if key in params}
    paths = {role: data_dir / f"{role}.jsonl" for role in counts}
    fresh = marker.exists() and marker.read_text() == wanted and all(p.exists() for p in paths.values())
    if not fresh:
        task = params.get("task", "classification")
        if task == "classification":
            kwargs = {k: params[k] for k in GENERATOR_KEYS if k in params}
            if "speakers" in params:
                kwargs["speakers"] = tuple(params["speakers"])
            generate = generate_dialogues
        else:
            kwargs = {name: params[k] for k, name in MOSEI_KEYS.items() if k in params} | {"task": task}
            generate = generate_mosei
        seed = params.get("seed", 0)
        for offset, role in enumerate(SPLIT_COUNTS):
            if role in counts:
                dialogues = generate(counts[role], seed=seed + offset, prefix=f"{role}-", **kwargs)
                write_jsonl(dialogues.dialogues, paths[role])
        atomic_write_text(marker, wanted)
    out = {role: str(p) for role, p in paths.items()}
    out.setdefault("test", out["valid"])
    return out


def fingerprint(paths: dict[str, str]) -> dict[str, dict[str, str]]:
    """Role → ``{"path", "sha256"}`` of the file's bytes (a ``#split`` suffix is kept in the path)."""
    digests: dict[str, str] = {}
    out = {}
    for role, spec in paths.items():
        file = parse_spec(spec)[0]
        if file not in digests:
            digests[file] = _sha256(file, role)
        out[role] = {"path": spec, "sha256": digests[file]}
    return out


def _sha256(file: str, role: str) -> str:
    """The digest of a data file, or of a CMU-SDK directory: its files' names and digests, in name order."""
    try:
        if os.path.isdir(file):
            h = hashlib.sha256()
            for path in sorted(p for p in Path(file).iterdir() if p.is_file()):
                h.update(f"{path.name}\0{_sha256(str(path), role)}\n".encode())
            return h.hexdigest()
        with open(file, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as e:
        raise JoyfulError(f"{file}: cannot read the {role} data: {e.strerror}") from None


__all__ = ["materialise", "generate_splits", "fingerprint"]
