"""Learned stand-ins for missing modalities (no face in view, no audio track, nothing said)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MissingModality(nn.Module):
    """Replaces each missing utterance-modality (a NaN row) with a learned vector per modality.

    Zero-filling would tell the model "a face with all-zero features"; a learned vector lets
    it learn what "no face" means, and the fusion and graph then lean on the modalities that
    are there. ``dropout`` hides present rows at random while training so the stand-in is
    learned even when the training data is complete.

    Shapes: ``x[m] (N, d_m)`` with NaN rows where missing → same shapes, no NaN.
    """

    def __init__(self, widths: dict[str, int], modalities: tuple[str, ...], dropout: float = 0.0) -> None:
        super().__init__()
        self.modalities = modalities
        self.dropout = dropout
        self.embedding = nn.ParameterDict({m: nn.Parameter(torch.zeros(widths[m])) for m in modalities})

    def forward(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for m in self.modalities:
            missing = torch.isnan(x[m]).all(dim=-1, keepdim=True)
            if self.training and self.dropout > 0:
                missing = missing | (torch.rand_like(missing, dtype=x[m].dtype) < self.dropout)
            out[m] = torch.where(missing, self.embedding[m].expand_as(x[m]), x[m])
        return out


__all__ = ["MissingModality"]
