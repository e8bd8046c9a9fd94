"""Renaming labels as data is read, so one domain's classes can be scored by another's model.

MELD and IEMOCAP share four emotions under different names. A model trained on
IEMOCAP-4 refuses any label outside its set, and dropping MELD's other utterances would
change the dialogue graph (who spoke before whom); so a label the map does not name
becomes ``None``: the utterance stays in the dialogue as context and is neither trained
on nor scored.

A map is written ``neutral=neu,joy=hap`` or given as a JSON file ``{"neutral": "neu", ...}``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from joyful.data.schema import DialogueSet
from joyful.errors import JoyfulError

LabelMap = dict[str, str]


def parse(spec: str) -> LabelMap:
    """A label map from ``old=new,...`` or from the path of a JSON object; errors name the bad entry."""
    if Path(spec).is_file():
        return _from_json(Path(spec))
    if spec.endswith(".json"):
        raise JoyfulError(f"--label-map {spec}: file not found")
    mapping: LabelMap = {}
    for entry in spec.split(","):
        old, sep, new = (part.strip() for part in entry.partition("="))
        if not sep or not old or not new:
            raise JoyfulError(f"--label-map: entry {entry.strip()!r} is not old=new (e.g. neutral=neu,joy=hap)")
        _add(mapping, old, new, entry.strip())
    return mapping


def _from_json(path: Path) -> LabelMap:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise JoyfulError(f"--label-map {path}: not JSON ({e})") from None
    if not isinstance(raw, dict) or not raw:
        raise JoyfulError(f"--label-map {path}: expected a non-empty JSON object {{\"old\": \"new\", ...}}")
    mapping: LabelMap = {}
    for old, new in raw.items():
        if not isinstance(new, str) or not new.strip() or not old.strip():
            raise JoyfulError(f"--label-map {path}: entry {old!r}: {new!r} must map a label to a non-empty label name")
        _add(mapping, old.strip(), new.strip(), f"{old}: {new}")
    return mapping


def _add(mapping: LabelMap, old: str, new: str, entry: str) -> None:
    if old in mapping and mapping[old] != new:
        raise JoyfulError(f"--label-map: entry {entry!r} maps {old!r} a second time (already to {mapping[old]!r})")
    mapping[old] = new


def apply(data: DialogueSet, mapping: LabelMap) -> DialogueSet:
    """A copy of ``data`` with every label renamed by ``mapping``, and every label it does not name set to ``None``.

    Utterances are never removed: an unmapped one is context for its neighbours. Only
    single class names are mapped (classification data); a multilabel or numeric label is
    refused rather than silently unlabelled.
    """
    out = []
    for d in data.dialogues:
        if d.labels is not None:
            for i, lab in enumerate(d.labels):
                if lab is not None and not isinstance(lab, str):
                    raise JoyfulError(
                        f"{data.source}: dialogue {d.id!r}: utterance {i}: label {lab!r} is not a class name; "
                        "--label-map renames single class labels only"
                    )
            d = dataclasses.replace(d, labels=[mapping.get(lab) if lab is not None else None for lab in d.labels])
        out.append(d)
    return DialogueSet(out, data.source)


__all__ = ["LabelMap", "apply", "parse"]
