"""The two InfoNCE losses of paper C3, over all nodes of a mini-batch.

Similarity is cosine divided by the temperature τ. Negatives are every other node of the
mini-batch (all its dialogues), as GRACE/PyGCL do on a batched graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def inter_view_loss(h1: Tensor, h2: Tensor, temperature: float) -> Tensor:
    """Per node: ``−log[exp(s(h1_i,h2_i)/τ) / Σ_j exp(s(h1_i,h2_j)/τ)]``. Shapes: ``(N, d)`` ×2 → ``(N,)``."""
    logits = F.normalize(h1, dim=-1) @ F.normalize(h2, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(h1.shape[0], device=h1.device), reduction="none")


def intra_view_loss(h1: Tensor, h2: Tensor, temperature: float) -> Tensor:
    """Per node: ``−log[exp(s(h1_i,h2_i)/τ) / (exp(s(h1_i,h2_i)/τ) + Σ_{j≠i} exp(s(h1_i,h1_j)/τ))]``.

    The negatives are the other nodes of the same view; the positive pair stands in the
    denominator in place of the trivial self-similarity, so the loss is a proper InfoNCE
    (non-negative, minimal when the positive dominates). Shapes: ``(N, d)`` ×2 → ``(N,)``.
    """
    z1, z2 = F.normalize(h1, dim=-1), F.normalize(h2, dim=-1)
    positive = (z1 * z2).sum(-1) / temperature
    logits = z1 @ z1.T / temperature
    self_pair = torch.eye(h1.shape[0], dtype=torch.bool, device=h1.device)
    logits = torch.where(self_pair, positive[:, None], logits)
    return torch.logsumexp(logits, dim=-1) - positive


def contrastive_loss(h1: Tensor, h2: Tensor, temperature: float) -> Tensor:
    """``L_ct = (1/2m) Σ_i (L_inter(i) + L_intra(i))`` over the m nodes of the mini-batch."""
    return (inter_view_loss(h1, h2, temperature) + intra_view_loss(h1, h2, temperature)).mean() / 2
