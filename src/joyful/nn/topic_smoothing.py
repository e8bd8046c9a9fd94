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

    The causal model's counterpart of :func:`topic_vectors` (which sees the whole dialogue).
    Each prefix is weighted relative to its own last utterance, exp(−η·(i − j)), as one
    (M, M) lower-triangular matrix applied to the padded batch: a shared reference point
    (the dialogue's last utterance) would underflow float32 for the early prefixes of a
    long dialogue (all weights 0 beyond ~440 utterances at η = 0.2). The cost is that of
    the global transformer's attention, which is (M, M) per dialogue too.

    Shapes: ``z (N, d)``, ``batch``/``position (N,)``, ``lengths (B,)`` → ``(N, d)``.
    """
    dense, mask = to_dense_batch(z, batch)  # (B, M, d); padding rows are zero and only reach padded outputs
    steps = torch.arange(dense.shape[1], device=z.device)
    lag = (steps[:, None] - steps[None, :]).to(z.dtype)  # i − j
    weight = torch.where(lag >= 0, torch.exp(-eta * lag.clamp(min=0)), torch.zeros_like(lag))  # (M, M)
    running = (weight @ dense) / weight.sum(1)[None, :, None]
    return running[mask]
