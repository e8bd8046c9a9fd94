"""``run_grid``: every (cell, seed) of a grid file, resumable, then the tables and significance tests.

Runs go seed by seed (all cells with the first seed, then the second, ...), so an
interrupted grid already has a comparable first pass over every cell. A run is finished
once its ``result.json`` exists; a rerun skips those (after checking they were made with
the same config and data) and trains only the rest; PyTorch is imported only then, so
a rerun of a finished grid just rewrites the tables.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from joyful.benchmark.gridfile import Cell, Grid, load_grid
from joyful.benchmark.inputs import fingerprint, materialise
from joyful.benchmark.run import RESULT, check_resumable, load_result, run_dir, run_one
from joyful.benchmark.significance import write_significance
from joyful.benchmark.tables import write_tables


def run_grid(config_path: str | Path, out_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Run what is not finished yet, write all tables, return the results directory.

    ``out_dir`` defaults to ``<grid file>.results`` beside the grid file.
    """
    grid = load_grid(config_path)
    out = Path(out_dir) if out_dir is not None else grid.default_out_dir()
    data = materialise(grid.data, out / "data")
    inputs = fingerprint(data)
    plan = [(cell, seed) for seed in grid.seeds for cell in grid.cells]
    todo = [(cell, seed) for cell, seed in plan if not _finished(out, cell, seed, inputs)]
    n_cells, n_seeds = len(grid.cells), len(grid.seeds)
    tqdm.write(f"{len(plan)} runs ({n_cells} cell{'s' * (n_cells != 1)} × {n_seeds} seed{'s' * (n_seeds != 1)}): "
               f"skipped {len(plan) - len(todo)} finished, {len(todo)} to run")
    if todo:
        _train(todo, grid, out, data, inputs, progress)
    records = [load_result(run_dir(out, cell, seed)) for cell, seed in plan]
    write_tables(records, grid.cells, out)
    if grid.reference is not None:
        write_significance(records, grid.cells, grid.reference, out)
    return out


def _train(
    todo: list[tuple[Cell, int]], grid: Grid, out: Path, data: dict[str, str], inputs: dict[str, dict[str, str]],
    progress: bool,
) -> None:
    """Train the unfinished runs in plan order; each is on disk before the next starts."""
    with _torch_threads(grid.threads):
        for cell, seed in tqdm(todo, desc="grid", unit="run", disable=not progress, dynamic_ncols=True):
            record = run_one(
                cell, seed, data, inputs, run_dir(out, cell, seed), keep_models=grid.keep_models, progress=progress
            )
            m = record["metrics"]
            tqdm.write(f"{cell.name} seed {seed}: weighted F1 {m['weighted_f1']:.4f}, accuracy {m['accuracy']:.4f}, "
                       f"best epoch {record['best_epoch']} ({record['wall_seconds']:.1f} s)")


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Apply the grid's thread count for its runs only, so a library caller's setting survives."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _finished(out: Path, cell: Cell, seed: int, inputs: dict[str, dict[str, str]]) -> bool:
    """A run is finished when its result.json exists and matches the grid (else an error, not a silent mix)."""
    directory = run_dir(out, cell, seed)
    if not (directory / RESULT).exists():
        return False
    check_resumable(load_result(directory), cell, seed, inputs, directory)
    return True


__all__ = ["run_grid"]
