"""Katz index: high-order path similarity between the nodes of each dialogue graph (paper C2, GP)."""

from __future__ import annotations

import torch
from torch import Tensor


def katz_index(adjacency: Tensor, order: int, beta_scale: float) -> Tensor:
    """Katz scores ``Σ_{k=1..order} β^k A^k`` for a batch of dense adjacency matrices.

    β is set per graph to ``beta_scale / max degree``; the largest degree bounds the spectral
    radius, so β·λ_max ≤ beta_scale < 1 and longer paths always weigh less than shorter
    ones, whatever the window size. The series is truncated at ``order`` path steps.

    Shapes: ``adjacency (B, M, M)`` → ``(B, M, M)``.
    """
    degree = adjacency.sum(-1).amax(-1).clamp(min=1.0)  # (B,)
    beta = (beta_scale / degree)[:, None, None]
    step = beta * adjacency
    power = step
    total = step.clone()
    for _ in range(order - 1):
        power = power @ step
        total = total + power
    return total


def normalise_candidates(scores: Tensor, candidate: Tensor) -> Tensor:
    """Min–max scale each graph's candidate scores to [0, 1], so a fixed threshold is meaningful.

    Raw Katz scores depend on β, the window and the dialogue length; after scaling, 1 is
    the most proximate non-adjacent pair of the dialogue and 0 the least, which is what
    the paper's threshold of 0.5 needs. Non-candidates get -1.

    Shapes: ``scores``, ``candidate (B, M, M)`` → ``(B, M, M)``.
    """
    big = torch.finfo(scores.dtype).max
    lo = torch.where(candidate, scores, big).flatten(1).amin(1)[:, None, None]
    hi = torch.where(candidate, scores, -big).flatten(1).amax(1)[:, None, None]
    span = (hi - lo).clamp(min=torch.finfo(scores.dtype).tiny)
    scaled = torch.where(hi > lo, (scores - lo) / span, torch.ones_like(scores))
    return torch.where(candidate, scaled, -torch.ones_like(scores))
