"""COGMEN and official Joyful pickles: ``{"train", "dev", "test"}`` lists of ``Sample``.

Each sample is one dialogue with per-utterance lists (speaker letters, integer labels,
text/audio/visual vectors, sentences). The official Joyful code feeds
``sbert_sentence_embeddings`` as the text modality instead of ``text``, so that is what
becomes the ``"t"`` features when present; matching the authors' inputs is the point of
reading their pickles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from joyful.data.schema import Dialogue, DialogueSet
from joyful.errors import DataError
from joyful.io import pickled_values as pv
from joyful.io.sample import Sample

#: Keys a COGMEN-style pickle may use for each split.
SPLIT_KEYS: dict[str, tuple[str, ...]] = {"train": ("train",), "dev": ("dev", "valid"), "test": ("test",)}


def is_cogmen(obj: Any) -> bool:
    """Whether an unpickled object has the COGMEN layout (a dict of split lists)."""
    return isinstance(obj, Mapping) and any(k in obj for keys in SPLIT_KEYS.values() for k in keys)


def dialogues_from_cogmen(
    data: Mapping, split: str, source: str, int_label_names: Sequence[str] | None = None
) -> DialogueSet:
    """The dialogues of one split (``train``, ``dev`` or ``test``), not yet validated."""
    key = next((k for k in SPLIT_KEYS[split] if k in data), None)
    if key is None:
        have = ", ".join(repr(k) for k in data)
        raise DataError(source, f"pickle has no {split!r} split; it holds {have}")
    samples = data[key]
    if not isinstance(samples, (list, tuple)):
        raise DataError(source, f"split {key!r} holds a {type(samples).__name__}, not a list of samples")
    return DialogueSet([_dialogue(s, i, source, int_label_names) for i, s in enumerate(samples)], source)


def _dialogue(s: Any, position: int, source: str, names: Sequence[str] | None) -> Dialogue:
    if not isinstance(s, Sample):
        raise DataError(source, f"entry {position} of the split is a {type(s).__name__}, not a COGMEN Sample")
    if s.vid is None:
        raise DataError(source, f"sample {position} has no vid", field="vid")
    did = pv.text(s.vid) if isinstance(s.vid, (str, bytes)) else str(s.vid)
    if s.speaker is None:  # named by the id as read (str() of a bytes vid would give "b'...'")
        raise DataError(source, f"sample {position} has no speaker", dialogue=did, field="speaker")
    speakers = [pv.speaker(x, source, did, i) for i, x in enumerate(pv.as_list(s.speaker, source, did, "speaker"))]
    labels = None
    if s.label is not None:
        labels = [pv.label(x, names, source, did, i) for i, x in enumerate(pv.as_list(s.label, source, did, "label"))]
    texts = None
    if s.sentence is not None:
        texts = _sentences(s.sentence, source, did, "sentence")
    elif s.text is not None and pv.is_text(s.text):  # COGMEN's MOSEI pickles keep sentences in `text`
        texts = _sentences(s.text, source, did, "text")
    return Dialogue(id=did, speakers=speakers, features=_features(s, source, did), texts=texts, labels=labels)


def _sentences(value: Any, source: str, did: str, field: str) -> list[str]:
    return [pv.sentence(x, source, did, field, i) for i, x in enumerate(pv.as_list(value, source, did, field))]


def _features(s: Sample, source: str, did: str) -> dict[str, np.ndarray]:
    sbert = getattr(s, "sbert_sentence_embeddings", None)
    found: dict[str, tuple[str, Any]] = {}
    if sbert is not None:
        found["t"] = ("sbert_sentence_embeddings", sbert)
    elif s.text is not None and not pv.is_text(s.text):
        found["t"] = ("text", s.text)
    for m, name in (("a", "audio"), ("v", "visual")):
        if getattr(s, name) is not None:
            found[m] = (name, getattr(s, name))
    return {m: pv.vectors(value, source, did, name) for m, (name, value) in found.items()}
