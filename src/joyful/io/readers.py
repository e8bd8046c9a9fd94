"""One entry point for every input format, chosen by the file's content.

Users hand over files named ``features.pkl``, ``data.txt`` or ``train.json``
interchangeably, so the extension is not trusted: the first bytes decide. Every
reader's result is validated here, so the rest of joyful can assume clean data and
every problem is reported against the file (and split) the user named.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence

from joyful.data.schema import DialogueSet, missing_matrix
from joyful.data.text_features import has_supplied_vectors, to_encode
from joyful.errors import DataError
from joyful.io.cogmen import dialogues_from_cogmen, is_cogmen
from joyful.io.csd import HDF5_MAGIC, is_csd_dir, read_csd_dir, read_csd_labels
from joyful.io.dialoguegcn import dialogues_from_dialoguegcn
from joyful.io.jsonl import read_jsonl
from joyful.io.meld_csv import read_meld_csv
from joyful.io.mmsa import dialogues_from_mmsa, is_mmsa
from joyful.io.safe_pickle import safe_load

#: Split names accepted after ``#``, mapped to the canonical ``train``/``dev``/``test``.
SPLIT_NAMES: dict[str, str] = {
    "train": "train",
    "dev": "dev",
    "valid": "dev",
    "validation": "dev",
    "val": "dev",
    "test": "test",
}

#: The split a multi-split file contributes for each role when no ``#split`` is given.
ROLE_SPLITS: dict[str, str] = {"train": "train", "valid": "dev", "test": "test"}

#: A protocol 0/1 pickle: MARK, EMPTY_DICT/LIST/TUPLE, or a GLOBAL ``c<module>\n<name>\n``.
_OLD_PICKLE = re.compile(rb"[(}\])]|c[\w.]+\n\w+\n")


def read_dialogues(
    spec: str | os.PathLike,
    *,
    role: str = "train",
    int_label_names: Sequence[str] | None = None,
    task: str | None = None,
) -> DialogueSet:
    """Read and validate the dialogues ``spec`` names: ``path`` or ``path#split``.

    Without ``#split``, a file holding several splits (a pickle, a CMU-SDK directory)
    contributes the split matching ``role`` (``train``, ``valid`` or ``test``).
    ``int_label_names`` maps the integer labels of pickles to names (``None`` keeps them
    as ``"0"``, ``"1"``, ...). ``task`` (``None``/``"auto"``, ``classification``,
    ``multilabel``, ``regression``) settles only labels that could serve several tasks:
    CMU-MOSEI's sentiment-and-emotions files, and integer labels in JSONL.
    """
    if role not in ROLE_SPLITS:
        raise ValueError(f"role must be one of {', '.join(ROLE_SPLITS)}, not {role!r}")
    path, split = parse_spec(spec)
    kind = detect_format(path)
    if split is not None and kind not in ("pickle", "csd-dir"):
        raise DataError(path, f"a {kind} file holds one split; name the file without '#{split}'")
    canonical = ROLE_SPLITS[role] if split is None else _canonical_split(split, path)
    source = f"{path}#{split or canonical}"
    research_features = kind == "csd-dir"  # text vectors of their own (BERT, GloVe) beside the words
    if kind == "pickle":
        with open(path, "rb") as fh:
            obj = safe_load(fh, source)
        research_features = is_mmsa(obj)
        if research_features:
            data = dialogues_from_mmsa(obj, canonical, source, task)
        else:
            read = dialogues_from_cogmen if is_cogmen(obj) else dialogues_from_dialoguegcn
            data = read(obj, canonical, source, int_label_names)
    elif kind == "csd-dir":
        data = read_csd_dir(path, canonical, source, task, named=split is not None)
    elif kind == "jsonl":
        data = read_jsonl(path, task=task)
    elif kind == "csv":
        data = read_meld_csv(path)
    else:
        data = read_csd_labels(path, task)
    data.validate()
    if research_features:
        _keep_texts_only_with_vectors(data)
    _harmonise_inputs(data)
    return data


def parse_spec(spec: str | os.PathLike) -> tuple[str, str | None]:
    """Split ``path#split``; a path that exists as written keeps any ``#`` it contains."""
    spec = os.fspath(spec)
    if "#" not in spec or os.path.exists(spec):
        return spec, None
    path, _, split = spec.rpartition("#")
    return path, split


def detect_format(path: str) -> str:
    """``"pickle"``, ``"jsonl"``, ``"csv"`` or ``"csd"`` (one CMU-SDK computational sequence, HDF5)
    from the first bytes of the file; ``"csd-dir"`` for a directory of them (a CMU-SDK dataset)."""
    if os.path.isdir(path):
        if is_csd_dir(path):
            return "csd-dir"
        raise DataError(path, "is a directory, not a data file (a CMU-SDK dataset directory holds .csd files)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, not a data file") from None
    except OSError as e:
        raise DataError(path, f"cannot read the file ({e.strerror})") from None
    if not head.strip():
        raise DataError(path, "file is empty")
    if head[0] == 0x80:  # PROTO opcode, protocol 2 and later
        return "pickle"
    if head.startswith(HDF5_MAGIC):
        return "csd"
    text = head.removeprefix(b"\xef\xbb\xbf")
    if text.lstrip().startswith(b"{"):
        return "jsonl"
    if text.lstrip().startswith(b"["):
        raise DataError(path, "file looks like one JSON array; joyful reads JSON Lines, one dialogue object per line")
    header = text.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    if "Dialogue_ID" in header and "Utterance" in header:
        return "csv"
    if _OLD_PICKLE.match(head):
        return "pickle"
    raise DataError(
        path,
        "content not recognised: expected a pickle (COGMEN/Joyful, DialogueGCN/MMGCN or MMSA), "
        'JSON Lines dialogues ({"dialogue": ..., "utterances": [...]}), a MELD CSV or a CMU-SDK .csd file',
    )


def _canonical_split(split: str, path: str) -> str:
    try:
        return SPLIT_NAMES[split.strip().lower()]
    except KeyError:
        raise DataError(path, f"unknown split {split!r} after '#'; use train, dev (or valid) or test") from None


def _keep_texts_only_with_vectors(data: DialogueSet) -> None:
    """Drop the texts of MMSA / CMU-SDK data when an utterance has text but no text vector.

    These files bring their own text vectors (BERT, GloVe) beside the words. Joyful's rule
    for mixed input (:mod:`joyful.data.text_features`) would encode such an utterance's text
    with its own encoder only if the file's vectors were that encoder's, which they never
    are, and so would refuse the whole file. Training on the file's vectors, with that
    utterance's text modality missing, is what users of these files expect; so the texts
    are kept only when no utterance needs encoding.
    """
    if not has_supplied_vectors(data):
        return
    first = next((d for d in data if to_encode(d).any()), None)
    if first is None:
        return
    warnings.warn(
        f"{data.source}: dialogue {first.id!r}: utterance {int(to_encode(first).argmax())} has text but no text "
        "features, and the data's text features are its own: the texts are left out, the text features kept",
        stacklevel=3,
    )
    for d in data:
        d.texts = None


def _harmonise_inputs(data: DialogueSet) -> None:
    """Give every dialogue the same modalities, and require text in every dialogue or none.

    A dialogue without a modality that others carry (a call with no video) gets it as
    missing on every utterance, which the model handles, rather than being refused.
    """
    widths = data.widths()
    for d in data.dialogues:
        for m in widths.keys() - d.features.keys():
            if m != "t" or d.texts is None:  # texts without vectors are encoded later
                d.features[m] = missing_matrix(len(d), widths[m])
    first = data.dialogues[0]
    for d in data.dialogues[1:]:
        if (first.texts is None) != (d.texts is None):
            has, lacks = (first, d) if first.texts is not None else (d, first)
            raise DataError(
                data.source,
                f"has no text, but dialogue {has.id!r} has; give text in every dialogue or none",
                dialogue=lacks.id,
                field="text",
            )
