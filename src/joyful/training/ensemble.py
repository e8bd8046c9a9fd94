"""Several Joyful models trained with consecutive seeds, predicting the mean of their outputs.

On IEMOCAP's small validation set one run's weighted F1 moves by about ±2 points with the
seed; averaging the members' class probabilities removes much of that variance (three
causal text-only models: 0.604, 0.602, 0.615 alone, 0.624 together). The ensemble keeps
the single model's interface (``forward`` returns logits and losses), so training,
evaluation, prediction, explanations and adaptation use it unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from joyful.batching import Batch
from joyful.model import JoyfulModel, JoyfulOutput


class EnsembleModel(nn.Module):
    """Members' outputs averaged (probabilities, or scores); logits are chosen so the task's output is that mean.

    Training (only ever done jointly when adapting a saved ensemble) sums the members'
    losses, so each member is fitted as it would be alone. ``fused``/``encoded``
    representations are the first member's.
    """

    def __init__(self, members: list[JoyfulModel]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.modalities = members[0].modalities
        self.n_speakers = members[0].n_speakers
        self.task = members[0].task
        self.temperature: float = 1.0
        """One calibration for the ensemble, fitted on its combined logits (the members' own stay 1)."""

    @property
    def config(self):
        return self.members[0].config

    @config.setter
    def config(self, value) -> None:
        for m in self.members:
            m.config = value

    @property
    def missing(self):
        return self.members[0].missing

    @property
    def inference_edge_noise(self) -> float:
        return self.members[0].inference_edge_noise

    @inference_edge_noise.setter
    def inference_edge_noise(self, value: float) -> None:
        for m in self.members:
            m.inference_edge_noise = value

    @property
    def inference_edge_generator(self) -> torch.Generator | None:
        return self.members[0].inference_edge_generator

    @inference_edge_generator.setter
    def inference_edge_generator(self, value: torch.Generator | None) -> None:
        for m in self.members:
            m.inference_edge_generator = value

    def forward(self, batch: Batch, class_weight: torch.Tensor | None = None) -> JoyfulOutput:
        outs = [m(batch, class_weight) for m in self.members]
        losses = {k: sum(o.losses[k] for o in outs) for k in outs[0].losses}
        logits = self.task.ensemble_logits([o.logits for o in outs])
        return JoyfulOutput(logits, losses, outs[0].fused, outs[0].encoded)


__all__ = ["EnsembleModel"]
