"""The relational graph encoder of paper C3: L × (RGCNConv → TransformerConv → BatchNorm → LeakyReLU)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import RGCNConv, TransformerConv


class GraphEncoder(nn.Module):
    """Encodes one view of the dialogue graph.

    A linear map first brings the nodes to ``hidden`` (the public code does the same, 1024
    → 100); it is shared by all relation types, so the first RGCN's weights are factored
    ``W_r = P·V_r``. Without it, RGCNConv would aggregate 2760-wide vectors once per
    relation type, the dominant cost of a training step. RGCNConv then mixes neighbours
    with relation-specific weights (who spoke to whom, past or future); TransformerConv
    re-weights neighbours by attention, as in the public code.

    Shapes: ``h (N, in_dim)``, ``edge_index (2, E)``, ``edge_type (E,)`` → ``(N, hidden·heads)``.
    """

    def __init__(
        self, in_dim: int, hidden: int, heads: int, layers: int, n_relations: int, bases: int | None, dropout: float
    ) -> None:
        super().__init__()
        self.out_dim = hidden * heads
        self.project = nn.Linear(in_dim, hidden)
        dims = [hidden] + [self.out_dim] * (layers - 1)
        self.rgcn = nn.ModuleList(
            RGCNConv(d, hidden, n_relations, num_bases=bases if bases and bases < n_relations else None) for d in dims
        )
        self.attention = nn.ModuleList(TransformerConv(hidden, hidden, heads=heads, concat=True) for _ in dims)
        self.norms = nn.ModuleList(nn.BatchNorm1d(self.out_dim) for _ in dims)
        self.dropout = dropout

    def forward(self, h: Tensor, edge_index: Tensor, edge_type: Tensor) -> Tensor:
        h = self.project(h)
        for rgcn, attention, norm in zip(self.rgcn, self.attention, self.norms, strict=True):
            h = attention(rgcn(h, edge_index, edge_type), edge_index)
            if not (self.training and h.shape[0] == 1):  # batch statistics need two nodes (MELD has 1-utterance dialogues)
                h = norm(h)
            h = F.leaky_relu(h)
            h = F.dropout(h, self.dropout, self.training)
        return h
