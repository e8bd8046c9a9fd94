"""CMU-MultimodalSDK computational sequences (``.csd``): timed features in HDF5.

A sequence is ``<root>/data/<video>/{features, intervals}`` and ``<root>/metadata`` (one
JSON string per key, "root name" among them): ``features[i]`` holds over
``intervals[i] = [start, end]`` seconds of the video. A dataset is a directory of them: a
labels sequence (opinion segments and their scores), one feature sequence per modality
(COVAREP audio, FACET visual, GloVe text, ... at their own frame rates) and optionally the
words (byte strings), which become the utterance texts.

Each labelled segment is one utterance; the segments of a video, in time order, are one
dialogue with the video as its only speaker (MOSI/MOSEI are monologues).

**Frames to segments.** A segment gets the unweighted mean of every frame that overlaps
it by more than :data:`EPSILON` seconds. That is the SDK's own ``align`` with the
averaging collapse its examples use (it keeps the intersections longer than its epsilon,
1e-5 s), so features match what CMU-SDK users train on. A frame straddling the boundary
of two segments therefore counts in both; an instantaneous frame (end = start, which the
SDK would drop) counts in the segment whose ``[start, end)`` holds it. A segment with no
frame, and every segment of a video the sequence lacks, has the modality missing (a NaN
row). Words are joined the same way, in time order, without the aligner's silence token
``sp``. NaN values are refused; ``-inf`` in audio is read as 0, COVAREP's log of silence,
as in :mod:`joyful.io.mmsa`.

**Labels.** One value per segment is sentiment (regression); seven are CMU-MOSEI's "All
Labels" ``[sentiment, happy, sad, anger, surprise, disgust, fear]``, read as the emotions
present (``multilabel``) or the sentiment (``regression``) as the task says.

**Roles and splits.** A ``joyful-csd.json`` in the directory names the files
(``{"labels": ..., "t": ..., "a": ..., "v": ..., "words": ...}``, relative to it) and may
list the videos of each split (``"splits": {"train": [...], "valid": [...], "test": [...]}``).
Without it, each ``.csd`` file's role is guessed from its root name and file name, and the
guess is said as a warning. Without split lists, CMU-MOSI and CMU-MOSEI videos are divided by
the SDK's standard folds (:mod:`joyful.io.csd_folds`); a video in no split is left out,
with a warning; a dataset of other videos is one split, like a JSONL file.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from joyful.data.label_forms import EMOTION_PRESENT_ABOVE, MOSEI_EMOTIONS, Label
from joyful.data.schema import Dialogue, DialogueSet, missing_matrix
from joyful.errors import DataError
from joyful.io.csd_folds import STANDARD_FOLDS

#: Overlap (seconds) a frame needs to count in a segment: the CMU-SDK's alignment epsilon.
EPSILON = 1e-5
CONFIG = "joyful-csd.json"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
SILENCE = "sp"
FEATURE_ROLES = ("t", "a", "v")
ROLES = ("labels", *FEATURE_ROLES, "words")
ROLE_WORDS = {"labels": "labels", "t": "text features", "a": "audio features", "v": "visual features",
              "words": "words (the utterance texts)"}
#: Fragments of a root or file name that give its role, tried in this order (so "WordVectors" is text features).
GUESSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("labels", ("label", "opinion")),
    ("a", ("covarep", "opensmile", "audio", "acoustic")),
    ("v", ("facet", "openface", "visual", "vision")),
    ("t", ("glove", "bert", "text", "embedding", "wordvector")),
    ("words", ("word",)),
)
#: Split names a joyful-csd.json may use, mapped to the canonical ones ``read_dialogues`` asks for.
CONFIG_SPLITS = {"train": "train", "valid": "dev", "dev": "dev", "test": "test"}


def read_csd_labels(path: str, task: str | None) -> DialogueSet:
    """A single labels sequence: its segments as dialogues with labels and no features."""
    with _Sequence(path) as labels:
        label = _labeller(labels, task)
        return DialogueSet([_dialogue(video, labels, label, {}) for video in labels.videos], path)


def read_csd_dir(path: str, split: str, source: str, task: str | None, *, named: bool) -> DialogueSet:
    """The dialogues of one split (canonical: ``train``, ``dev``, ``test``) of a CMU-SDK directory.

    ``named``: the user asked for ``split`` after ``#`` (else it is the role's), which a
    dataset of one split refuses; ``source`` names the result when the dataset has splits.
    """
    roles, splits = _layout(path)
    with ExitStack() as stack:
        seqs = {role: stack.enter_context(_Sequence(file, audio=role == "a")) for role, file in roles.items()}
        labels = seqs.pop("labels")
        label = _labeller(labels, task)
        videos = labels.videos
        if splits is None:
            splits = _standard_folds(labels)
        if splits is None:
            if named:
                raise DataError(path, "holds one split (its videos are not CMU-MOSI's or CMU-MOSEI's and "
                                f"{CONFIG} lists none); name the directory without '#'")
            source = path
        else:
            videos = _split_videos(labels, splits, split, path)
        return DialogueSet([_dialogue(video, labels, label, seqs) for video in videos], source)


# ---------------------------------------------------------------------------------- one file
class _Sequence:
    """One opened ``.csd`` file; each video's arrays are read and checked when asked for."""

    def __init__(self, path: str, *, audio: bool = False) -> None:
        self.path = path
        self.audio = audio
        """Read ``-inf`` as 0 (COVAREP's log of silence, as MMSA's loader does)."""
        try:
            self.file = h5py.File(path, "r")
        except FileNotFoundError:
            raise DataError(path, "file not found") from None
        except OSError:
            raise DataError(path, "not an HDF5 file, so not a computational sequence (.csd)") from None
        roots = [k for k in self.file if isinstance(self.file.get(k), h5py.Group)]
        data = self.file[roots[0]].get("data") if roots else None
        if not isinstance(data, h5py.Group):
            self.file.close()
            raise DataError(path, "has no 'data' group: a computational sequence holds <root>/data/<video>/"
                            "{features,intervals}")
        self.data = data
        self.name = _root_name(self.file[roots[0]]) or roots[0]
        self.videos = list(data)

    def __enter__(self) -> _Sequence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def read(self, video: str, *, words: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The video's intervals ``(k, 2)`` in float64 and its features: ``(k, d)`` float64, or ``(k,)`` words."""
        group = self.data.get(video)
        if not isinstance(group, h5py.Group) or not {"features", "intervals"} <= set(group):
            raise DataError(self.path, "expected a group holding 'features' and 'intervals'", dialogue=video)
        intervals = self._intervals(group["intervals"][()], video)
        raw = group["features"][()]
        if raw.ndim != 2 or raw.shape[0] != len(intervals):
            raise DataError(self.path, f"{_shape(raw)} for {len(intervals)} intervals: expected one row per interval",
                            dialogue=video, field="features")
        if words:
            if raw.dtype.kind not in "SOU" or raw.shape[1] != 1:
                raise DataError(self.path, f"words must be one string per interval, got {_shape(raw)}",
                                dialogue=video, field="features")
            return intervals, np.array([_text(w) for w in raw[:, 0]], dtype=object)
        if raw.dtype.kind not in "iuf":
            raise DataError(self.path, f"expected numbers, got {_shape(raw)}", dialogue=video, field="features")
        x = raw.astype(np.float64)
        if self.audio:
            x[np.isneginf(x)] = 0.0
        bad = ~np.isfinite(x)
        if bad.any():
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            raise DataError(self.path, f"frame {row} holds NaN or infinite values", dialogue=video, field="features")
        return intervals, x

    def _intervals(self, raw: np.ndarray, video: str) -> np.ndarray:
        if raw.ndim != 2 or raw.shape[1] != 2 or raw.dtype.kind not in "iuf":
            raise DataError(self.path, f"expected [start, end] rows of seconds, got {_shape(raw)}",
                            dialogue=video, field="intervals")
        iv = raw.astype(np.float64)
        bad = ~np.isfinite(iv).all(axis=1) | (iv[:, 1] < iv[:, 0])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            start, end = iv[row]
            why = "is NaN or infinite" if not np.isfinite(iv[row]).all() else f"ends ({end:g} s) before it starts ({start:g} s)"
            raise DataError(self.path, f"interval {row} {why}", dialogue=video, field="intervals")
        return iv

    @cached_property
    def width(self) -> int:
        """The feature width, from the first video (each video's own is checked against it)."""
        if not self.videos:
            raise DataError(self.path, "has no videos")
        return self.read(self.videos[0])[1].shape[1]


def _root_name(root: h5py.Group) -> str | None:
    """The metadata's "root name" (a JSON string, as the SDK writes it), if it is readable."""
    meta = root.get("metadata")
    if not isinstance(meta, h5py.Group) or not isinstance(meta.get("root name"), h5py.Dataset):
        return None
    values = np.asarray(meta["root name"][()]).ravel()
    if not values.size:
        return None
    text = _text(values[0])
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return value if isinstance(value, str) and value.strip() else None


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _shape(arr: np.ndarray) -> str:
    return f"an array of shape {arr.shape} ({arr.dtype})"


# ---------------------------------------------------------------------------------- segments
def _membership(segments: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """``(segments, frames)``: whether each frame counts in each segment (the rule in the docstring)."""
    s0, s1 = segments[:, :1], segments[:, 1:]
    f0, f1 = frames[None, :, 0], frames[None, :, 1]
    overlaps = np.minimum(s1, f1) - np.maximum(s0, f0) > EPSILON
    instant = (f1 - f0 <= EPSILON) & (s0 <= f0) & (f0 < s1)
    return overlaps | instant


def _dialogue(video: str, labels: _Sequence, label: Callable, seqs: dict[str, _Sequence]) -> Dialogue:
    intervals, values = labels.read(video)
    order = np.lexsort((intervals[:, 1], intervals[:, 0]))
    segments = intervals[order]
    features, texts = {}, None
    for role, seq in seqs.items():
        if role == "words":
            texts = _words(seq, video, segments)
        elif video in seq.data:
            frames, x = seq.read(video)
            if x.shape[1] != seq.width:
                raise DataError(seq.path, f"width {x.shape[1]} differs from width {seq.width} in video "
                                f"{seq.videos[0]!r}", dialogue=video, field="features")
            inside = _membership(segments, frames)
            counts = inside.sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                features[role] = ((inside @ x) / counts).astype(np.float32)  # 0/0: no frame, a NaN row
        else:
            features[role] = missing_matrix(len(segments), seq.width)
    return Dialogue(id=video, speakers=[video] * len(segments), features=features, texts=texts,
                    labels=label(values[order], video))


def _words(seq: _Sequence, video: str, segments: np.ndarray) -> list[str]:
    """Each segment's words in time order, silences left out; "" (a missing text) where it has none."""
    if video not in seq.data:
        return [""] * len(segments)
    frames, words = seq.read(video, words=True)
    order = np.argsort(frames[:, 0], kind="stable")
    inside = _membership(segments, frames[order])
    spoken = words[order]
    return [" ".join(w for w in spoken[row] if w.strip() and w != SILENCE) for row in inside]


def _labeller(labels: _Sequence, task: str | None) -> Callable[[np.ndarray, str], list[Label]]:
    """How a video's label rows become labels, decided once from the sequence's width and ``task``."""
    width = labels.width
    k = len(MOSEI_EMOTIONS)
    if width not in (1, 1 + k):
        raise DataError(labels.path, f"labels have {width} values per segment; expected 1 (sentiment) or "
                        f"{1 + k} (CMU-MOSEI's All Labels: sentiment, {', '.join(MOSEI_EMOTIONS)})", field="features")
    if width == 1 + k and task in (None, "auto"):
        raise DataError(labels.path, f"holds CMU-MOSEI's All Labels (sentiment and {k} emotions): choose --task "
                        "multilabel or --task regression (or the preset mosei-emotion or mosei-sentiment)")
    supports = "regression (sentiment) and multilabel (emotions)" if width > 1 else "regression (sentiment) only"
    if task not in (None, "auto", "regression") and not (task == "multilabel" and width > 1):
        raise DataError(labels.path, f"cannot be read for the {task} task: its labels serve {supports}")

    def label(rows: np.ndarray, video: str) -> list[Label]:
        if rows.shape[1] != width:
            raise DataError(labels.path, f"{rows.shape[1]} values per segment, while other videos have {width}",
                            dialogue=video, field="features")
        if task == "multilabel":
            return [tuple(e for e, s in zip(MOSEI_EMOTIONS, row[1:], strict=True) if s > EMOTION_PRESENT_ABOVE)
                    for row in rows.tolist()]
        return [float(s) for s in rows[:, 0]]

    return label


# ---------------------------------------------------------------------------------- the directory
def _layout(path: str) -> tuple[dict[str, str], dict[str, list[str]] | None]:
    """Which file plays which role, and the split lists if ``joyful-csd.json`` gives them."""
    config = Path(path) / CONFIG
    if config.is_file():
        return _read_config(config)
    files = sorted(p for p in Path(path).glob("*.csd") if p.is_file())
    roles: dict[str, str] = {}
    for file in files:
        with _Sequence(str(file)) as seq:
            name = seq.name
        role = _guess(f"{name} {file.stem}")
        if role is None:
            warnings.warn(f"{file}: left out: its name {name!r} says no role ({_guess_words()}); "
                          f"name it in {CONFIG} to use it", stacklevel=2)
            continue
        if role in roles:
            raise DataError(path, f"both {Path(roles[role]).name} and {file.name} look like the {ROLE_WORDS[role]}; "
                            f"say which to use in {CONFIG}, e.g. {{\"labels\": ..., \"{role}\": \"{file.name}\"}}")
        warnings.warn(f"{file}: read as the {ROLE_WORDS[role]} (guessed from its name {name!r}; "
                      f"{CONFIG} can say otherwise)", stacklevel=2)
        roles[role] = str(file)
    if "labels" not in roles:
        raise DataError(path, f"no labels sequence found among {len(files)} .csd files; name it in {CONFIG}")
    return roles, None


def _guess(name: str) -> str | None:
    low = name.lower().replace(" ", "").replace("_", "").replace("-", "")
    return next((role for role, parts in GUESSES if any(p in low for p in parts)), None)


def _guess_words() -> str:
    return "; ".join(f"{ROLE_WORDS[role]}: {', '.join(parts)}" for role, parts in GUESSES)


def _read_config(config: Path) -> tuple[dict[str, str], dict[str, list[str]] | None]:
    where = str(config)
    try:
        spec = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(where, f"cannot be read as JSON ({e})") from None
    if not isinstance(spec, dict):
        raise DataError(where, "expected a JSON object naming the files: {\"labels\": ..., \"t\": ..., \"a\": ..., \"v\": ...}")
    unknown = sorted(set(spec) - {*ROLES, "splits"})
    if unknown:
        raise DataError(where, f"unknown key {unknown[0]!r}; the keys are {', '.join(ROLES)} and splits", field=unknown[0])
    if "labels" not in spec:
        raise DataError(where, "names no labels sequence", field="labels")
    roles = {}
    for role in ROLES:
        if role in spec:
            name = spec[role]
            if not isinstance(name, str) or not (config.parent / name).is_file():
                raise DataError(where, f"{name!r} is not a file in {config.parent}", field=role)
            roles[role] = str(config.parent / name)
    splits = spec.get("splits")
    if splits is None:
        return roles, None
    if not isinstance(splits, dict) or not splits:
        raise DataError(where, "splits must be an object of video id lists: {\"train\": [...], \"valid\": [...], "
                        "\"test\": [...]}", field="splits")
    out: dict[str, list[str]] = {}
    for name, videos in splits.items():
        if name not in CONFIG_SPLITS:
            raise DataError(where, f"unknown split {name!r}; use {', '.join(CONFIG_SPLITS)}", field="splits")
        if not isinstance(videos, list) or not all(isinstance(v, str) for v in videos):
            raise DataError(where, f"split {name!r} must be a list of video ids", field="splits")
        out[CONFIG_SPLITS[name]] = out.get(CONFIG_SPLITS[name], []) + videos
    seen: dict[str, str] = {}
    for name, videos in out.items():
        for v in videos:
            if seen.setdefault(v, name) != name:
                raise DataError(where, f"video {v!r} is in two splits ({seen[v]} and {name})", field="splits")
    return roles, out


def _standard_folds(labels: _Sequence) -> dict[str, list[str]] | None:
    """The SDK's folds of the dataset (MOSI or MOSEI) holding most of the labelled videos; None if neither holds any."""
    videos = set(labels.videos)
    name, folds = max(STANDARD_FOLDS.items(), key=lambda item: len(videos & {v for f in item[1].values() for v in f}))
    if not videos & {v for f in folds.values() for v in f}:
        return None
    warnings.warn(f"{labels.path}: split by the CMU-SDK standard folds of {name} (list the splits in {CONFIG} "
                  "to choose others)", stacklevel=2)
    return {CONFIG_SPLITS[k]: list(v) for k, v in folds.items()}


def _split_videos(labels: _Sequence, splits: dict[str, list[str]], split: str, path: str) -> list[str]:
    """The labelled videos of ``split``, in the labels file's order; warns about videos in no split."""
    if split not in splits:
        said = {"train": "train", "dev": "valid", "test": "test"}
        raise DataError(path, f"has no {said[split]!r} split; its splits are {', '.join(said[k] for k in splits)}")
    placed = {v for videos in splits.values() for v in videos}
    stray = [v for v in labels.videos if v not in placed]
    if stray:
        more = f" and {len(stray) - 3} more" if len(stray) > 3 else ""
        warnings.warn(f"{labels.path}: {len(stray)} labelled videos are in no split and are left out: "
                      f"{', '.join(stray[:3])}{more}", stacklevel=2)
    wanted = set(splits[split])
    return [v for v in labels.videos if v in wanted]


def is_csd_dir(path: str) -> bool:
    """Whether a directory looks like a CMU-SDK dataset: a joyful-csd.json or any ``.csd`` file."""
    return os.path.isfile(os.path.join(path, CONFIG)) or any(Path(path).glob("*.csd"))
