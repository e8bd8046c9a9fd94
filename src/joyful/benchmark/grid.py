"""``run_grid``: every (cell, seed) of a grid file, or (cell, fold, seed) with ``cv``, resumable, then the tables.

Runs go seed by seed (all cells with the first seed, then the second, ...; with
cross-validation fold by fold within a seed), so an interrupted grid already has a
comparable first pass over every cell. Cells with a ``teacher`` come last, once every
seed of their teacher cell has its kept model. A run is finished once its ``result.json``
exists; a rerun skips those (after checking they were made with the same config and
data) and trains only the rest; PyTorch is imported only then, so a rerun of a finished
grid just rewrites the tables.

``jobs > 1`` trains runs in that many worker processes (``spawn``, one PyTorch thread
each unless the grid sets ``threads``). Each run writes its own ``result.json``
atomically, so what finished is on disk whatever happens to the others; a failing run
is reported with its cell, fold and seed while the rest go on, and an interruption
terminates the workers rather than leaving them behind.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from joyful.benchmark.ensembles import write_ensembles
from joyful.benchmark.folds import materialise_folds
from joyful.benchmark.gridfile import Cell, Grid, load_grid
from joyful.benchmark.inputs import fingerprint, materialise
from joyful.benchmark.run import RESULT, check_resumable, load_result, run_dir, run_one
from joyful.benchmark.scores import TASK_SCORES, task_of
from joyful.benchmark.significance import write_significance
from joyful.benchmark.tables import write_tables
from joyful.errors import JoyfulError
from joyful.torch_threads import torch_threads


@dataclass(frozen=True)
class Task:
    """One run of the plan; ``fold`` is ``None`` without cross-validation."""

    cell: Cell
    fold: int | None
    seed: int

    def label(self) -> str:
        return f"{self.cell.name}" + (f" fold {self.fold}" if self.fold is not None else "") + f" seed {self.seed}"


def run_grid(
    config_path: str | Path, out_dir: str | Path | None = None, progress: bool = True, jobs: int = 1,
    device: str | None = None,
) -> Path:
    """Run what is not finished yet, write all tables, return the results directory.

    ``out_dir`` defaults to ``<grid file>.results`` beside the grid file; ``jobs`` is the
    number of worker processes (1: train in this process, one run after the other);
    ``device`` overrides the grid's (runs made on another device still count as finished).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise JoyfulError(f"--jobs must be a positive integer, not {jobs!r}")
    grid = load_grid(config_path)
    if device is not None:
        grid = dataclasses.replace(
            grid, cells=[dataclasses.replace(c, fields={**c.fields, "device": device}) for c in grid.cells]
        )
    out = Path(out_dir) if out_dir is not None else grid.default_out_dir()
    data = materialise(grid.data, out / "data")
    folds: dict[int | None, dict[str, str]]
    held_out: dict[int, str | None] = {}
    if grid.cv is None:
        folds = {None: data}
    else:
        materialised = materialise_folds(
            grid.cv, {role: data[role] for role in ("train", "valid")}, out / "folds",
            int_label_names=_int_label_names(grid, data), task=grid.task, finished_runs=_any_finished_fold(out),
        )
        folds = {fd.fold.index: fd.paths for fd in materialised}
        held_out = {fd.fold.index: fd.fold.held_out for fd in materialised}
    inputs = {k: fingerprint(paths) for k, paths in folds.items()}
    plan = [Task(cell, fold, seed) for seed in grid.seeds for fold in folds for cell in grid.cells]
    todo = [t for t in plan if not _finished(out, t, inputs[t.fold])]
    tqdm.write(f"{len(plan)} runs ({_shape(grid, len(folds))}): skipped {len(plan) - len(todo)} finished, "
               f"{len(todo)} to run")
    # Distilled cells need their teachers' models of every seed, so they train once all others have.
    for phase in ([t for t in todo if t.cell.teacher is None], [t for t in todo if t.cell.teacher is not None]):
        if phase and jobs == 1:
            _train(phase, grid, out, folds, inputs, progress)
        elif phase:
            _train_parallel(phase, grid, out, folds, inputs, progress, jobs)
    records = [load_result(run_dir(out, t.cell, t.seed, t.fold)) for t in plan]
    write_tables(records, grid.cells, out, held_out=held_out or None)
    if len(grid.seeds) > 1:
        write_ensembles(records, grid.cells, out, reference=grid.reference, held_out=held_out or None)
    if grid.reference is not None:
        write_significance(records, grid.cells, grid.reference, out)
    return out


def _teachers(task: Task, grid: Grid, out: Path) -> list[Path] | None:
    """The kept models of the teacher cell on the task's fold, one per grid seed (``None``: no teacher)."""
    if task.cell.teacher is None:
        return None
    teacher = next(c for c in grid.cells if c.name == task.cell.teacher)
    models = [run_dir(out, teacher, seed, task.fold) / "model" for seed in grid.seeds]
    absent = [m for m in models if not (m.parent / RESULT).is_file() or not m.is_dir()]
    if absent:
        raise JoyfulError(
            f"{task.label()}: its teacher's run {absent[0].parent} has no kept model (did it fail, or finish "
            "before keep_models = true?); delete that run to retrain it"
        )
    return models


def _shape(grid: Grid, n_folds: int) -> str:
    def count(n: int, what: str) -> str:
        return f"{n} {what}{'s' * (n != 1)}"

    parts = [count(len(grid.cells), "cell")]
    if grid.cv is not None:
        parts.append(count(n_folds, "fold"))
    return " × ".join([*parts, count(len(grid.seeds), "seed")])


def _int_label_names(grid: Grid, data: dict[str, str]) -> tuple[str, ...] | None:
    """Names for the integer labels of pickles, as training would use them (only if every cell agrees)."""
    from joyful.io.readers import detect_format, parse_spec

    if not any(detect_format(parse_spec(data[role])[0]) == "pickle" for role in ("train", "valid")):
        return None
    from joyful.api import integer_label_names

    label_sets = {cell.config(0).label_set for cell in grid.cells}
    return integer_label_names(label_sets.pop()) if len(label_sets) == 1 else None


def _any_finished_fold(out: Path) -> bool:
    return any((out / "runs").glob(f"*/fold-*/seed-*/{RESULT}"))


def _report(task: Task, record: dict[str, Any]) -> None:
    m = record["metrics"]
    tqdm.write(f"{task.label()}: {TASK_SCORES[task_of(m)].progress(m)}, "
               f"best epoch {record['best_epoch']} ({record['wall_seconds']:.1f} s)")


def _train(
    todo: list[Task], grid: Grid, out: Path, folds: dict[int | None, dict[str, str]],
    inputs: dict[int | None, dict[str, dict[str, str]]], progress: bool,
) -> None:
    """Train the unfinished runs in plan order; each is on disk before the next starts."""
    with torch_threads(grid.threads):
        for task in tqdm(todo, desc="grid", unit="run", disable=not progress, dynamic_ncols=True):
            record = run_one(
                task.cell, task.seed, folds[task.fold], inputs[task.fold], run_dir(out, task.cell, task.seed, task.fold),
                keep_models=grid.keep_models, progress=progress, fold=task.fold, teachers=_teachers(task, grid, out),
            )
            _report(task, record)


def _train_parallel(
    todo: list[Task], grid: Grid, out: Path, folds: dict[int | None, dict[str, str]],
    inputs: dict[int | None, dict[str, dict[str, str]]], progress: bool, jobs: int,
) -> None:
    """Train the unfinished runs in ``jobs`` spawned processes; a run counts once its result.json is written."""
    failures: list[tuple[Task, str]] = []
    executor = ProcessPoolExecutor(
        max_workers=min(jobs, len(todo)), mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init, initargs=(grid.threads or 1,),
    )
    try:
        futures = {
            executor.submit(
                _worker_run, task.cell, task.seed, task.fold, folds[task.fold], inputs[task.fold],
                run_dir(out, task.cell, task.seed, task.fold), grid.keep_models, _teachers(task, grid, out),
            ): task
            for task in todo
        }
        with tqdm(total=len(todo), desc=f"grid ({jobs} jobs)", unit="run", disable=not progress,
                  dynamic_ncols=True) as bar:
            for future in as_completed(futures):
                task = futures[future]
                try:
                    _report(task, future.result())
                except Exception as e:  # noqa: BLE001 - one failed run must not lose the others
                    failures.append((task, str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__))
                    tqdm.write(f"{task.label()}: failed: {e}")
                bar.update()
    except BaseException:
        stop_workers(executor)
        del executor  # the traceback keeps this frame: release the pool's queues (and semaphores) now
        raise
    executor.shutdown(wait=True)
    if failures:
        listing = "; ".join(f"{task.label()}: {message}" for task, message in failures)
        raise JoyfulError(
            f"{len(failures)} of {len(todo)} runs failed ({listing}); the {len(todo) - len(failures)} others are "
            "finished and kept, rerun to retry the failed ones"
        )


def stop_workers(executor: ProcessPoolExecutor) -> None:
    """Stop the workers now (an interruption or an error in this process): no orphaned training runs."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()
    executor.shutdown(wait=True, cancel_futures=True)  # the pool sees its workers gone and cleans up


def _worker_init(threads: int) -> None:
    """In each worker: Ctrl-C is the parent's to handle (it terminates the workers); fixed thread count."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _worker_run(
    cell: Cell, seed: int, fold: int | None, data: dict[str, str], inputs: dict[str, dict[str, str]],
    directory: Path, keep_models: bool, teachers: list[Path] | None,
) -> dict[str, Any]:
    """One run in a worker; returns the summary the parent prints (the record itself is on disk)."""
    try:
        record = run_one(
            cell, seed, data, inputs, directory, keep_models=keep_models, progress=False, fold=fold, teachers=teachers
        )
    except JoyfulError as e:
        raise JoyfulError(str(e)) from None  # a plain JoyfulError always pickles back to the parent
    except Exception as e:  # noqa: BLE001
        raise RuntimeError("".join(traceback.format_exception(e)).rstrip()) from None
    return {k: record[k] for k in ("metrics", "best_epoch", "wall_seconds")}


def _finished(out: Path, task: Task, inputs: dict[str, dict[str, str]]) -> bool:
    """A run is finished when its result.json exists and matches the grid (else an error, not a silent mix)."""
    directory = run_dir(out, task.cell, task.seed, task.fold)
    if not (directory / RESULT).exists():
        return False
    check_resumable(load_result(directory), task.cell, task.seed, inputs, directory, fold=task.fold)
    return True


__all__ = ["run_grid", "Task", "stop_workers"]
