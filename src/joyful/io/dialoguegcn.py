"""DialogueGCN / MMGCN pickles: parallel dicts keyed by dialogue id, then id lists.

The layouts differ by dataset and by author: IEMOCAP_features.pkl holds
``(ids, speakers, labels, text, audio, visual, sentences, train_ids, test_ids)``;
DialogueGCN's MELD_features_raw.pkl has no visual dict and a trailing sentiment dict;
MMGCN's MELD pickle adds the visual dict back. So the layout is recognised from content:
the leading run of dicts is ids, speakers, labels, 1-3 feature dicts (text, audio,
visual, in that order) and optionally a dict of sentences (recognised by holding
strings); then come 2 (train, test) or 3 (train, dev, test) lists of ids. Anything after
is ignored, except a list right after them that is not a list of ids: that is a damaged id
list, refused, because skipping it would shift the splits (dev ids read as the test split).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from joyful.data.schema import MODALITY_NAMES, Dialogue, DialogueSet
from joyful.errors import DataError
from joyful.io import pickled_values as pv


@dataclass
class Layout:
    """Where each kind of value is in the pickle."""

    speakers: Mapping
    labels: Mapping
    features: dict[str, Mapping]
    sentences: Mapping | None
    splits: dict[str, list]


def dialogues_from_dialoguegcn(
    obj: Any, split: str, source: str, int_label_names: Sequence[str] | None = None
) -> DialogueSet:
    """The dialogues of one split (``train``, ``dev`` or ``test``), not yet validated."""
    layout = recognise(obj, source)
    if split not in layout.splits:
        raise DataError(
            source,
            "this DialogueGCN/MMGCN pickle holds only train and test ids, no validation split; "
            "pass a separate validation file, e.g. part of the training dialogues written out as JSONL "
            "(never the test split: early stopping on it would leak the test set into training)",
        )
    return DialogueSet([_dialogue(layout, vid, split, source, int_label_names) for vid in layout.splits[split]], source)


def recognise(obj: Any, source: str) -> Layout:
    """Find the dicts and id lists in a DialogueGCN-style tuple, or say what was found instead."""
    if not isinstance(obj, (tuple, list)):
        raise _unrecognised(source, obj)
    n_dicts = next((i for i, x in enumerate(obj) if not isinstance(x, Mapping)), len(obj))
    dicts = obj[:n_dicts]
    id_lists: list[list] = []
    for x in obj[n_dicts:]:
        if not _is_id_list(x, dicts[0] if dicts else {}):
            break
        id_lists.append(_ordered(x))
    after = n_dicts + len(id_lists)
    if n_dicts >= 4 and len(id_lists) < 3 and after < len(obj) and _is_list_like(obj[after]):
        # A list holding ids the ids dict lacks: ignoring it (and the lists after it) would
        # read (train, dev, broken test) as (train, test), a silent change of splits.
        raise _damaged_id_list(source, obj[after], after, dicts[0])
    rest = list(dicts[3:])
    sentences = rest.pop() if rest and _holds_text(rest[-1]) else None
    if n_dicts < 4 or not 1 <= len(rest) <= 3 or any(_holds_text(d) for d in rest) or len(id_lists) not in (2, 3):
        raise _unrecognised(source, obj)
    names = ("train", "test") if len(id_lists) == 2 else ("train", "dev", "test")
    return Layout(
        speakers=dicts[1],
        labels=dicts[2],
        features=dict(zip(("t", "a", "v"), rest, strict=False)),
        sentences=sentences,
        splits=dict(zip(names, id_lists, strict=True)),
    )


def _is_id_list(x: Any, ids: Mapping) -> bool:
    """A list/set/array of dialogue ids, every one of them a key of the ids dict."""
    if isinstance(x, np.ndarray):
        x = x.tolist() if x.ndim == 1 else None
    if not isinstance(x, (list, tuple, set, frozenset)):
        return False
    try:
        return all(v in ids for v in x)
    except TypeError:  # unhashable entries
        return False


def _is_list_like(x: Any) -> bool:
    return isinstance(x, (list, tuple, set, frozenset)) or (isinstance(x, np.ndarray) and x.ndim == 1)


def _damaged_id_list(source: str, x: Any, position: int, ids: Mapping) -> DataError:
    items = x.tolist() if isinstance(x, np.ndarray) else list(x)
    unknown = []
    for v in items:
        try:
            known = v in ids
        except TypeError:  # unhashable
            known = False
        if not known:
            unknown.append(v)
    return DataError(
        source,
        f"item {position + 1} of the pickle, where a list of dialogue ids belongs, holds {len(unknown)} "
        f"entries that are not keys of its first dict (the dialogue ids), e.g. {pv.describe(unknown[0])}",
    )


def _ordered(x: Any) -> list:
    """Ids in file order; sets (no order) sorted, so runs are reproducible."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    return sorted(x, key=str) if isinstance(x, (set, frozenset)) else list(x)


def _holds_text(d: Mapping) -> bool:
    """Whether a dict's first non-empty per-dialogue value is a list of strings."""
    for v in d.values():
        if pv.is_text(v):
            return True
        if isinstance(v, (list, tuple, np.ndarray)) and len(v):
            return False
    return False


def _unrecognised(source: str, obj: Any) -> DataError:
    if isinstance(obj, (tuple, list)):
        found = f"a {type(obj).__name__} of {len(obj)} items ({', '.join(type(x).__name__ for x in obj[:12])})"
    else:
        found = f"a {type(obj).__name__}"
    return DataError(
        source,
        f"pickle layout not recognised: found {found}; expected COGMEN's dict of train/dev/test samples, "
        "or DialogueGCN/MMGCN's tuple of dicts (ids, speakers, labels, features..., sentences) followed by "
        "train and test id lists",
    )


def _dialogue(layout: Layout, vid: Any, split: str, source: str, names: Sequence[str] | None) -> Dialogue:
    did = pv.text(vid) if isinstance(vid, (str, bytes)) else str(vid)

    def entry(d: Mapping, field: str) -> list:
        if vid not in d:
            raise DataError(
                source, f"dialogue is in the {split} ids but has no {field} entry", dialogue=did, field=field
            )
        return pv.as_list(d[vid], source, did, field)

    return Dialogue(
        id=did,
        speakers=[pv.speaker(x, source, did, i) for i, x in enumerate(entry(layout.speakers, "speaker"))],
        features={
            m: pv.vectors(entry(d, MODALITY_NAMES[m]), source, did, MODALITY_NAMES[m])
            for m, d in layout.features.items()
        },
        texts=None
        if layout.sentences is None
        else [pv.sentence(x, source, did, "sentence", i) for i, x in enumerate(entry(layout.sentences, "sentence"))],
        labels=[pv.label(x, names, source, did, i) for i, x in enumerate(entry(layout.labels, "label"))],
    )
