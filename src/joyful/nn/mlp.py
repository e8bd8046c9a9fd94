"""The small feed-forward block used for every per-modality map and the classifier."""

from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Sequential):
    """``Linear → ReLU → Dropout → Linear``: two layers, so a map can be non-linear yet cheap.

    Shapes: ``(N, in_dim) → (N, out_dim)``.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - typed for readers
        return super().forward(x)
