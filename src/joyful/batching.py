"""Turning dialogues into tensors once, and mini-batches into packed node tensors.

Everything per utterance (speaker ids, label ids, feature arrays) is converted a single
time by :func:`encode_dialogues`; a mini-batch is then a handful of ``torch.cat`` calls.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from joyful.data.labels import LabelSet
from joyful.data.schema import DialogueSet, feature_field, missing_matrix, missing_rows
from joyful.data.tasks import IGNORE_INDEX, Task, get_task
from joyful.errors import DataError


@dataclass
class EncodedDialogue:
    """One dialogue as tensors: features per modality, speaker ids, targets (see :mod:`joyful.data.tasks`)."""

    id: str
    features: dict[str, Tensor]
    speaker: Tensor
    label: Tensor
    n_speakers: int
    teacher_probs: Tensor | None = None
    """``(n, classes)``: a teacher's probabilities for each utterance, when training distils one."""

    def __len__(self) -> int:
        return int(self.speaker.numel())


@dataclass
class Batch:
    """A mini-batch of dialogues with nodes numbered dialogue after dialogue (PyG convention)."""

    ids: list[str]
    x: dict[str, Tensor]
    speaker: Tensor
    y: Tensor
    lengths: Tensor
    batch: Tensor
    position: Tensor
    loss_scale: float = 1.0
    """0 for a stand-in batch: a process of a distributed run whose share of a batch is empty."""
    teacher_probs: Tensor | None = None
    """``(N, classes)``, when every dialogue of the batch has a teacher's probabilities."""

    @property
    def n_nodes(self) -> int:
        return int(self.speaker.numel())

    def _map(self, fn) -> Batch:
        return Batch(
            ids=self.ids, x={m: fn(v) for m, v in self.x.items()}, speaker=fn(self.speaker), y=fn(self.y),
            lengths=fn(self.lengths), batch=fn(self.batch), position=fn(self.position), loss_scale=self.loss_scale,
            teacher_probs=fn(self.teacher_probs) if self.teacher_probs is not None else None,
        )

    def pin_memory(self) -> Batch:
        """Page-locked copies, so that ``to(cuda, non_blocking=True)`` overlaps the copy with compute."""
        return self._map(Tensor.pin_memory)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))


def speaker_ids(speakers: Sequence[str]) -> np.ndarray:
    """Speakers numbered by first appearance in the dialogue (0, 1, ...)."""
    order: dict[str, int] = {}
    return np.array([order.setdefault(s, len(order)) for s in speakers], dtype=np.int64)


def encode_dialogues(
    data: DialogueSet, modalities: Sequence[str], labels: LabelSet, widths: dict[str, int] | None = None,
    task: Task | str = "classification",
) -> list[EncodedDialogue]:
    """Check the dialogues' features against the model's modalities and widths, and encode them.

    With ``widths`` (a trained model), a dialogue without a modality gets it as missing on
    every utterance. Without (training), every modality must be seen on some utterance, or
    the model could not learn anything from it.
    """
    task = get_task(task) if isinstance(task, str) else task
    if widths is None:
        found = data.widths()
        for m in modalities:
            if m not in found or all(missing_rows(d.features[m]).all() for d in data if m in d.features):
                why = "no utterance has text or text features" if m == "t" else f"no utterance has {feature_field(m)} vectors"
                raise DataError(
                    data.source, f"{why}; train without this modality (--modalities)", field=feature_field(m)
                )
        widths = {m: found[m] for m in modalities}
    else:
        for m in modalities:
            if all(m not in d.features or missing_rows(d.features[m]).all() for d in data):
                warnings.warn(
                    f"{data.source}: no utterance has {feature_field(m)} vectors; "
                    "predicting with that modality missing everywhere",
                    stacklevel=2,
                )
    out = []
    for d in data.dialogues:
        feats = {}
        for m in modalities:
            x = d.features.get(m)
            if x is None:
                x = missing_matrix(len(d), widths[m])
            elif x.shape[1] != widths[m]:
                raise DataError(
                    data.source,
                    f"vectors have width {x.shape[1]}, the model expects {widths[m]}",
                    dialogue=d.id,
                    field=feature_field(m),
                )
            feats[m] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        y = task.encode(d.labels, len(d), labels.labels, (data.source, d.id))
        spk = speaker_ids(d.speakers)
        out.append(EncodedDialogue(d.id, feats, torch.from_numpy(spk), y, int(spk.max()) + 1))
    return out


def collate(dialogues: Sequence[EncodedDialogue], max_speakers: int) -> Batch:
    """Pack dialogues into one batch; speakers beyond ``max_speakers`` share the last speaker slot."""
    lengths = torch.tensor([len(d) for d in dialogues], dtype=torch.long)
    batch = torch.repeat_interleave(torch.arange(len(dialogues)), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    taught = all(d.teacher_probs is not None for d in dialogues)
    return Batch(
        ids=[d.id for d in dialogues],
        x={m: torch.cat([d.features[m] for d in dialogues]) for m in dialogues[0].features},
        speaker=torch.cat([d.speaker for d in dialogues]).clamp(max=max_speakers - 1),
        y=torch.cat([d.label for d in dialogues]),
        lengths=lengths,
        batch=batch,
        position=torch.arange(batch.numel()) - starts[batch],
        teacher_probs=torch.cat([d.teacher_probs for d in dialogues]) if taught else None,
    )


def iterate_batches(
    dialogues: Sequence[EncodedDialogue], batch_size: int, max_speakers: int, *, shuffle: bool,
    generator: torch.Generator | None = None, device: torch.device | None = None, shard: tuple[int, int] | None = None,
):
    """Mini-batches of whole dialogues, shuffled with ``generator`` (a CPU one) when training.

    Batches are packed on the CPU and moved to ``device``; for CUDA through pinned memory
    without blocking, so the copy of the next batch overlaps the current one's compute.
    ``shard = (rank, world_size)``: every process of a distributed run draws the same
    order (same seed) and takes every ``world_size``-th dialogue of each batch from its
    ``rank``-th on, so the processes together see each batch once and take as many
    optimiser steps as one process would. A process left without a dialogue (the last
    batch can be smaller than the world) gets the batch's first one with ``loss_scale`` 0,
    since every process must take part in every gradient all-reduce.
    """
    order = torch.randperm(len(dialogues), generator=generator).tolist() if shuffle else range(len(dialogues))
    order = list(order)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        scale = 1.0
        if shard is not None:
            rank, world = shard
            mine = chunk[rank::world]
            chunk, scale = (mine, 1.0) if mine else (chunk[:1], 0.0)
        batch = collate([dialogues[i] for i in chunk], max_speakers)
        batch.loss_scale = scale
        if device is not None and device.type == "cuda":
            batch = batch.pin_memory().to(device, non_blocking=True)
        elif device is not None and device.type != "cpu":
            batch = batch.to(device)
        yield batch


__all__ = ["Batch", "EncodedDialogue", "IGNORE_INDEX", "collate", "encode_dialogues", "iterate_batches", "speaker_ids"]
