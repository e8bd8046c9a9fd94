"""A teacher's class probabilities on the training dialogues, the targets of distillation.

The teacher is one or several trained models (typically a seed ensemble, or its members
saved apart); each reads the raw training dialogues with its own text encoder and
modalities, so a teacher need not share the student's features. Their probabilities at
the distillation temperature are averaged: at T = 1 that is exactly what the ensemble
serves. Only the training dialogues get targets: early stopping and calibration still
read the validation labels alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from joyful.batching import EncodedDialogue
from joyful.data.schema import DialogueSet
from joyful.errors import JoyfulError
from joyful.training.inference import predict_logits

if TYPE_CHECKING:
    from joyful.api import Joyful


def check_teachers(teachers: Sequence[Joyful], labels: Sequence[str], task: str) -> None:
    """Refuse a teacher that cannot give this student's targets: another task or another label set."""
    if not teachers:
        raise JoyfulError("distillation needs at least one teacher model")
    if task != "classification":
        raise JoyfulError(f"distillation fits class probabilities; a {task} model trains without a teacher")
    for k, teacher in enumerate(teachers, 1):
        if teacher.info is None or teacher.model is None:
            raise JoyfulError(f"teacher {k} is not trained: give a model directory or a fitted Joyful")
        if teacher.info.task != "classification" or list(teacher.info.label_set.labels) != list(labels):
            raise JoyfulError(
                f"teacher {k} predicts {teacher.info.task} over {list(teacher.info.label_set.labels)}, the student "
                f"classifies into {list(labels)}: a teacher must have the student's labels, in the same order"
            )


def with_teacher_probabilities(
    encoded: Sequence[EncodedDialogue], data: DialogueSet, teachers: Sequence[Joyful], temperature: float,
    progress: bool = False,
) -> list[EncodedDialogue]:
    """``encoded`` (the student's view of ``data``) with each dialogue's ``teacher_probs`` set.

    ``teacher_probs`` is the mean over teachers of ``softmax(logits / temperature)``, where an
    ensemble teacher's logits are those of its mean probability.
    """
    per_teacher = []
    for teacher in teachers:
        ds = teacher.prepare(data, role="train", label_set=teacher.info.label_set, progress=progress)
        mine = teacher._encode(ds)
        if [(d.id, len(d)) for d in mine] != [(d.id, len(d)) for d in encoded]:
            raise JoyfulError(f"{data.source}: the teacher read other dialogues or utterances than the student")
        logits = predict_logits(teacher.model, mine, teacher.config.batch_size)
        per_teacher.append([torch.softmax(torch.from_numpy(z).double() / temperature, -1).numpy() for z in logits])
    return [
        dataclasses.replace(d, teacher_probs=torch.from_numpy(np.mean(probs, axis=0).astype(np.float32)))
        for d, *probs in zip(encoded, *per_teacher, strict=True)
    ]


__all__ = ["check_teachers", "with_teacher_probabilities"]
