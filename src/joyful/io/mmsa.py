"""MMSA feature pickles (``aligned_50.pkl`` / ``unaligned_50.pkl``) of CMU-MOSI and CMU-MOSEI.

Layout (thuiar/MMSA's README and ``data_loader.py``): ``{"train", "valid", "test"}``, each a
dict of parallel per-clip arrays: ``id`` (``video$_$clip``), ``raw_text``, ``text``
(``(n, T, d)`` text features), ``text_bert`` (``(n, 3, T)`` BERT token ids, attention mask
and segment ids), ``audio`` and ``vision`` (``(n, T, d)``), ``audio_lengths`` and
``vision_lengths`` (valid time steps), ``regression_labels`` (sentiment in [-3, 3]) and
sometimes ``annotations`` / ``classification_labels`` (MMSA's own sentiment classes, unused).

Joyful labels utterances, not frames, so each clip's sequence is averaged over its valid
steps, as MMSA pads them: the first ``audio_lengths[i]`` / ``vision_lengths[i]`` steps.
MMSA stores no text length, but its models take it from ``text_bert``'s attention mask, so
that mask chooses the text steps when ``text_bert`` is there (shape ``(n, 3, T)``); without
it, the steps that are not all zero (the padding) do. A sequence without a lengths array
also falls back to the non-zero rule. A clip with no valid step has the modality missing
(a NaN row). ``-inf`` in audio (COVAREP's log of silence) counts as 0, exactly as MMSA's
loader does; any other NaN or infinity in a valid step is refused.

Clips are grouped into one dialogue per video, in clip order (numeric when the clip ids are
numbers), with the video as the only speaker: a monologue, which is what MOSI/MOSEI are.
``raw_text`` becomes the texts; :func:`joyful.io.readers.read_dialogues` drops them when
some utterance would have text without a text vector (see there).

Labels: a 1-D ``regression_labels`` is sentiment (regression); a ``(n, 7)`` one is
CMU-MOSEI's "All Labels" ``[sentiment, happy, sad, anger, surprise, disgust, fear]``; a
``(n, 6)`` numeric array of emotion scores under ``emotion_labels``, ``annotations`` or
``classification_labels`` gives the emotions too. A file holding both asks for the task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from joyful.data.label_forms import EMOTION_PRESENT_ABOVE, MOSEI_EMOTIONS, Label
from joyful.data.schema import Dialogue, DialogueSet
from joyful.errors import DataError
from joyful.io.pickled_values import describe

#: Keys an MMSA pickle may use for each canonical split.
SPLIT_KEYS: dict[str, tuple[str, ...]] = {"train": ("train",), "dev": ("valid", "dev"), "test": ("test",)}
SEPARATOR = "$_$"
#: Modality, the array holding its sequences, and the array of their valid lengths.
SEQUENCES: tuple[tuple[str, str, str | None], ...] = (
    ("t", "text", None), ("a", "audio", "audio_lengths"), ("v", "vision", "vision_lengths"),
)
#: Where a ``(n, 6)`` array of MOSEI emotion scores may be kept.
EMOTION_KEYS = ("emotion_labels", "annotations", "classification_labels")
#: Clips averaged at once: bounds the float64 copy of a chunk (MOSEI audio is ~500 steps × 74).
CHUNK = 128


def is_mmsa(obj: Any) -> bool:
    """Whether an unpickled object has MMSA's layout: split dicts with ``id`` and ``regression_labels``."""
    if not isinstance(obj, Mapping):
        return False
    parts = [obj.get(k) for keys in SPLIT_KEYS.values() for k in keys]
    return any(isinstance(p, Mapping) and "regression_labels" in p and "id" in p for p in parts)


def dialogues_from_mmsa(data: Mapping, split: str, source: str, task: str | None = None) -> DialogueSet:
    """The dialogues of one split (``train``, ``dev`` or ``test``), not yet validated."""
    key = next((k for k in SPLIT_KEYS[split] if k in data), None)
    if key is None:
        raise DataError(source, f"pickle has no {SPLIT_KEYS[split][0]!r} split; it holds {', '.join(map(repr, data))}")
    part = data[key]
    if not isinstance(part, Mapping):
        raise DataError(source, f"split {key!r} holds {describe(part)}, not a dict of arrays")
    clips = _Clips(part.get("id"), source)
    labels = _labels(part, clips, task)
    texts = _texts(part["raw_text"], clips) if "raw_text" in part else None
    features = {}
    for m, name, lengths in SEQUENCES:
        if name in part:
            features[m] = _averaged(part, name, lengths, clips)
    dialogues = [
        Dialogue(
            id=video,
            speakers=[video] * len(rows),
            features={m: x[rows] for m, x in features.items()},
            texts=None if texts is None else [texts[i] for i in rows],
            labels=[labels[i] for i in rows],
        )
        for video, rows in clips.videos
    ]
    return DialogueSet(dialogues, source)


class _Clips:
    """The ``id`` array parsed: each video's rows in clip order, and where each row sits (for errors)."""

    def __init__(self, ids: Any, source: str) -> None:
        self.source = source
        if not isinstance(ids, (list, tuple, np.ndarray)) or np.ndim(ids) != 1:
            raise DataError(source, f"expected one id per clip, got {describe(ids)}", field="id")
        groups: dict[str, list[tuple[str, int]]] = {}
        for row, raw in enumerate(ids):
            text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
            if not isinstance(text, str) or SEPARATOR not in text:
                raise DataError(source, f"id {row} is {describe(raw)}, not 'video{SEPARATOR}clip'", field="id")
            video, _, clip = text.rpartition(SEPARATOR)
            groups.setdefault(video, []).append((clip, row))
        self.n = len(ids)
        self.videos: list[tuple[str, np.ndarray]] = []
        self.video_of = np.empty(self.n, dtype=object)
        self.position_of = np.empty(self.n, dtype=np.int64)
        for video, members in groups.items():
            numeric = all(clip.isdigit() for clip, _ in members)
            members.sort(key=lambda m: (int(m[0]), m[0]) if numeric else m[0])
            for (clip, _), (again, _) in zip(members, members[1:]):
                if clip == again:
                    raise DataError(source, f"clip {clip!r} appears twice", dialogue=video, field="id")
            rows = np.array([row for _, row in members], dtype=np.int64)
            self.videos.append((video, rows))
            self.video_of[rows] = video
            self.position_of[rows] = np.arange(len(rows))

    def error(self, problem: str, field: str, row: int | None = None) -> DataError:
        """An error at one clip (its video and position), or at the first video when ``row`` is None."""
        if row is None:
            return DataError(self.source, problem, dialogue=self.videos[0][0] if self.videos else None, field=field)
        return DataError(self.source, problem, dialogue=self.video_of[row], index=int(self.position_of[row]), field=field)


def _array(part: Mapping, name: str, clips: _Clips, ndims: tuple[int, ...], shape: str) -> np.ndarray:
    """``part[name]`` as a numeric array with one row per clip and one of ``ndims`` dimensions.

    Too few rows is blamed on the first clip without one; too many, or the wrong number of
    dimensions, on the first video (no clip is at fault then).
    """
    value = part[name]
    arr = np.asarray(value) if isinstance(value, (list, tuple)) else value
    if not isinstance(arr, np.ndarray) or arr.ndim not in ndims or arr.shape[0] != clips.n:
        short = isinstance(arr, np.ndarray) and arr.ndim in ndims and arr.shape[0] < clips.n
        raise clips.error(f"expected {shape} for the {clips.n} clips, got {describe(arr)}", name,
                          arr.shape[0] if short else None)
    if arr.dtype.kind not in "iuf":
        raise clips.error(f"expected numbers, got {describe(arr)}", name)
    return arr


def _averaged(part: Mapping, name: str, lengths_name: str | None, clips: _Clips) -> np.ndarray:
    """One float32 vector per clip: the mean of its valid steps, NaN where it has none."""
    x = _array(part, name, clips, (3,), "an array of shape (clips, time steps, width)")
    steps = x.shape[1]
    valid = _valid_steps(part, name, lengths_name, clips, steps)
    out = np.empty((clips.n, x.shape[2]), dtype=np.float32)
    for start in range(0, clips.n, CHUNK):
        chunk = x[start : start + CHUNK].astype(np.float64)
        keep = valid(start, chunk)
        if name == "audio":
            chunk[np.isneginf(chunk)] = 0.0  # COVAREP's log of silence; MMSA's loader does the same
        bad = ~np.isfinite(chunk) & keep[..., None]
        if bad.any():
            row = start + int(np.flatnonzero(bad.any(axis=(1, 2)))[0])
            raise clips.error("sequence holds NaN or infinite values in its valid time steps", name, row)
        counts = keep.sum(axis=1)
        sums = np.where(keep[..., None], chunk, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + len(chunk)] = sums / counts[:, None]  # 0/0: no valid step, a NaN row
    return out


def _valid_steps(
    part: Mapping, name: str, lengths_name: str | None, clips: _Clips, steps: int
) -> Callable[[int, np.ndarray], np.ndarray]:
    """A function giving, for a chunk of clips starting at a row, which of their time steps count."""
    if lengths_name is not None and lengths_name in part:
        lengths = _lengths(part, lengths_name, clips, steps)
        return lambda start, chunk: np.arange(steps) < lengths[start : start + len(chunk), None]
    bert = part.get("text_bert") if name == "text" else None
    if isinstance(bert, np.ndarray) and bert.shape == (clips.n, 3, steps):
        mask = bert[:, 1, :] != 0  # the attention mask MMSA's models take the text length from
        return lambda start, chunk: mask[start : start + len(chunk)]
    return lambda start, chunk: (chunk != 0).any(axis=2)


def _lengths(part: Mapping, name: str, clips: _Clips, steps: int) -> np.ndarray:
    lengths = _array(part, name, clips, (1,), "one length per clip")
    whole = np.isfinite(lengths) & (lengths == np.round(lengths)) if lengths.dtype.kind == "f" else np.ones(clips.n, bool)
    bad = ~whole | (lengths < 0) | (lengths > steps)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise clips.error(
            f"length {lengths[row]!r} is not a whole number of the {steps} time steps the sequences have", name, row
        )
    return lengths.astype(np.int64)


def _texts(value: Any, clips: _Clips) -> list[str]:
    if not isinstance(value, (list, tuple, np.ndarray)) or np.ndim(value) != 1 or len(value) != clips.n:
        raise clips.error(f"expected one text per clip for the {clips.n} clips, got {describe(value)}", "raw_text")
    out = []
    for row, text in enumerate(value):
        text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
        if not isinstance(text, str):
            raise clips.error(f"text must be a string, not {describe(text)}", "raw_text", row)
        out.append(text)
    return out


def _labels(part: Mapping, clips: _Clips, task: str | None) -> list[Label]:
    """Per clip: the sentiment (regression) or the emotions present (multilabel), as ``task`` asks."""
    scores = _array(part, "regression_labels", clips, (1, 2), "sentiment scores (clips,) or All Labels (clips, 7)")
    k = len(MOSEI_EMOTIONS)
    if scores.ndim == 2 and scores.shape[1] != 1 + k:
        raise clips.error(f"expected sentiment scores (clips,) or All Labels (clips, 7), got {describe(scores)}",
                          "regression_labels")
    sentiment = scores if scores.ndim == 1 else scores[:, 0]
    emotions, emotion_field = (scores[:, 1:], "regression_labels") if scores.ndim == 2 else (None, None)
    for key in EMOTION_KEYS:
        if emotions is None and key in part:
            value = part[key]
            # annotations / classification_labels usually hold MMSA's own sentiment classes: only
            # a (clips, 6) array of numbers there is emotions; emotion_labels must be one
            if key == "emotion_labels" or getattr(value, "shape", None) == (clips.n, k) and value.dtype.kind in "iuf":
                emotions, emotion_field = _array(part, key, clips, (2,), f"(clips, {k}) emotion scores"), key
                if emotions.shape[1] != k:
                    raise clips.error(f"expected (clips, {k}) emotion scores, got {describe(emotions)}", key)
    chosen = _task(task, emotions is not None, clips.source)
    values, field = (sentiment, "regression_labels") if chosen == "regression" else (emotions, emotion_field)
    finite = np.isfinite(values).reshape(clips.n, -1).all(axis=1)
    if not finite.all():
        raise clips.error("label is NaN or infinite", field, int(np.flatnonzero(~finite)[0]))
    if chosen == "regression":
        return [float(s) for s in values]
    present = (values > EMOTION_PRESENT_ABOVE).tolist()
    return [tuple(e for e, on in zip(MOSEI_EMOTIONS, row, strict=True) if on) for row in present]


def _task(task: str | None, has_emotions: bool, source: str) -> str:
    """The task the labels are read for: every MMSA file has sentiment, some have emotions too."""
    if task in (None, "auto"):
        if has_emotions:
            raise DataError(
                source, "holds both sentiment scores and emotion labels: choose --task multilabel or --task "
                "regression (or the preset mosei-emotion or mosei-sentiment)", field="label",
            )
        return "regression"
    if task == "regression" or (task == "multilabel" and has_emotions):
        return task
    supports = "regression (sentiment) and multilabel (emotions)" if has_emotions else "regression (sentiment) only"
    raise DataError(source, f"cannot be read for the {task} task: its labels serve {supports}", field="label")
