"""The reproduction suite: grids of training runs over seeds, their tables and significance tests.

``joyful benchmark --config GRID`` calls :func:`joyful.benchmark.grid.run_grid`. The
modules are split by concept: ``gridfile`` reads a grid file into cells, ``inputs``
resolves or generates the data, ``run`` trains and scores one (cell, seed),
``tables`` and ``significance`` write the summaries, ``stats`` holds the tests, ``scores``
says which metrics a task reports and which one ranks the cells. Nothing
heavy is imported here, so reading a grid file does not pay PyTorch's import time.
"""
