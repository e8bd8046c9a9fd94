"""Topic smoothing (paper B1): a dialogue-level topic vector with recent utterances weighing more."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import scatter


def topic_vectors(z: Tensor, batch: Tensor, position: Tensor, lengths: Tensor, eta: float) -> Tensor:
    """The topic vector z_con of each dialogue: Σ_i exp(η·i)·ẑ_i, normalised by Σ_i exp(η·i).

    The paper accumulates ``z_con ← z_con + exp(η·i)·ẑ_i``; unnormalised this grows like
    exp(0.2·110) ≈ 4·10⁹ on a long IEMOCAP dialogue, so we divide by the total weight (a
    weighted mean: same direction, bounded scale). Weights are computed relative to each
    dialogue's last utterance, exp(η·(i − (n−1))), which is the same ratio without overflow.

    Shapes: ``z (N, d)``, ``batch``/``position (N,)``, ``lengths (B,)`` → ``(B, d)``.
    """
    w = torch.exp(eta * (position - (lengths[batch] - 1)).to(z.dtype))
    num = scatter(w[:, None] * z, batch, dim=0, dim_size=lengths.numel(), reduce="sum")
    den = scatter(w, batch, dim=0, dim_size=lengths.numel(), reduce="sum")
    return num / den[:, None]
