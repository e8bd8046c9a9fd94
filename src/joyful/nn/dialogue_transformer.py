"""A transformer encoder layer over the utterances of each dialogue, on packed node tensors.

Dialogues in a mini-batch have very different lengths (IEMOCAP: 8 to 110 utterances).
The linear parts (QKV, output and feed-forward projections, most of the cost) run on the
packed ``(N, d)`` node tensor, so padding costs nothing there; only the attention itself
runs on the padded ``(B, M, d)`` view built by :func:`torch_geometric.utils.to_dense_batch`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import to_dense_batch


def divisor_heads(width: int, wanted: int) -> int:
    """The largest head count ≤ ``wanted`` that divides ``width`` (odd widths occur: 100+512+768)."""
    return next(h for h in range(min(wanted, width), 0, -1) if width % h == 0)


class DialogueTransformerLayer(nn.Module):
    """Post-norm transformer encoder layer; attention stays within each dialogue.

    ``attention_dim`` is the width of queries, keys and values. Equal to ``width`` it is the
    standard layer; smaller, the layer keeps its input and output width (residual stream)
    while attention costs ``attention_dim/width`` as much, which matters at IEMOCAP's
    1380-wide concatenation (a full-width layer costs 11 M multiply-adds per utterance).

    ``causal`` lets each utterance attend only to itself and earlier ones (live use).

    Shapes: ``x (N, width)``, ``batch (N,)`` sorted dialogue index → ``(N, width)``.
    """

    def __init__(self, width: int, heads: int, attention_dim: int, ff: int, dropout: float, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.heads = divisor_heads(attention_dim, heads)
        self.attention_dim = attention_dim
        self.qkv = nn.Linear(width, 3 * attention_dim)
        self.out = nn.Linear(attention_dim, width)
        self.ff = nn.Sequential(nn.Linear(width, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, width))
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: Tensor, batch: Tensor) -> Tensor:
        a = self.attention_dim
        dense, mask = to_dense_batch(self.qkv(x), batch)  # (B, M, 3a), (B, M)
        b, m, _ = dense.shape
        q, k, v = dense.view(b, m, 3, self.heads, a // self.heads).permute(2, 0, 3, 1, 4)
        allowed = mask[:, None, None, :]  # (B, 1, 1, M): keys inside the dialogue
        if self.causal:  # and not after the query
            allowed = allowed & torch.ones(m, m, dtype=torch.bool, device=x.device).tril()
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.attn_dropout if self.training else 0.0
        )
        attended = attended.transpose(1, 2).reshape(b, m, a)[mask]  # back to (N, d)
        x = self.norm1(x + self.dropout(self.out(attended)))
        return self.norm2(x + self.dropout(self.ff(x)))


class DialogueTransformer(nn.Module):
    """A stack of :class:`DialogueTransformerLayer`: the paper's "multi-layer transformer"."""

    def __init__(
        self, width: int, layers: int, heads: int, attention_dim: int, ff: int, dropout: float, causal: bool = False
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DialogueTransformerLayer(width, heads, attention_dim, ff, dropout, causal) for _ in range(layers)
        )

    def forward(self, x: Tensor, batch: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, batch)
        return x


__all__ = ["DialogueTransformer", "DialogueTransformerLayer", "divisor_heads"]
