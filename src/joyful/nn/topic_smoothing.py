"""Topic smoothing (paper B1): a dialogue-level topic vector with recent utterances weighing more."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import scatter, to_dense_batch


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


def running_topic_vectors(z: Tensor, batch: Tensor, position: Tensor, lengths: Tensor, eta: float) -> Tensor:
    """For each utterance i, the topic vector of its dialogue so far: Σ_{j≤i} exp(η·j)·ẑ_j / Σ_{j≤i} exp(η·j).

    The causal model's counterpart of :func:`topic_vectors` (which sees the whole dialogue):
    prefix sums along each dialogue of the padded batch give every prefix at once. Weights
    are taken relative to the dialogue's last utterance as there.

    Shapes: ``z (N, d)``, ``batch``/``position (N,)``, ``lengths (B,)`` → ``(N, d)``.
    """
    w = torch.exp(eta * (position - (lengths[batch] - 1)).to(z.dtype))
    num, mask = to_dense_batch(w[:, None] * z, batch)  # (B, M, d)
    den, _ = to_dense_batch(w[:, None], batch)  # (B, M, 1)
    return (num.cumsum(1) / den.cumsum(1).clamp_min(torch.finfo(z.dtype).tiny))[mask]
