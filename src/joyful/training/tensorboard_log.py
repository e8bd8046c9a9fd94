"""Optional TensorBoard logging of the per-epoch losses and validation scores.

``history.csv`` is the record every run keeps; TensorBoard is a convenience for watching
runs live and comparing many of them, so it is used only when the ``tensorboard``
package is installed and is silently skipped otherwise (it is not a dependency).
"""

from __future__ import annotations

import os
from pathlib import Path

from joyful.training.loop import HISTORY_METRICS, EpochRecord


class TensorBoardLogger:
    """Write each :class:`EpochRecord` as TensorBoard scalars under ``log_dir``.

    ``enabled`` is False when ``log_dir`` is None (nowhere to write) or TensorBoard is
    not importable; every method is then a no-op, so callers need no conditionals. The
    event file is opened at the first logged epoch, so a run that fails before training
    leaves no empty log directory.
    """

    def __init__(self, log_dir: str | os.PathLike | None) -> None:
        self.log_dir = None if log_dir is None else Path(log_dir)
        self._writer_class = None
        self._writer = None
        if self.log_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return
            self._writer_class = SummaryWriter

    @property
    def enabled(self) -> bool:
        return self._writer_class is not None

    def log_epoch(self, record: EpochRecord, step: int | None = None) -> None:
        """Losses as ``loss/L_<part>``, validation scores as ``valid/<score>``, epoch time as ``time/seconds``.

        The validation scores are those of history.csv that the task has (accuracy and F1
        for classes and emotions, MAE and correlation for a score); a correlation that is
        undefined (constant predictions) is left out rather than drawn as 0.
        ``step`` numbers epochs across the members of an ensemble (default: the epoch).
        """
        if not self.enabled:
            return
        if self._writer is None:
            self._writer = self._writer_class(log_dir=str(self.log_dir))
        step = record.epoch if step is None else step
        for part, value in record.losses.items():
            self._writer.add_scalar(f"loss/L_{part}", value, step)
        if record.valid is not None:
            for name in HISTORY_METRICS:
                if record.valid.get(name) is not None:
                    self._writer.add_scalar(f"valid/{name}", record.valid[name], step)
        self._writer.add_scalar("time/seconds", record.seconds, step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (safe to call more than once, or when disabled)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
