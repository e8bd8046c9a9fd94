"""Errors that reach the user as one line and a non-zero exit.

Everything the CLI can blame on its input raises a subclass of :class:`JoyfulError`;
the CLI prints ``str(error)`` and exits with status 2. The message always names the
file, and where known the dialogue and field, because a user with a 10 000-dialogue
file needs to know *where* to look, not just *what* went wrong.
"""

from __future__ import annotations


class JoyfulError(Exception):
    """Base class of every error the CLI reports as a one-line message."""


class DataError(JoyfulError):
    """Bad input data: names the file, the dialogue and the field at fault."""

    def __init__(
        self,
        source: str,
        problem: str,
        *,
        dialogue: str | None = None,
        field: str | None = None,
        index: int | None = None,
    ) -> None:
        self.source = str(source)
        self.dialogue = dialogue
        self.field = field
        self.index = index
        self.problem = problem
        where = [self.source]
        if dialogue is not None:
            where.append(f"dialogue {dialogue!r}")
        if index is not None:
            where.append(f"utterance {index}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(": ".join(where) + f": {problem}")


class CheckpointError(JoyfulError):
    """A model directory that is missing, truncated or inconsistent."""
