"""Speaker-independent cross-validation on the training data: the folds, their validation slices, their files.

With ``cv`` set, the training and validation data are pooled and split by dialogue:

- ``cv = "session"``: leave one IEMOCAP session out. A dialogue's session is the number
  after ``Ses`` at the start of its id (``Ses01F_impro01`` → session 1); fold k holds out
  the k-th session in numeric order. Speakers are session-bound in IEMOCAP, so no test
  speaker is seen in training.
- ``cv = K``: K folds by dialogue (MELD, CMU-MOSEI videos, generated data, ...): scikit-learn's
  ``KFold(K, shuffle=True, random_state=cv_seed)`` over the dialogue ids sorted, so the
  folds depend neither on the files' order nor on the training seed.

Inside each fold, early stopping uses a slice of that fold's *training* dialogues, never
its test fold: ``round(cv_valid_fraction × n)`` of the n training dialogues (at least 1,
at most n − 1), drawn by a generator seeded with ``(cv_seed, fold)``. Nothing here
depends on a run's seed, so every (fold, seed) run of every cell sees the same split and
runs can be paired by fold and seed.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from joyful.atomic import atomic_write_csv, atomic_write_text
from joyful.data.schema import Dialogue, DialogueSet
from joyful.errors import JoyfulError

#: The IEMOCAP session of a dialogue id: ``Ses01F_impro01`` → 1.
SESSION = re.compile(r"^Ses(\d+)")
DEFAULT_VALID_FRACTION = 0.1
DEFAULT_CV_SEED = 0
FOLDS_FILE = "folds.json"
ASSIGNMENT_FILE = "folds.csv"
ROLES = ("train", "valid", "test")


@dataclass(frozen=True)
class CVSpec:
    """How to cross-validate: ``scheme`` is ``"session"`` or the number of folds K."""

    scheme: str | int
    valid_fraction: float = DEFAULT_VALID_FRACTION
    seed: int = DEFAULT_CV_SEED

    def to_dict(self) -> dict[str, Any]:
        return {"cv": self.scheme, "cv_valid_fraction": self.valid_fraction, "cv_seed": self.seed}

    def describe(self) -> str:
        return "leave-one-session-out" if self.scheme == "session" else f"{self.scheme}-fold by dialogue"


def parse_cv(value: Any, valid_fraction: Any = None, seed: Any = None) -> CVSpec | None:
    """Check the ``cv``, ``cv_valid_fraction`` and ``cv_seed`` settings; ``None`` without ``cv``."""
    if value is None:
        if valid_fraction is not None or seed is not None:
            raise JoyfulError("'cv_valid_fraction' and 'cv_seed' apply only with 'cv' (\"session\" or a number of folds)")
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value != "session" and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
        raise JoyfulError(f"'cv' must be \"session\" (leave one IEMOCAP session out) or a number of folds ≥ 2, not {value!r}")
    fraction = DEFAULT_VALID_FRACTION if valid_fraction is None else valid_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise JoyfulError(f"'cv_valid_fraction' must be a number strictly between 0 and 1, not {fraction!r}")
    cv_seed = DEFAULT_CV_SEED if seed is None else seed
    if isinstance(cv_seed, bool) or not isinstance(cv_seed, int) or cv_seed < 0:
        raise JoyfulError(f"'cv_seed' must be a non-negative integer, not {cv_seed!r}")
    return CVSpec(value, float(fraction), cv_seed)


@dataclass(frozen=True)
class Fold:
    """One fold: 1-based ``index``, the session it holds out (session CV) and its dialogue ids per role."""

    index: int
    held_out: str | None
    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]

    def ids(self, role: str) -> tuple[str, ...]:
        return {"train": self.train, "valid": self.valid, "test": self.test}[role]

    def to_dict(self) -> dict[str, Any]:
        return {"fold": self.index, "held_out": self.held_out,
                **{f"n_{role}": len(self.ids(role)) for role in ROLES}, **{role: list(self.ids(role)) for role in ROLES}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fold:
        return cls(int(d["fold"]), d.get("held_out"), *(tuple(d[role]) for role in ROLES))


def session_of(dialogue_id: str) -> int | None:
    match = SESSION.match(dialogue_id)
    return int(match.group(1)) if match else None


def make_folds(ids: Sequence[str], spec: CVSpec) -> list[Fold]:
    """The folds of ``spec`` over the dialogue ids (any order; each id once); pure and deterministic."""
    ids = list(ids)
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        raise JoyfulError(f"dialogue id(s) {', '.join(map(repr, repeated[:5]))} occur more than once in the "
                          "pooled train + valid data; cross-validation splits by dialogue id, so ids must be unique")
    ordered = sorted(ids)
    if spec.scheme == "session":
        tests, names = _session_folds(ordered)
    else:
        tests, names = _k_folds(ordered, int(spec.scheme), spec.seed), [None] * int(spec.scheme)
    folds = []
    for k, (test, name) in enumerate(zip(tests, names, strict=True), start=1):
        held = set(test)
        rest = [i for i in ordered if i not in held]
        valid = set(_valid_slice(rest, spec, k))
        folds.append(Fold(k, name, tuple(i for i in rest if i not in valid), tuple(sorted(valid)), tuple(test)))
    return folds


def _session_folds(ordered: list[str]) -> tuple[list[list[str]], list[str]]:
    sessions: dict[int, list[str]] = {}
    for i in ordered:
        s = session_of(i)
        if s is None:
            raise JoyfulError(
                f"cv = \"session\" needs IEMOCAP dialogue ids starting with the session (e.g. 'Ses01F_impro01'); "
                f"dialogue {i!r} has none; use cv = K (K folds by dialogue) for other data"
            )
        sessions.setdefault(s, []).append(i)
    if len(sessions) < 2:
        raise JoyfulError(f"cv = \"session\" needs dialogues of at least two sessions; found only session {min(sessions)}")
    order = sorted(sessions)
    return [sessions[s] for s in order], [f"Ses{s:02d}" for s in order]


def _k_folds(ordered: list[str], k: int, seed: int) -> list[list[str]]:
    from sklearn.model_selection import KFold

    if len(ordered) < k:
        raise JoyfulError(f"cv = {k} needs at least {k} dialogues; the pooled train + valid data has {len(ordered)}")
    splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    return [[ordered[i] for i in sorted(test)] for _, test in splitter.split(ordered)]


def _valid_slice(train_ids: list[str], spec: CVSpec, fold: int) -> list[str]:
    """``round(fraction × n)`` (≥ 1, ≤ n − 1) of the fold's training ids, drawn with a ``(cv_seed, fold)`` generator."""
    n = len(train_ids)
    if n < 2:
        raise JoyfulError(f"fold {fold} has {n} training dialogue(s); early stopping needs at least 2 "
                          "(one to train on, one to validate on): use fewer folds or more data")
    size = min(n - 1, max(1, round(spec.valid_fraction * n)))
    chosen = np.random.default_rng([spec.seed, fold]).permutation(n)[:size]
    return [train_ids[i] for i in sorted(chosen)]


def pool(train: DialogueSet, valid: DialogueSet) -> DialogueSet:
    """Train then valid dialogues, as one set (the data the folds are cut from).

    MELD numbers its dialogues from 0 in each split, so its train and dev files share ids
    that name different dialogues. When the files share an id, every id is prefixed with
    its file's role (``train:0``, ``valid:0``), so that each names one dialogue; ids
    unique across the files (IEMOCAP's, which session CV reads) stay as they are. A
    shared id whose dialogues are the same (speakers and texts) is one dialogue given
    twice, which would sit in two folds at once: refused.
    """
    source = f"{train.source} + {valid.source}"
    first = {d.id: d for d in train}
    shared = [d for d in valid if d.id in first]
    if not shared:
        return DialogueSet([*train.dialogues, *valid.dialogues], source)
    twice = next((d for d in shared if d.speakers == first[d.id].speakers and d.texts == first[d.id].texts), None)
    if twice is not None:
        raise JoyfulError(f"dialogue {twice.id!r} is in both {train.source} and {valid.source}: the same dialogue in "
                          "the training and validation data would be tested on what a fold trained on; remove one copy")
    renamed = [dataclasses.replace(d, id=f"{role}:{d.id}") for role, part in (("train", train), ("valid", valid))
               for d in part]
    return DialogueSet(renamed, source)


def origins(train: DialogueSet, valid: DialogueSet, pooled: DialogueSet) -> dict[str, str]:
    """Which file (``train`` or ``valid``) each dialogue of ``pool(train, valid)`` came from, by its pooled id."""
    roles = ["train"] * len(train) + ["valid"] * len(valid)
    return {d.id: role for d, role in zip(pooled, roles, strict=True)}


def split(data: DialogueSet, fold: Fold) -> dict[str, DialogueSet]:
    """The fold's train/valid/test parts of ``data``, each in ``data``'s order."""
    by_role = {i: role for role in ROLES for i in fold.ids(role)}
    parts: dict[str, list[Dialogue]] = {role: [] for role in ROLES}
    for d in data:
        if d.id in by_role:
            parts[by_role[d.id]].append(d)
    return {role: DialogueSet(parts[role], f"{data.source} (fold {fold.index} {role})") for role in ROLES}


def assignment_rows(folds: Sequence[Fold], origin: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per dialogue: its test fold, session and the folds whose validation slice it is in."""
    test_fold = {i: f.index for f in folds for i in f.test}
    valid_in: dict[str, list[int]] = {}
    for f in folds:
        for i in f.valid:
            valid_in.setdefault(i, []).append(f.index)
    return [
        {"dialogue": i, **({"source": origin.get(i, "")} if origin is not None else {}),
         "session": "" if session_of(i) is None else session_of(i), "test_fold": test_fold[i],
         "valid_slice_of_folds": " ".join(map(str, valid_in.get(i, [])))}
        for i in sorted(test_fold)
    ]


def write_assignment(folds: Sequence[Fold], directory: Path, header: dict[str, Any],
                     origin: dict[str, str] | None = None) -> None:
    """``folds.csv`` (dialogue → test fold, validation slices) and ``folds.json`` (header + every fold), the latter last."""
    atomic_write_csv(directory / ASSIGNMENT_FILE, assignment_rows(folds, origin))
    body = {**header, "folds": [f.to_dict() for f in folds]}
    atomic_write_text(directory / FOLDS_FILE, json.dumps(body, indent=1) + "\n")


@dataclass(frozen=True)
class FoldData:
    """A fold and its materialised files: role → JSONL path."""

    fold: Fold
    paths: dict[str, str]


def materialise_folds(
    spec: CVSpec,
    sources: dict[str, str],
    directory: Path,
    *,
    int_label_names: Sequence[str] | None = None,
    task: str | None = None,
    finished_runs: bool = False,
) -> list[FoldData]:
    """Write ``fold-<k>/{train,valid,test}.jsonl`` and the fold assignment once; reuse them while nothing changed.

    ``sources`` are the grid's train and valid data (role → path). ``folds.json`` is
    written last and records the CV setting and the sources' SHA-256, so a rerun with the
    same grid and data reads no data at all. If the setting or the data changed while
    ``finished_runs`` exist, the folds are not rewritten: the grid is refused, rather
    than mixing runs of two different splits in one mean. ``task`` is the grid's task, for
    files whose labels serve several (CMU-MOSEI's sentiment and emotions); the fold files
    hold the labels it chose, so it is recorded with them when given.
    """
    from joyful.benchmark.inputs import fingerprint

    wanted = {**spec.to_dict(), "sources": fingerprint(sources),
              "int_label_names": list(int_label_names) if int_label_names is not None else None,
              **({"task": task} if task is not None else {})}
    marker = directory / FOLDS_FILE
    stored = _read_marker(marker)
    if stored is not None:
        folds = [Fold.from_dict(f) for f in stored.get("folds", [])]
        if all(stored.get(k) == v for k, v in wanted.items()) and folds:
            data = [FoldData(f, _paths(directory, f)) for f in folds]
            if all(Path(p).exists() for fd in data for p in fd.paths.values()):
                return data
        elif finished_runs:
            changed = [k for k in spec.to_dict() if stored.get(k) != wanted[k]] + ["task"] * (stored.get("task") != task)
            changed += [f"{role} data" for role in wanted["sources"]
                        if stored.get("sources", {}).get(role, {}).get("sha256") != wanted["sources"][role]["sha256"]]
            raise JoyfulError(
                f"{marker}: the folds of the finished runs here were made with another "
                f"{', '.join(changed) or 'setting'}; delete the results directory to rerun, or choose another --out"
            )
    train, valid = (_read(sources[role], role, int_label_names, task) for role in ("train", "valid"))
    pooled = pool(train, valid)
    folds = make_folds([d.id for d in pooled], spec)
    out = []
    for fold in folds:
        paths = _paths(directory, fold)
        for role, part in split(pooled, fold).items():
            _write_jsonl(part, paths[role])
        _copy_extraction_settings(sources["train"], paths["train"])
        out.append(FoldData(fold, paths))
    write_assignment(folds, directory, {**wanted, "scheme": spec.describe()}, origins(train, valid, pooled))
    return out


def _paths(directory: Path, fold: Fold) -> dict[str, str]:
    return {role: str(directory / f"fold-{fold.index}" / f"{role}.jsonl") for role in ROLES}


def _read_marker(marker: Path) -> dict[str, Any] | None:
    try:
        stored = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return stored if isinstance(stored, dict) else None


def _read(spec: str, role: str, int_label_names: Sequence[str] | None, task: str | None) -> DialogueSet:
    from joyful.io.readers import read_dialogues

    return read_dialogues(spec, role=role, int_label_names=int_label_names, task=task)


def _write_jsonl(part: DialogueSet, path: str) -> None:
    from joyful.io.jsonl import write_jsonl

    write_jsonl(part.dialogues, path)


def _copy_extraction_settings(source: str, target: str) -> None:
    """``joyful extract``'s settings travel with the training data, so a kept model still records them."""
    sidecar = Path(source.partition("#")[0] + ".extraction.json")
    if sidecar.is_file():
        shutil.copyfile(sidecar, target + ".extraction.json")


def fold_label(fold: int, held_out: str | None) -> str:
    return f"fold {fold}" + (f" ({held_out})" if held_out else "")


__all__ = [
    "CVSpec", "Fold", "FoldData", "parse_cv", "make_folds", "materialise_folds", "split", "pool", "origins", "session_of",
    "write_assignment", "assignment_rows", "fold_label", "SESSION", "DEFAULT_VALID_FRACTION", "DEFAULT_CV_SEED",
]
