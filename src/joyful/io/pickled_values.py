"""Turning per-dialogue values from research pickles into schema types.

COGMEN, Joyful, DialogueGCN and MMGCN pickles store the same kinds of values in
slightly different shapes (speaker letters or one-hot vectors, Python or numpy
integers, lists of vectors or 2-D arrays, Python 2 strings). Both pickle readers go
through these functions so that they accept the same variations and fail alike.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from joyful.errors import DataError
from joyful.io.text_repair import repair_mojibake


def as_list(value: Any, source: str, dialogue: str, field: str) -> list:
    """A per-utterance sequence (list, tuple or array) as a list."""
    if isinstance(value, np.ndarray):
        return list(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    raise DataError(
        source, f"expected one entry per utterance, got {type(value).__name__}", dialogue=dialogue, field=field
    )


def is_text(value: Any) -> bool:
    """Whether a per-utterance sequence holds strings (sentences) rather than vectors."""
    items = list(value) if isinstance(value, (list, tuple, np.ndarray)) else []
    return bool(items) and isinstance(items[0], (str, bytes))


def text(value: Any) -> str:
    """A sentence, decoded if it is bytes and with MELD-style mojibake repaired."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return repair_mojibake(str(value))


def speaker(value: Any) -> str:
    """A speaker id: letters stay as they are, a one-hot vector becomes its argmax."""
    if isinstance(value, (str, bytes)):
        return text(value).strip()
    arr = np.asarray(value)
    if arr.ndim == 1 and arr.size > 1:
        return str(int(np.argmax(arr)))
    return str(arr.item())


def label(value: Any, names: Sequence[str] | None, source: str, dialogue: str, index: int) -> str:
    """A label name: integers go through ``names`` (or become ``str(int)``), names stay."""
    if isinstance(value, (str, bytes)):
        return text(value).strip()
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
        i = int(value)
        if names is None:
            return str(i)
        if 0 <= i < len(names):
            return names[i]
        raise DataError(
            source,
            f"label {i} is outside the {len(names)} label names given ({', '.join(names)})",
            dialogue=dialogue,
            field="label",
            index=index,
        )
    raise DataError(
        source, f"label {value!r} is neither an integer nor a name", dialogue=dialogue, field="label", index=index
    )


def vectors(value: Any, source: str, dialogue: str, field: str) -> np.ndarray:
    """Per-utterance vectors as a float32 ``(n, width)`` array; ragged input is an error."""
    out: list[np.ndarray] = []
    with np.errstate(over="ignore"):  # out-of-range values become inf, which validate() reports
        for i, row in enumerate(as_list(value, source, dialogue, field)):
            try:
                v = np.asarray(row, dtype=np.float32)
            except (TypeError, ValueError):
                raise DataError(
                    source, "vector holds values that are not numbers", dialogue=dialogue, field=field, index=i
                ) from None
            if v.ndim != 1:
                raise DataError(
                    source,
                    f"expected one vector, got an array of shape {v.shape}",
                    dialogue=dialogue,
                    field=field,
                    index=i,
                )
            if out and v.shape != out[0].shape:
                raise DataError(
                    source,
                    f"vector has width {v.size}, but utterance 0 has width {out[0].size}",
                    dialogue=dialogue,
                    field=field,
                    index=i,
                )
            out.append(v)
    return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)
