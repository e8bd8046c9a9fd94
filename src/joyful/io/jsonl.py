"""The project's own dialogue format: JSON Lines, one dialogue per line.

``{"dialogue": id, "utterances": [{"speaker", "text", "label", "text_features",
"audio", "visual"}]}``. Only ``speaker`` is required; labels and text may be absent
(prediction input), and features are optional lists of floats. A feature field that is
``null`` or absent on some utterances of a dialogue marks the modality missing there
(no face in view, no audio track): the model handles that, and the reader keeps it as
a NaN row. Text must be on every utterance or on none (an empty string is allowed).
Other keys are ignored, so users can keep their own metadata in the file.

``"attributes": {"gender": "F"}`` on a dialogue and/or an utterance says which groups it
belongs to (for per-group scores, :mod:`joyful.analysis.fairness`); values are strings.
A dialogue's attributes apply to each of its utterances, an utterance's own value wins.

A label is a class name (classification), a list of names (multi-label: the emotions
present, ``[]`` for none) or a number (regression, e.g. sentiment). An integer label is a
class name ("3"), as research files write class ids, unless the task is regression or
the same file also has labels written with a decimal point (``2.0``, ``-0.6``): then its
integers are scores too, so a sentiment file that writes ``3`` for 3.0 reads as one task.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from joyful.atomic import atomic_open
from joyful.data.label_forms import Label
from joyful.data.schema import MODALITIES, Dialogue, DialogueSet, feature_field, missing_matrix, missing_rows
from joyful.errors import DataError

#: JSON field name of each modality's vectors.
FIELDS: dict[str, str] = {m: feature_field(m) for m in MODALITIES}

#: The types json.loads gives numbers, compared by type since ``bool`` is a subclass of ``int``.
_NUMBER_TYPES = frozenset({int, float})


def read_jsonl(path: str | os.PathLike, source: str | None = None, *, task: str | None = None) -> DialogueSet:
    """Read every dialogue in ``path`` (not yet validated; :func:`read_dialogues` does that).

    ``task`` only settles what integer labels are (see the module's docstring).
    """
    source = str(path) if source is None else source
    dialogues: list[Dialogue] = []
    parsed: list[_Labels] = []
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").lstrip("\ufeff")
            except UnicodeDecodeError as e:
                raise DataError(source, f"line {n}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(source, f"line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
            except ValueError as e:  # an integer of more than 4300 digits, which Python refuses to read
                raise DataError(source, f"line {n}: cannot be read ({str(e).split(';')[0]})") from None
            except RecursionError:  # arrays or objects nested thousands deep
                raise DataError(source, f"line {n}: cannot be read (lists or objects nested too deeply)") from None
            d, labels = _record(record, source, line=n)
            dialogues.append(d)
            parsed.append(labels)
    _settle_integers(dialogues, parsed, task, source)
    return DialogueSet(dialogues, source)


def dialogue_from_record(record: Any, source: str, *, line: int | None = None, task: str | None = None) -> Dialogue:
    """One dialogue from a decoded JSON object (a line of the file, or a request body), unvalidated."""
    d, labels = _record(record, source, line=line)
    _settle_integers([d], [labels], task, source)
    return d


@dataclass
class _Labels:
    """How one dialogue's labels were written: which were integers, and whether any had a decimal point."""

    integers: list[int] = field(default_factory=list)
    decimal: bool = False


def _settle_integers(dialogues: list[Dialogue], parsed: list[_Labels], task: str | None, source: str) -> None:
    """Make integer labels scores when the task is regression or the labels read include decimals."""
    if not (task == "regression" or (task in (None, "auto") and any(p.decimal for p in parsed))):
        return
    for d, p in zip(dialogues, parsed, strict=True):
        for i in p.integers:
            d.labels[i] = _score(int(d.labels[i]), source, d.id, i)


def _record(record: Any, source: str, *, line: int | None) -> tuple[Dialogue, _Labels]:
    where = "" if line is None else f"line {line}: "
    if not isinstance(record, dict) or "dialogue" not in record or "utterances" not in record:
        raise DataError(source, f'{where}expected an object with "dialogue" and "utterances"')
    did = record["dialogue"]
    if not isinstance(did, (str, int)) or isinstance(did, bool):
        raise DataError(
            source, f"{where}dialogue id must be a string or an integer, not {did!r}", field="dialogue"
        )
    did = str(did)
    utts = record["utterances"]
    if not isinstance(utts, list):
        raise DataError(source, "utterances must be a list", dialogue=did, field="utterances")
    for i, u in enumerate(utts):
        if not isinstance(u, dict):
            raise DataError(source, "utterance must be an object", dialogue=did, index=i)

    speakers = [_speaker(u.get("speaker"), source, did, i) for i, u in enumerate(utts)]
    texts = _all_or_none(utts, "text", source, did)
    if texts is not None:
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise DataError(
                    source, f"text must be a string, not {type(t).__name__}", dialogue=did, field="text", index=i
                )
    written = _Labels()
    labels = [_label(u.get("label"), source, did, i, written) for i, u in enumerate(utts)]
    features = {}
    for m, name in FIELDS.items():
        rows = [u.get(name) for u in utts]
        if any(r is not None for r in rows):
            features[m] = _matrix(rows, source, did, name)
    shared = _attributes(record.get("attributes"), source, did, None)
    own = [_attributes(u.get("attributes"), source, did, i) for i, u in enumerate(utts)]
    return Dialogue(
        id=did,
        speakers=speakers,
        features=features,
        texts=texts,
        labels=labels if any(lab is not None for lab in labels) else None,
        attributes=[{**shared, **mine} for mine in own] if shared or any(own) else None,
    ), written


def _attributes(value: Any, source: str, did: str, i: int | None) -> dict[str, str]:
    """An ``attributes`` object of string values; ``i`` is the utterance, ``None`` for the dialogue's own."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DataError(source, f"attributes must be an object, not {value!r}", dialogue=did, field="attributes", index=i)
    for key, v in value.items():
        if not isinstance(v, str) or not key:
            what = "an attribute needs a name" if not key else f"attribute {key!r} must be a string, not {v!r}"
            raise DataError(source, what, dialogue=did, field="attributes", index=i)
    return dict(value)


def _speaker(value: Any, source: str, did: str, i: int) -> Any:
    """Speaker as a string; a missing one stays ``None`` for validate() to report."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DataError(source, f"speaker must be a string, not {value!r}", dialogue=did, field="speaker", index=i)


def _label(value: Any, source: str, did: str, i: int, written: _Labels) -> Label | None:
    """A label as the task contract has it; integers stay names here (see :func:`_settle_integers`)."""
    if value is None or isinstance(value, str):
        return value
    if type(value) is int:
        written.integers.append(i)
        return str(value)
    if type(value) is float:
        written.decimal = True
        return _score(value, source, did, i)
    if isinstance(value, list):
        if not all(isinstance(x, str) for x in value):
            bad = next(x for x in value if not isinstance(x, str))
            raise DataError(source, f"a list of labels must hold strings, not {bad!r}", dialogue=did, field="label", index=i)
        if len(set(value)) != len(value):
            twice = next(x for x in value if value.count(x) > 1)
            raise DataError(source, f"label {twice!r} appears twice in the list", dialogue=did, field="label", index=i)
        return tuple(value)
    raise DataError(
        source, f"label must be a string, a list of strings, a number or null, not {value!r}",
        dialogue=did, field="label", index=i,
    )


def _score(value: int | float, source: str, did: str, i: int) -> float:
    """A regression label; JSON's NaN/Infinity literals (and numbers beyond float64) are corrupt, never "unlabelled"."""
    score = _as_float(value)
    if not math.isfinite(score):
        raise DataError(
            source, "label is NaN or infinite (write null for an unlabelled utterance)", dialogue=did, field="label", index=i
        )
    return score


def _all_or_none(utts: list[dict], name: str, source: str, did: str) -> list | None:
    """The field's values on every utterance, or ``None`` if no utterance has it."""
    have = [u.get(name) is not None for u in utts]
    if not any(have):
        return None
    if not all(have):
        i = have.index(False)
        j = have.index(True)
        raise DataError(
            source,
            f"missing here but present on utterance {j}; give it on every utterance or none",
            dialogue=did,
            field=name,
            index=i,
        )
    return [u[name] for u in utts]


def _matrix(rows: list, source: str, did: str, name: str) -> np.ndarray:
    """Per-utterance lists of numbers as a float32 ``(n, width)`` array; ``None`` rows become NaN (missing)."""
    first = next(i for i, r in enumerate(rows) if r is not None)
    for i, r in enumerate(rows):
        if r is None:
            continue
        if not isinstance(r, list):
            raise DataError(
                source, f"expected a list of numbers, not {type(r).__name__}", dialogue=did, field=name, index=i
            )
        if len(r) != len(rows[first]):
            raise DataError(
                source,
                f"vector has width {len(r)}, but utterance {first} has width {len(rows[first])}",
                dialogue=did,
                field=name,
                index=i,
            )
    present = [i for i, r in enumerate(rows) if r is not None]
    # Check the types before numpy sees them: np.array would turn [true, 2.5] into [1.0, 2.5]
    # silently, and an integer beyond int64 into an object array blamed on no utterance.
    kinds = set(map(type, itertools.chain.from_iterable(rows[i] for i in present)))
    if not kinds <= _NUMBER_TYPES:
        bad = next(i for i in present if not set(map(type, rows[i])) <= _NUMBER_TYPES)
        raise DataError(source, "vector holds a value that is not a number", dialogue=did, field=name, index=bad)
    try:
        arr = np.array([rows[i] for i in present], dtype=np.float64)
    except OverflowError:  # an integer beyond float64, so beyond float32: reported as infinite below
        arr = np.array([[_as_float(x) for x in rows[i]] for i in present], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        values = arr.astype(np.float32)
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        # JSON's NaN/Infinity literals (and numbers beyond float32) are corrupt values, never
        # "missing": null or an absent key is the one way to say a modality is missing.
        raise DataError(
            source,
            "vector holds NaN or infinite values (write null to mark the modality missing)",
            dialogue=did,
            field=name,
            index=present[int(np.flatnonzero(~finite)[0])],
        )
    out = missing_matrix(len(rows), arr.shape[1])
    out[present] = values
    return out


def _as_float(x: int | float) -> float:
    """``float(x)``, with integers too large for a float as infinity (which _matrix then refuses)."""
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def write_jsonl(dialogues: Iterable[Dialogue], path: str | os.PathLike) -> None:
    """Write dialogues so that :func:`read_jsonl` gives them back; atomic, never half-written."""
    with atomic_open(path, "w") as fh:
        for d in dialogues:
            fh.write(json.dumps(dialogue_record(d), ensure_ascii=False) + "\n")


def dialogue_record(d: Dialogue) -> dict[str, Any]:
    """``d`` as one line of the JSONL format (before ``json.dumps``), as :func:`dialogue_from_record` reads it."""
    unknown = set(d.features) - set(FIELDS)
    if unknown:
        raise ValueError(f"dialogue {d.id!r} has modalities {sorted(unknown)} the JSONL format cannot hold")
    rows = {FIELDS[m]: _rows(x) for m, x in d.features.items()}
    utterances = []
    for i, spk in enumerate(d.speakers):
        u: dict[str, Any] = {"speaker": spk}
        if d.texts is not None:
            u["text"] = d.texts[i]
        if d.labels is not None:
            u["label"] = _label_json(d.labels[i])
        for name, vecs in rows.items():
            u[name] = vecs[i]
        utterances.append(u)
    record: dict[str, Any] = {"dialogue": d.id, "utterances": utterances}
    if d.attributes is not None:
        shared = _shared_attributes(d.attributes)
        if shared:
            record["attributes"] = shared
        for u, attrs in zip(utterances, d.attributes, strict=True):
            own = {k: v for k, v in attrs.items() if shared.get(k) != v}
            if own:
                u["attributes"] = own
    return record


def _shared_attributes(per_utterance: list[dict[str, str]]) -> dict[str, str]:
    """The attributes every utterance has with one value: written once on the dialogue, as a user would."""
    first, *rest = per_utterance
    return {k: v for k, v in first.items() if all(a.get(k) == v for a in rest)}


def _label_json(label: Label | None) -> Any:
    """A label as :func:`read_jsonl` reads it back: a tuple of emotions as a list, a score as a float."""
    if isinstance(label, tuple):
        return list(label)
    if label is None or isinstance(label, str):
        return label
    score = float(label)  # numpy scalars too; an integer score must not come back as a class name
    if not math.isfinite(score):
        raise ValueError(f"label {label!r} cannot be written: JSON has no NaN or infinity")
    return score


def _rows(x: np.ndarray) -> list:
    """Vectors as lists, a missing utterance (NaN row) as ``None`` (JSON ``null``)."""
    missing = missing_rows(x)
    return [None if gone else row for gone, row in zip(missing.tolist(), x.tolist(), strict=True)]
