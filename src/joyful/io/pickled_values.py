"""Turning per-dialogue values from research pickles into schema types.

COGMEN, Joyful, DialogueGCN and MMGCN pickles store the same kinds of values in
slightly different shapes (speaker letters or one-hot vectors, Python or numpy
integers, lists of vectors or 2-D arrays, Python 2 strings). Both pickle readers go
through these functions so that they accept the same variations and fail alike.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from joyful.errors import DataError
from joyful.io.text_repair import repair_mojibake


def as_list(value: Any, source: str, dialogue: str, field: str) -> list:
    """A per-utterance sequence (list, tuple or array) as a list."""
    if isinstance(value, np.ndarray) and value.ndim > 0:  # list() of a 0-d array is a TypeError
        return list(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    raise DataError(
        source, f"expected one entry per utterance, got {describe(value)}", dialogue=dialogue, field=field
    )


def is_text(value: Any) -> bool:
    """Whether a per-utterance sequence holds strings (sentences) rather than vectors."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0:  # no items: list() of a 0-d array is a TypeError
            return False
    elif not isinstance(value, (list, tuple)):
        return False
    return len(value) > 0 and isinstance(value[0], (str, bytes))


def text(value: Any) -> str:
    """A sentence, decoded if it is bytes and with MELD-style mojibake repaired."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return repair_mojibake(str(value))


def sentence(value: Any, source: str, dialogue: str, field: str, index: int) -> str:
    """One utterance's sentence; anything but text is refused, where :func:`text` would print it.

    ``str()`` would turn a ``None`` or a number in a sentence list into the text "None" or
    "1.5", a silent change the text encoder would then embed.
    """
    if not isinstance(value, (str, bytes)):
        raise DataError(
            source, f"sentence must be a string, not {describe(value)}", dialogue=dialogue, field=field, index=index
        )
    return text(value)


def speaker(value: Any, source: str, dialogue: str, index: int) -> str:
    """A speaker id: letters stay as they are, integers become their digits, a one-hot vector its argmax.

    Anything else is refused rather than made into a plausible id: ``None`` would become
    "None", an all-zero or tied vector "0" (argmax of a tie), a NaN "nan"; empty and
    nested arrays used to escape as a ValueError.
    """
    if isinstance(value, (str, bytes)):
        return text(value).strip()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):  # ragged nesting
        arr = np.empty((0, 0))
    if arr.size == 1 and arr.ndim <= 1:
        x = arr.reshape(()).item()
        if isinstance(x, (str, bytes)):
            return text(x).strip()
        i = _as_integer(x)
        digits = None if i is None else _integer_text(i)
        if digits is not None:
            return digits
        if isinstance(x, (float, np.floating)) and math.isfinite(x):
            return str(x)
    elif arr.ndim == 1 and arr.size > 1 and arr.dtype.kind in "biuf" and np.isfinite(arr).all():
        if np.count_nonzero(arr == arr.max()) == 1:  # one-hot, or at least one clear maximum
            return str(int(np.argmax(arr)))
    raise DataError(
        source,
        f"speaker must be a name, an integer or a one-hot vector, not {describe(value)}",
        dialogue=dialogue,
        field="speaker",
        index=index,
    )


def label(value: Any, names: Sequence[str] | None, source: str, dialogue: str, index: int) -> str:
    """A label name: integers go through ``names`` (or become ``str(int)``), names stay."""
    if isinstance(value, (str, bytes)):
        return text(value).strip()
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    # Integers are taken as they are: float() of one beyond float64 raised OverflowError.
    i = _as_integer(value)
    digits = None if i is None else _integer_text(i)
    if i is not None and digits is None:
        raise DataError(source, f"label is {describe(i)}, not a label", dialogue=dialogue, field="label", index=index)
    if digits is not None:
        if names is None:
            return digits
        if 0 <= i < len(names):
            return names[i]
        raise DataError(
            source,
            f"label {digits} is outside the {len(names)} label names given ({', '.join(names)})",
            dialogue=dialogue,
            field="label",
            index=index,
        )
    raise DataError(
        source,
        f"label {describe(value)} is neither an integer nor a name",
        dialogue=dialogue,
        field="label",
        index=index,
    )


def vectors(value: Any, source: str, dialogue: str, field: str) -> np.ndarray:
    """Per-utterance vectors as a float32 ``(n, width)`` array; ragged input is an error.

    A pickle has no way to say "this utterance lacks the modality" (JSONL's ``null``), so
    NaN and infinite values, a whole row of NaN included, are corrupt data and refused here,
    naming the utterance: the schema reads a NaN row as "missing", which would silently
    change the data.
    """
    out: list[np.ndarray] = []
    with np.errstate(over="ignore"):  # out-of-range values become inf, refused below
        for i, row in enumerate(as_list(value, source, dialogue, field)):
            v = _vector(row, source, dialogue, field, i)
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
    arr = np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise DataError(
            source,
            "vector holds NaN or infinite values (or numbers beyond float32); "
            "a pickle cannot mark a modality missing, so these are corrupt values",
            dialogue=dialogue,
            field=field,
            index=int(np.flatnonzero(~finite)[0]),
        )
    return arr


def _vector(row: Any, source: str, dialogue: str, field: str, index: int) -> np.ndarray:
    """One utterance's vector as float32, refusing what ``np.asarray(..., float32)`` converts silently.

    numpy parses strings ("1.5"), turns booleans into 0/1 and ``None`` into NaN, and drops
    the imaginary part of complex values; none of those is a feature value.
    """
    if isinstance(row, np.ndarray):
        numeric = row.dtype.kind in "iuf" or (row.dtype.kind == "O" and _all_real(row.flat))
    else:
        numeric = isinstance(row, (list, tuple)) and _all_real(row)
    if not numeric:
        what = "values that are not numbers" if isinstance(row, (list, tuple, np.ndarray)) else describe(row)
        raise DataError(
            source, f"expected a vector of numbers, got {what}", dialogue=dialogue, field=field, index=index
        )
    try:
        return np.asarray(row, dtype=np.float32)
    except OverflowError:  # a Python integer beyond float64
        raise DataError(
            source, "vector holds a number beyond float32", dialogue=dialogue, field=field, index=index
        ) from None
    except (TypeError, ValueError):  # ragged nesting inside an object array
        raise DataError(
            source, "vector holds values that are not numbers", dialogue=dialogue, field=field, index=index
        ) from None


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _all_real(items: Any) -> bool:
    """Whether every item is a real number (not a bool); checked per type, as rows can be long."""
    return all(issubclass(t, numbers.Real) and not issubclass(t, (bool, np.bool_)) for t in set(map(type, items)))


def _as_integer(x: Any) -> int | None:
    """``x`` as an int if it is an integer or an integral finite float, else ``None``."""
    if isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_)):
        return int(x)
    if _is_real(x) and math.isfinite(x) and float(x).is_integer():
        return int(x)
    return None


def _integer_text(i: int) -> str | None:
    """``str(i)``, or ``None`` for an integer of more than 4300 digits, which Python refuses to print."""
    try:
        return str(i)
    except ValueError:
        return None


def describe(value: Any) -> str:
    """A short description of a value for a message: never a full repr, which may be huge (or fail)."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} ({value.dtype})"
    if value is None or isinstance(value, (bool, float, np.bool_, np.floating)):
        return repr(value)
    if isinstance(value, (int, np.integer)):
        n = abs(int(value))
        return repr(value) if n < 10**18 else f"an integer of about {int(n.bit_length() * math.log10(2)) + 1} digits"
    if isinstance(value, (str, bytes)) and len(value) <= 40:
        return repr(value)
    return f"a {type(value).__name__}"
