"""Reading a grid file: data, base config, the axes presets × modalities × ablations, and seeds.

A grid file is TOML (or JSON with the same structure). Everything is checked and every
cell's configuration is built before any training starts, so a typo in the last
ablation fails at once instead of after hours of training. With ``cv`` (see
:mod:`joyful.benchmark.folds`) the train and valid data are pooled and cross-validated,
and a ``test`` entry is refused: it would never be scored.

A grid ranks its cells by one metric, the primary metric of their task, so cells whose
``task`` fields differ (or differ from the task of generated data) are refused here,
before anything is trained; cells with ``task = "auto"`` take the data's.
"""

from __future__ import annotations

import itertools
import json
import re
import tomllib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joyful.benchmark.folds import CVSpec, parse_cv
from joyful.config import OFFICIAL_AUGMENTATION, PRESETS, TASKS, JoyfulConfig
from joyful.errors import JoyfulError
from joyful.io.readers import parse_spec

TOP_LEVEL_KEYS = frozenset(
    {"data", "base", "presets", "modalities", "ablations", "seeds", "reference", "keep_models", "threads",
     "cv", "cv_valid_fraction", "cv_seed"}
)
DATA_ROLES = ("train", "valid", "test")
SYNTHETIC_KEYS = frozenset(
    {"n_train", "n_valid", "n_test", "widths", "signal", "seed", "min_length", "max_length", "speakers", "persistence",
     "task"}
)
#: Reserved key of ``base`` or an ablation: fraction of random edges added at test time (not a model field).
EVAL_EDGE_NOISE = "eval_edge_noise"
#: Reserved key of an ablation: the name of another ablation whose kept models (every seed, same fold,
#: same preset and modalities) teach this one's runs (distillation, :mod:`joyful.training.teacher`).
TEACHER = "teacher"
#: Reserved key: ``true`` applies :data:`joyful.config.OFFICIAL_AUGMENTATION` before the table's own fields.
OFFICIAL = "official_augmentation"
#: Cell names become directory names, so they stay within a portable character set.
CELL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a complete configuration except the seed, and the test-time edge noise."""

    name: str
    preset: str
    modalities: str | None
    ablation: str | None
    fields: dict[str, Any]
    eval_edge_noise: float
    teacher: str | None = None
    """The cell whose models teach this one's runs (``None``: trained on the labels alone)."""

    def config(self, seed: int) -> JoyfulConfig:
        return JoyfulConfig.from_dict({**self.fields, "seed": seed})


@dataclass(frozen=True)
class DataSpec:
    """Either resolved paths per role (``test`` defaults to ``valid``; none with ``cv``) or parameters for generated data."""

    paths: dict[str, str]
    synthetic: dict[str, Any] | None


@dataclass(frozen=True)
class Grid:
    """A checked grid file: where the data is, the cells, the seeds, and how to run them."""

    path: Path
    data: DataSpec
    cells: list[Cell]
    seeds: list[int]
    reference: str | None
    keep_models: bool
    threads: int | None
    """PyTorch CPU threads while training (``None``: PyTorch's default); tiny models run fastest on one."""
    cv: CVSpec | None = None
    """Cross-validation on the pooled train + valid data (``None``: train, early-stop on valid, score test)."""
    task: str | None = None
    """The task every cell or the generated data names (``None``: all cells take the data's)."""

    def default_out_dir(self) -> Path:
        """``<grid>.results`` beside the grid file: named after it, never clashing with it."""
        return self.path.with_suffix(".results")


def load_grid(path: str | Path) -> Grid:
    """Parse and check a grid file; every cell's config is validated here."""
    path = Path(path)
    raw = _read(path)

    def fail(message: str) -> JoyfulError:
        return JoyfulError(f"{path}: {message}")

    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)}; a grid file has {', '.join(sorted(TOP_LEVEL_KEYS))}")
    try:
        cells = _cells(raw)
        cv = parse_cv(raw.get("cv"), raw.get("cv_valid_fraction"), raw.get("cv_seed"))
        data = _data(raw.get("data"), path.parent, cv is not None)
        grid = Grid(
            path=path,
            data=data,
            cells=cells,
            seeds=_seeds(raw.get("seeds")),
            reference=_reference(raw.get("reference"), cells),
            keep_models=_boolean(raw.get("keep_models", False), "keep_models"),
            threads=_threads(raw.get("threads")),
            cv=cv,
            task=_task(cells, data),
        )
    except JoyfulError as e:
        raise fail(str(e)) from None
    taught = [c.name for c in grid.cells if c.teacher is not None]
    if taught and not grid.keep_models:
        raise fail(f"cell(s) {', '.join(taught)} learn from a teacher's saved models: set keep_models = true")
    return grid


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise JoyfulError(f"{path}: cannot read grid file: {e}") from None
    if not isinstance(raw, dict):
        raise JoyfulError(f"{path}: a grid file holds a table (object) at the top level")
    return raw


def _boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise JoyfulError(f"{name!r} must be true or false")
    return value


def _threads(value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise JoyfulError("'threads' must be a positive integer")
    return value


def _seeds(value: Any) -> list[int]:
    ok = isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    if not ok or len(set(value)) != len(value):
        raise JoyfulError("'seeds' must be a non-empty list of distinct integers, e.g. seeds = [1, 2, 3, 4, 5]")
    return list(value)


def _strings(value: Any, name: str) -> list[str]:
    ok = isinstance(value, list) and value and all(isinstance(v, str) for v in value)
    if not ok or len(set(value)) != len(value):
        raise JoyfulError(f"{name!r} must be a non-empty list of distinct strings")
    return list(value)


def _layer(table: Any, where: str) -> dict[str, Any]:
    """Config fields of ``base`` or one ablation, with ``official_augmentation`` expanded."""
    if not isinstance(table, dict):
        raise JoyfulError(f"{where} must be a table of config fields")
    if "seed" in table:
        raise JoyfulError(f"{where}: 'seed' is set by the grid's 'seeds' list, not here")
    fields = dict(table)
    official = _boolean(fields.pop(OFFICIAL, False), f"{where}.{OFFICIAL}")
    return {**OFFICIAL_AUGMENTATION, **fields} if official else fields


def _cells(raw: dict[str, Any]) -> list[Cell]:
    """The cross product presets × modalities × ablations, in that nesting order."""
    base = _layer(raw.get("base", {}), "[base]")
    presets = _strings(raw.get("presets", ["default"]), "presets")
    for p in presets:
        if p not in PRESETS:
            raise JoyfulError(f"unknown preset {p!r}; choose from {', '.join(sorted(PRESETS))}")
    modalities: list[str | None] = _strings(raw["modalities"], "modalities") if "modalities" in raw else [None]
    ablations_raw = raw.get("ablations")
    if ablations_raw is not None and (not isinstance(ablations_raw, dict) or not ablations_raw):
        raise JoyfulError("[ablations] must be a non-empty table of name = { field = value, ... }")
    ablations = {name: _layer(t, f"[ablations.{name}]") for name, t in (ablations_raw or {}).items()}
    cells = []
    for preset, modality, name in itertools.product(presets, modalities, list(ablations) or [None]):
        parts = [preset] * (len(presets) > 1) + [modality] * (len(modalities) > 1) + [name] * (name is not None)
        cells.append(_cell(base, preset, modality, name, ablations.get(name, {}), _cell_name(parts, preset)))
    names = [c.name for c in cells]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise JoyfulError(f"several cells are named {', '.join(duplicates)}; rename the ablations")
    return [_with_teacher(cell, cells) for cell in cells]


def _with_teacher(cell: Cell, cells: list[Cell]) -> Cell:
    """Resolve an ablation's ``teacher`` (another ablation's name) to the cell of that ablation with the same
    preset and modalities. ``context-lr`` cells drop it, as they ignore the network's fields."""
    if cell.teacher is None:
        return cell
    if cell.config(0).architecture == "context-lr":
        return dataclasses.replace(cell, teacher=None)
    match = [c for c in cells if (c.preset, c.modalities, c.ablation) == (cell.preset, cell.modalities, cell.teacher)]
    if not match or match[0].teacher is not None or match[0] is cell:
        raise JoyfulError(
            f"cell {cell.name!r}: teacher {cell.teacher!r} must name another ablation of this grid, one without a "
            f"teacher itself; the ablations are {', '.join(sorted({c.ablation for c in cells if c.ablation}))}"
        )
    return dataclasses.replace(cell, teacher=match[0].name)


def _cell_name(parts: list[str], preset: str) -> str:
    """The varying axes' values (preset, modalities) and the ablation name joined by '-'; the preset if none."""
    name = "-".join(parts) or preset
    if not CELL_NAME.fullmatch(name):
        raise JoyfulError(f"cell name {name!r} must use only letters, digits and _ . + = - (it names a directory)")
    return name


def _cell(
    base: dict[str, Any], preset: str, modality: str | None, ablation: str | None, overrides: dict[str, Any], name: str
) -> Cell:
    """Defaults ← base ← preset ← modalities ← ablation; then the config is built once to validate it."""
    fields = {**base, **PRESETS[preset], **({"modalities": modality} if modality is not None else {}), **overrides}
    noise = fields.pop(EVAL_EDGE_NOISE, 0.0)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0.0 <= noise <= 1.0:
        raise JoyfulError(f"cell {name!r}: {EVAL_EDGE_NOISE} must be a number in [0, 1]")
    teacher = fields.pop(TEACHER, None)
    if teacher is not None and (not isinstance(teacher, str) or ablation is None or TEACHER in base):
        raise JoyfulError(f"cell {name!r}: {TEACHER} must be set in an ablation, to the name of another ablation")
    try:
        JoyfulConfig.from_dict({**fields, "seed": 0})
    except (JoyfulError, TypeError, ValueError) as e:
        raise JoyfulError(f"cell {name!r}: {e}") from None
    return Cell(name, preset, modality, ablation, fields, float(noise), teacher)


def _task(cells: list[Cell], data: DataSpec) -> str | None:
    """The one task the cells (and generated data) name, if any; several would make tables no metric can rank."""
    named = {} if data.synthetic is None or "task" not in data.synthetic else {data.synthetic["task"]: "[data.synthetic]"}
    for cell in cells:
        task = cell.fields.get("task", "auto")
        if task != "auto":
            named.setdefault(task, f"cell {cell.name!r}")
    if len(named) > 1:
        listing = ", ".join(f"{task} ({where})" for task, where in named.items())
        raise JoyfulError(f"one grid holds one task, ranked by its primary metric, but this one names {listing}; "
                          "split it into one grid per task")
    return next(iter(named), None)


def _reference(value: Any, cells: list[Cell]) -> str | None:
    if value is None:
        return None
    names = [c.name for c in cells]
    if value not in names:
        raise JoyfulError(f"reference {value!r} is not a cell; the cells are {', '.join(names)}")
    return value


CV_NO_TEST = (
    "with 'cv' the folds are cut from train + valid and each is scored on its held-out part, so {what} would "
    "never be used; remove it, or score a held-out test set with a grid without 'cv'"
)


def _data(table: Any, grid_dir: Path, cv: bool = False) -> DataSpec:
    if not isinstance(table, dict):
        raise JoyfulError("a [data] table is required: train/valid(/test) paths, or [data.synthetic]")
    if "synthetic" in table:
        params = _synthetic(table)
        if cv and "n_test" in params:
            raise JoyfulError("[data.synthetic]: " + CV_NO_TEST.format(what="'n_test'"))
        return DataSpec({}, params)
    unknown = sorted(set(table) - set(DATA_ROLES))
    if unknown:
        raise JoyfulError(f"[data]: unknown key(s) {', '.join(unknown)}; use train, valid, test or synthetic")
    for role in ("train", "valid"):
        if not isinstance(table.get(role), str):
            raise JoyfulError(f"[data]: {role!r} must be a path (relative to the grid file; '#split' allowed)")
    if cv and "test" in table:
        raise JoyfulError("[data]: " + CV_NO_TEST.format(what="a 'test' file"))
    paths = {role: _resolve(table[role], grid_dir, role) for role in DATA_ROLES if role in table}
    if not cv:
        paths.setdefault("test", paths["valid"])
    return DataSpec(paths, None)


def _resolve(spec: Any, grid_dir: Path, role: str) -> str:
    """An absolute ``path[#split]``: relative paths are taken from the grid file's directory."""
    if not isinstance(spec, str):
        raise JoyfulError(f"[data]: {role!r} must be a path")
    path, split = parse_spec(str(grid_dir / Path(spec).expanduser()))
    return str(Path(path).resolve()) + (f"#{split}" if split else "")


def _synthetic(table: dict[str, Any]) -> dict[str, Any]:
    if set(table) != {"synthetic"} or not isinstance(table["synthetic"], dict):
        raise JoyfulError("[data]: give either [data.synthetic] or train/valid/test paths, not both")
    params = dict(table["synthetic"])
    unknown = sorted(set(params) - SYNTHETIC_KEYS)
    if unknown:
        known = ", ".join(sorted(SYNTHETIC_KEYS))
        raise JoyfulError(f"[data.synthetic]: unknown key(s) {', '.join(unknown)}; known: {known}")
    for key in ["n_train", "n_valid"] + ["n_test"] * ("n_test" in params):
        value = params.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise JoyfulError(f"[data.synthetic]: {key!r} must be a positive integer (n_train, n_valid required)")
    if "task" in params:
        if params["task"] not in TASKS:
            raise JoyfulError(f"[data.synthetic]: 'task' must be one of {', '.join(TASKS)}, not {params['task']!r}")
        if params["task"] != "classification" and "speakers" in params:
            raise JoyfulError("[data.synthetic]: CMU-MOSEI-shaped videos have one speaker each; remove 'speakers'")
    return params


__all__ = ["Cell", "DataSpec", "Grid", "load_grid", "EVAL_EDGE_NOISE", "OFFICIAL"]
