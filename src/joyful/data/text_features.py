"""Text vectors for utterances that come with text only, and when joyful may compute them.

The rule for mixed input (README, "Mixed inputs"): an utterance with a non-empty text and
no ``text_features`` vector gets its vector from the model's text encoder. When the same
data also brings vectors of its own for other utterances, the two kinds may be mixed only
if the supplied vectors are that encoder's: a sample of utterances that carry both a text
and a vector is encoded again and must give the same vectors. Otherwise the data is
refused with an error naming the first utterance that has text but no vector. A model
records which kind of text vectors it was trained on (``text_features`` in its meta); one
trained on vectors that are not its encoder's refuses text-only utterances outright.
Either way a present text is never taken for a missing one, and vectors of two different
encoders never meet in one graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from joyful.data.context_text import contextual_texts
from joyful.data.schema import Dialogue, DialogueSet, missing_matrix, missing_rows
from joyful.errors import DataError, JoyfulError

#: Utterances re-encoded to decide whether supplied vectors are the encoder's.
CHECK_SAMPLE = 16
#: Cosine similarity every re-encoded vector must reach; float32 noise across machines stays far above it.
SAME_VECTOR_COSINE = 0.999
#: ``text_features`` values recorded in a model's meta.
ENCODER, SUPPLIED = "encoder", "supplied"


class Encoder(Protocol):
    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


def to_encode(d: Dialogue) -> np.ndarray:
    """Which utterances have something said but no text vector."""
    if d.texts is None:
        return np.zeros(len(d), dtype=bool)
    said = np.array([t.strip() != "" for t in d.texts], dtype=bool)
    return said & missing_rows(d.features["t"]) if "t" in d.features else said


def supplied_with_text(data: DialogueSet) -> Iterator[tuple[Dialogue, int]]:
    """Utterances that bring both a text vector and a non-empty text: the ones a check can re-encode."""
    for d in data:
        if "t" in d.features and d.texts is not None:
            for i in np.flatnonzero(~missing_rows(d.features["t"])):
                if d.texts[i].strip():
                    yield d, int(i)


def has_supplied_vectors(data: DialogueSet) -> bool:
    return any("t" in d.features and not missing_rows(d.features["t"]).all() for d in data)


def vectors_are_the_encoders(data: DialogueSet, encoder: Encoder, context: int) -> tuple[bool, str]:
    """Whether the supplied text vectors are what ``encoder`` gives; if not, why not (for the error)."""
    sample = []
    for pair in supplied_with_text(data):
        sample.append(pair)
        if len(sample) == CHECK_SAMPLE:
            break
    if not sample:
        return False, "and no text to check them against"
    expected = encoder.encode([contextual_texts(d, context)[i] for d, i in sample])
    given = np.stack([d.features["t"][i] for d, i in sample])
    if given.shape != expected.shape:
        return False, f"of width {given.shape[1]}, while the text encoder gives width {expected.shape[1]}"
    cosine = (given * expected).sum(1) / np.maximum(
        np.linalg.norm(given, axis=1) * np.linalg.norm(expected, axis=1), np.finfo(np.float32).tiny
    )
    norms_agree = np.isclose(np.linalg.norm(given, axis=1), np.linalg.norm(expected, axis=1), rtol=1e-2)
    bad = np.flatnonzero((cosine < SAME_VECTOR_COSINE) | ~norms_agree)
    if bad.size:
        d, i = sample[int(bad[0])]
        return False, f"that differ from the text encoder's vector for the same text (dialogue {d.id!r}, utterance {d.positions()[i]})"
    return True, ""


def text_feature_origin(data: DialogueSet, encoder: Encoder, context: int) -> str:
    """``"encoder"`` if every text vector in ``data`` is (or will be) the encoder's, else ``"supplied"``.

    Recorded with a trained model. Data that brings vectors without texts to check them,
    or vectors of another model, is ``"supplied"``; an encoder that cannot be loaded
    leaves the vectors unchecked, hence ``"supplied"`` too (training on them needs no encoder).
    """
    if not has_supplied_vectors(data):
        return ENCODER
    try:
        same, _ = vectors_are_the_encoders(data, encoder, context)
    except JoyfulError:
        return SUPPLIED
    return ENCODER if same else SUPPLIED


def ensure_text_features(
    data: DialogueSet, encoder: Encoder, context: int = 0, *, origin: str = ENCODER
) -> DialogueSet:
    """Encode the text of every utterance that has text but no vector, following the rule above.

    All those texts go to the encoder in one call, so deduplication, the cache lookup and the
    progress bar span the whole set. With ``context`` > 0 each text is encoded together
    with that many preceding turns (see :mod:`joyful.data.context_text`). An empty text is
    a missing text (a NaN row). ``origin`` is what the model was trained on
    (:func:`text_feature_origin`). ``data`` is modified in place and returned.
    """
    todo = [(d, rows) for d in data if (rows := to_encode(d)).any()]
    if not todo:
        return data
    first, rows = todo[0]
    i = int(np.flatnonzero(rows)[0])

    def refuse(why: str) -> DataError:
        return DataError(
            data.source, f"has text but no text_features, {why}; give text_features on every utterance that has "
            f"text, or on none (then the text encoder {encoder.name!r} computes them all)",
            dialogue=first.id, field="text_features", index=first.positions()[i],
        )

    if origin != ENCODER:
        raise refuse("and this model was trained on text_features that are not its text encoder's, so it cannot encode texts")
    if has_supplied_vectors(data):
        same, why = vectors_are_the_encoders(data, encoder, context)
        if not same:
            raise refuse(f"while other utterances bring text_features {why}")
    strings = [contextual_texts(d, context) for d, _ in todo]
    vectors = encoder.encode([s[j] for (_, r), s in zip(todo, strings) for j in np.flatnonzero(r)])
    start = 0
    for d, r in todo:
        n = int(r.sum())
        if "t" not in d.features or missing_rows(d.features["t"]).all():
            d.features["t"] = missing_matrix(len(d), vectors.shape[1])
        else:  # the caller's array stays as it was given
            d.features["t"] = d.features["t"].copy()
        d.features["t"][r] = vectors[start : start + n]
        start += n
    return data
